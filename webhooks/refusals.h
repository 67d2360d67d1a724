// webhooks/refusals.h: why the webhook routes refused a delivery, and how often since this process started. A
// refused delivery writes nothing to the store (that is the point of refusing), so this in-memory tally is the only
// trace besides the log line: /metrics exposes it as orch_webhook_refused_total{source,reason} and /queue shows it,
// with the last message of each kind, so that "Plane's deliveries are all 413" is seen before anyone asks why a
// task never started. Thread-safe: add() runs on any server thread.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/model.h"

namespace orch {

// A bounded label set (metric labels): every refusal of the routes maps to one of these.
enum class Refusal {
  kNotConfigured,         // 503: the source's secret is not set and unsigned deliveries are not allowed
  kTooLarge,              // 413: past [server] max_body_bytes
  kUnsupportedMediaType,  // 415: neither JSON nor (Gitea) the form content type
  kMissingSignature,      // 401: no signature header
  kBadSignature,          // 401: a signature that does not verify
  kMalformed,             // 400: not JSON, or a form body without a decodable payload
  kMissingHeader,         // 400: no (or an oversized) delivery id or event header
  kUnreadable,            // 400: the body could not be read to its end
  kStoreUnavailable,      // 503: the inbox could not store it (not acknowledged; the sender may retry)
};
inline constexpr std::size_t kRefusalKinds = 9;
const char* refusal_name(Refusal r);  // "not_configured", "too_large", ... (the metric's `reason` label)

class RefusalCounts {
 public:
  struct Row {
    Source source;
    Refusal reason;
    std::uint64_t count = 0;
    TimePoint last_at{};
    std::string last_error;  // the answer's error text (no secret, no body byte)
  };

  void add(Source source, Refusal reason, TimePoint at, const std::string& error);
  // The kinds seen at least once, plane first, in enum order.
  std::vector<Row> rows() const;

 private:
  mutable std::mutex mu_;
  std::array<std::array<Row, kRefusalKinds>, 2> rows_{};  // [source][reason], guarded by mu_
};

}  // namespace orch
