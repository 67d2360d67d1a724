// integrations/telegram_notifier.h: sending notifications, and draining the outbox they wait in.
// OutboxDrainer::drain_once() claims the due rows of the outbox, sends each through a NotificationSender and
// marks it sent, due again later (backoff, or Telegram's retry_after), or failed (a permanent error, or too many
// attempts): an outage delays a message, it neither loses nor repeats it. No thread here: the app owns the one
// that calls drain_once() (integrations/outbox_thread.h). TelegramSender and LogOnlySender are thread-safe;
// OutboxDrainer is not (one drainer thread).
#pragma once

#include <mutex>
#include <optional>
#include <spdlog/logger.h>
#include <string>

#include "engine/clock.h"
#include "engine/secret.h"
#include "engine/status.h"
#include "engine/store.h"
#include "integrations/http_client.h"

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
};

// POST {api_base}/bot{token}/sendMessage, text as HTML with link previews off (shared/reference/telegram.md).
// The plain text is cut to Telegram's limit (telegram_fit) and escaped (telegram_escape) here, in this one place,
// so that a `<` in an agent's stderr can neither be refused with 400 nor be read as a tag.
// The HttpClient should be built with max_attempts = 1: the outbox, not this call, waits and retries.
class TelegramSender final : public NotificationSender {
 public:
  TelegramSender(HttpClient& http, Secret bot_token, std::string chat_id);
  SendResult send(const std::string& text) override;

 private:
  HttpClient& http_;
  const Secret token_;
  std::mutex mu_;
  std::string chat_id_;  // guarded by mu_; replaced when Telegram says the group became a supergroup
};

// Without a bot token: logs each message instead of sending it (the app says so at start-up).
class LogOnlySender final : public NotificationSender {
 public:
  explicit LogOnlySender(spdlog::logger& log) : log_(log) {}
  SendResult send(const std::string& text) override;

 private:
  spdlog::logger& log_;
};

struct OutboxOptions {
  int batch = 50;                                   // rows sent at most per drain_once()
  int max_attempts = 50;                            // then failed; with the cap below, about 8 hours of outage
  Seconds backoff_base{5};                          // attempt n waits min(cap, base * 2^(n-1))
  Seconds backoff_cap{std::chrono::minutes(10)};
  // A claimed row is ours for this long: if the drainer dies before recording the outcome, it comes due again then.
  Millis claim_lease{std::chrono::minutes(2)};
};

class OutboxDrainer {
 public:
  OutboxDrainer(OutboxStore& store, NotificationSender& sender, const Clock& clock, spdlog::logger& log,
                OutboxOptions options = {});
  // Sends the due notifications; returns how many were sent. Never throws; store errors are logged.
  int drain_once();

 private:
  Seconds backoff(int attempts) const;

  OutboxStore& store_;
  NotificationSender& sender_;
  const Clock& clock_;
  spdlog::logger& log_;
  const OutboxOptions options_;
  TimePoint paused_until_{};  // after a 429: no send before this
};

// Escapes plain text for Telegram's HTML parse mode: & first, then <, then >. TelegramSender calls it on every
// message; producers must not (the outbox holds plain text), or the entities would show up escaped twice.
std::string telegram_escape(std::string_view text);

// Telegram's limit on a message's text after entity parsing, in UTF-16 code units (shared/reference/telegram.md).
inline constexpr size_t kTelegramMaxTextUnits = 4096;

// Plain text cut to at most max_units UTF-16 code units, ending in "…" when cut; never inside a UTF-8 sequence
// (so a valid UTF-8 text stays valid). Cut before escaping, so no entity can be split.
std::string telegram_fit(std::string_view text, size_t max_units = kTelegramMaxTextUnits);

}  // namespace orch
