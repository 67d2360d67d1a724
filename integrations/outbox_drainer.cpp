// DESIGN: the outbox is the only memory of a message, so every outcome is written back to its row before the next
// is tried: sent, due again at a later time, or failed. A transient failure (network, 5xx, 429) ends the batch,
// since the next message would meet the same outage; the others stay due and the next drain probes again with
// one message. Telegram's 429 carries retry_after: the drainer holds every send until it has passed.
#include "integrations/outbox_drainer.h"

#include <algorithm>

namespace orch {

OutboxDrainer::OutboxDrainer(OutboxStore& store, NotificationSender& sender, const Clock& clock, spdlog::logger& log,
                             OutboxOptions options)
    : store_(store), sender_(sender), clock_(clock), log_(log), options_(options) {}

Seconds OutboxDrainer::backoff(int attempts) const {
  Seconds wait = options_.backoff_base;
  for (int i = 1; i < attempts && wait < options_.backoff_cap; ++i) wait *= 2;
  return std::min(wait, options_.backoff_cap);
}

Result<std::optional<NotificationRow>> OutboxDrainer::claim(TimePoint now) {
  if (options_.channel != kChannelTelegram)
    return store_.claim_next_message(options_.channel, now, options_.claim_lease);
  auto due = store_.claim_due_notifications(now, options_.claim_lease, 1);
  if (!due.ok()) return due.status();
  if (due.value().empty()) return std::optional<NotificationRow>();
  return std::optional<NotificationRow>(due.value().front());
}

int OutboxDrainer::drain_once() {
  int sent = 0;
  // One row per claim, so that a drain that stops early (an outage, a 429) leaves nothing claimed behind it: with
  // several replicas (or a CLI) draining one outbox, each row goes to exactly one drainer at a time.
  for (int n = 0; n < options_.batch; ++n) {
    const TimePoint now = clock_.now();
    if (now < paused_until_) return sent;
    auto due = claim(now);
    if (!due.ok()) {
      log_.warn("outbox: cannot claim due {} messages: {}", options_.channel, due.status().message);
      return sent;
    }
    if (!due.value()) return sent;
    const NotificationRow& n_row = *due.value();
    SendResult r;
    try {
      r = sender_.send_row(n_row);
    } catch (const std::exception& e) {
      r = {internal(std::string("sender threw: ") + e.what()), std::nullopt};
    }
    const int attempts = n_row.attempts + 1;
    Status written;
    if (r.status.ok()) {
      written = store_.mark_notification_sent(n_row.id, clock_.now());
      if (written.ok()) ++sent;
    } else if (r.status.code != Code::kUnavailable || attempts >= options_.max_attempts) {
      log_.error("outbox: {} message {} failed after {} attempt(s): {}", options_.channel, n_row.id, attempts,
                 r.status.message);
      written = store_.mark_notification_failed(n_row.id, r.status.message);
    } else {
      Seconds wait = r.retry_after ? std::max(*r.retry_after, Seconds(1)) : backoff(attempts);
      TimePoint next = clock_.now() + wait;
      if (r.retry_after) paused_until_ = next;
      log_.warn("outbox: {} message {} not sent (attempt {}): {}; next attempt in {} s", options_.channel, n_row.id,
                attempts, r.status.message, wait.count());
      written = store_.mark_notification_retry(n_row.id, r.status.message, next);
    }
    if (!written.ok()) {
      // The row stays claimed until its lease lapses, so a message that did go out will go out again then:
      // unavoidable without a two-phase send, and rare (the store failed between two statements).
      log_.warn("outbox: cannot record the outcome of {} message {}: {}", options_.channel, n_row.id, written.message);
      return sent;
    }
    if (!r.status.ok() && r.status.code == Code::kUnavailable) return sent;
  }
  return sent;
}

}  // namespace orch
