// tests/fakes/fake_telegram.h: a fake Telegram Bot API answering sendMessage as shared/reference/telegram.md
// describes: the token in the path, {"ok":true,"result":Message}, Telegram-shaped errors (429 with retry_after and
// a Retry-After header, 400 / 401 / 403), HTML parse-mode checks strict enough to catch unescaped text, and a
// group-to-supergroup migration. It records every delivered message. Thread-safe.
#pragma once

#include <string>
#include <vector>

#include "tests/fakes/fake_server.h"

namespace orch::testing {

struct TelegramMessage {
  std::string chat_id;  // as text, whether it was sent as a number or a string
  std::string text;
  std::string parse_mode;
  std::string shown;  // what the chat shows: for HTML, the text with its tags dropped and its entities decoded
  bool link_preview_disabled = false;
  std::int64_t message_id = 0;
};

class FakeTelegram final : public FakeServer {
 public:
  explicit FakeTelegram(std::string token = "123456789:AAH-fake-telegram-token-0123456789",
                        std::string chat_id = "-1001987654321");
  ~FakeTelegram() override;

  const std::string& token() const { return token_; }
  const std::string& chat_id() const { return chat_id_; }
  std::vector<TelegramMessage> messages() const;  // delivered ones only

  void rate_limit_next(int times, int retry_after_seconds);
  // The next answers fail with Telegram's error envelope, e.g. (400, "Bad Request: chat not found").
  void fail_next_with(int times, int status, const std::string& description);
  // Messages to `from` are refused with 400 + parameters.migrate_to_chat_id = to; `to` becomes a valid chat.
  void migrate_chat(const std::string& from, const std::string& to);

 private:
  void install_routes();
  std::string default_error_body(int status) const override;

  const std::string token_;
  const std::string chat_id_;
  mutable std::mutex mu_;
  std::vector<TelegramMessage> messages_;                      // guarded by mu_
  std::vector<std::string> chats_;                             // valid chat ids; guarded by mu_
  std::vector<std::pair<std::string, std::string>> migrated_;  // from -> to; guarded by mu_
};

}  // namespace orch::testing
