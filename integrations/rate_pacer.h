// integrations/rate_pacer.h: paces an API client by the allowance its server announces, so a burst (a reconciler
// pass over a large Plane project) waits for the rate-limit window instead of spending its retries on 429s.
// Plane's allowed answers carry X-RateLimit-Remaining (requests left in the window, this one counted) and
// X-RateLimit-Reset (unix seconds; Plane sends now + 60 s); its 429s carry only Retry-After (plane.md §3).
// Pure bookkeeping: it never sleeps or reads a clock itself. HttpClient asks before_request() before each attempt,
// sleeps what it is told through its Sleeper, and reports every answer to observe(). One pacer per API key: the
// server counts per key. Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "engine/clock.h"

namespace orch {

struct HttpResponse;

// The allowance the Plane read client (the reconciler's polling, job lookups) leaves to the write client (comments,
// state moves) sharing its pacer: reads pause once 10 requests are left in the window, writes may spend all 60.
// Why 10: a write answers a person or moves the pipeline, and a read that waits a window only delays a poll that
// will run again anyway. One job step writes a comment and a state move (2 requests, 3 with a retry after a lost
// answer), so 10 lets three or four steps finishing in the same minute go at once, while a long reconciler pass
// keeps five sixths of Plane's 60 a minute.
inline constexpr int kPlaneReadReserve = 10;

struct RatePacerOptions {
  std::string remaining_header = "X-RateLimit-Remaining";
  std::string reset_header = "X-RateLimit-Reset";  // unix epoch seconds
  // Pause once the allowance left is at or below this. 0: use the whole allowance, as the only client of a key.
  int reserve = 0;
  // Added to Reset: Plane truncates it to whole seconds, so the window may end up to a second after it.
  Millis margin{1000};
  // No pause is longer than this, whatever Reset says: a clock skew between orch and the server must not stall
  // orch for hours. Plane's window is 60 s, so 60 s + the margin.
  Millis max_pause{61000};
};

class RatePacer {
 public:
  explicit RatePacer(RatePacerOptions options = {});

  // Before each attempt. 0: the request may go now, and it is counted against the allowance. Otherwise: wait that
  // long first, then ask again (another thread may have learnt something meanwhile).
  Millis before_request(TimePoint now) { return before_request(now, 0); }
  // The same for a caller that keeps `reserve` requests for others: it pauses once the allowance left is at or
  // below the larger of `reserve` and RatePacerOptions::reserve. Two clients of one key with different reserves
  // give two priorities: the one with the smaller reserve still goes while the other waits for the window.
  Millis before_request(TimePoint now, int reserve);
  // After each answer. The rate headers of an allowed answer replace the allowance (the server's count is the truth;
  // our own count only covers requests since). A 429 with Retry-After closes the window for every caller until then.
  void observe(const HttpResponse& response, TimePoint now);

  std::int64_t pauses() const;                    // before_request calls that answered "wait": for tests and logs
  std::optional<std::int64_t> remaining() const;  // the allowance as last known; nullopt: unknown (no limit seen)

 private:
  const RatePacerOptions options_;
  mutable std::mutex mu_;
  std::optional<std::int64_t> remaining_;  // guarded by mu_
  TimePoint window_clear_at_{};            // guarded by mu_; meaningful once remaining_ is known
  std::int64_t pauses_ = 0;                // guarded by mu_
};

}  // namespace orch
