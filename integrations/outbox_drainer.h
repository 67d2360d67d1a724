// integrations/outbox_drainer.h: draining the outbox, one channel per drainer (docs/adr/0013).
// OutboxDrainer::drain_once() claims the due rows of its channel, sends each through a NotificationSender and marks
// it sent, due again later (backoff, or the server's retry_after), or failed (a permanent error, or too many
// attempts): an outage delays a message, it neither loses nor repeats it. No thread here: the app owns the one
// that calls drain_once(). OutboxDrainer is not thread-safe (one drainer thread per channel).
#pragma once

#include <optional>
#include <string>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/status.h"
#include "engine/store.h"

namespace orch {

// What one send attempt came to. status ok: delivered. kUnavailable: try again (after retry_after when the
// server said so). Anything else (kInvalid, kNotFound): permanent, do not retry.
struct SendResult {
  Status status;
  std::optional<Seconds> retry_after;
};

// `text` is plain text, as the outbox stores it: no producer escapes or formats; the sender owns the wire format.
struct NotificationSender {
  virtual ~NotificationSender() = default;
  virtual SendResult send(const std::string& text) = 0;
  // The drainer's call. A sender that needs more than the text (a write-back's dedup key) overrides it.
  virtual SendResult send_row(const NotificationRow& row) { return send(row.text); }
};

struct OutboxOptions {
  int batch = 50;           // rows sent at most per drain_once()
  int max_attempts = 50;    // then failed; with the cap below, about 8 hours of outage
  Seconds backoff_base{5};  // attempt n waits min(cap, base * 2^(n-1))
  Seconds backoff_cap{std::chrono::minutes(10)};
  // A claimed row is ours for this long: if the drainer dies before recording the outcome, it comes due again then.
  Millis claim_lease{std::chrono::minutes(2)};
  // Which rows this drainer sends (kChannel*). Telegram's are claimed in due order; the other channels' one lane
  // at a time in the order they were stored (OutboxStore::claim_next_message).
  std::string channel = std::string(kChannelTelegram);
};

class OutboxDrainer {
 public:
  OutboxDrainer(OutboxStore& store, NotificationSender& sender, const Clock& clock, spdlog::logger& log,
                OutboxOptions options = {});
  // Sends the due notifications; returns how many were sent. Never throws; store errors are logged.
  int drain_once();

 private:
  Seconds backoff(int attempts) const;
  Result<std::optional<NotificationRow>> claim(TimePoint now);

  OutboxStore& store_;
  NotificationSender& sender_;
  const Clock& clock_;
  spdlog::logger& log_;
  const OutboxOptions options_;
  TimePoint paused_until_{};  // after a 429: no send before this
};

}  // namespace orch
