// integrations/telegram_notifier.h: the Telegram channel's senders (the outbox drainer is
// integrations/outbox_drainer.h). TelegramSender and LogOnlySender are thread-safe.
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
#include "integrations/outbox_drainer.h"

namespace orch {

// POST {api_base}/bot{token}/sendMessage, text as HTML with link previews off (docs/wire-formats.md §3).
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

// Escapes plain text for Telegram's HTML parse mode: & first, then <, then >. TelegramSender calls it on every
// message; producers must not (the outbox holds plain text), or the entities would show up escaped twice.
std::string telegram_escape(std::string_view text);

// Telegram's limit on a message's text after entity parsing, in UTF-16 code units (docs/wire-formats.md §3).
inline constexpr size_t kTelegramMaxTextUnits = 4096;

// Plain text cut to at most max_units UTF-16 code units, ending in "…" when cut; never inside a UTF-8 sequence
// (so a valid UTF-8 text stays valid). Cut before escaping, so no entity can be split.
std::string telegram_fit(std::string_view text, size_t max_units = kTelegramMaxTextUnits);

}  // namespace orch
