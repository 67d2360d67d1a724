#include "integrations/telegram_notifier.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

namespace orch {

namespace {

using nlohmann::json;

bool is_integer(std::string_view s) {
  if (!s.empty() && s[0] == '-') s.remove_prefix(1);
  return !s.empty() && s.size() <= 18 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

json chat_id_value(const std::string& chat_id) {
  if (is_integer(chat_id)) return std::stoll(chat_id);
  return chat_id;  // "@channelusername"
}

}  // namespace

std::string telegram_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {

// The length of one UTF-8 sequence from its lead byte, and how many UTF-16 units its code point takes. A stray
// continuation byte counts as a one-byte sequence (Telegram would refuse invalid UTF-8 anyway).
size_t utf8_sequence_length(unsigned char lead) {
  if (lead >= 0xF0 && lead < 0xF8) return 4;
  if (lead >= 0xE0 && lead < 0xF0) return 3;
  if (lead >= 0xC0 && lead < 0xE0) return 2;
  return 1;
}

}  // namespace

std::string telegram_fit(std::string_view text, size_t max_units) {
  static constexpr std::string_view kEllipsis = "\u2026";  // one UTF-16 unit
  size_t units = 0;
  size_t cut = std::string_view::npos;  // the byte offset where the text with the ellipsis still fits
  for (size_t i = 0; i < text.size();) {
    size_t len = std::min(utf8_sequence_length(static_cast<unsigned char>(text[i])), text.size() - i);
    size_t width = len == 4 ? 2 : 1;  // beyond the BMP: a surrogate pair
    if (cut == std::string_view::npos && units + width + 1 > max_units) cut = i;
    units += width;
    if (units > max_units) return std::string(text.substr(0, cut)) + std::string(kEllipsis);
    i += len;
  }
  return std::string(text);
}

TelegramSender::TelegramSender(HttpClient& http, Secret bot_token, std::string chat_id)
    : http_(http), token_(std::move(bot_token)), chat_id_(std::move(chat_id)) {}

SendResult TelegramSender::send(const std::string& text) {
  // At most one extra round: a group upgraded to a supergroup answers 400 with the new chat id.
  for (int round = 0; round < 2; ++round) {
    std::string chat;
    {
      std::lock_guard lock(mu_);
      chat = chat_id_;
    }
    json body = {{"chat_id", chat_id_value(chat)},
                 {"text", telegram_escape(telegram_fit(text))},
                 {"parse_mode", "HTML"},
                 {"link_preview_options", {{"is_disabled", true}}}};
    HttpRequest req = HttpRequest::json("POST", "/bot" + token_.reveal() + "/sendMessage", body);
    req.log_target = "/bot<redacted>/sendMessage";
    req.any_status = true;
    req.idempotent = false;  // a timed-out send may have been delivered: the outbox decides
    auto r = http_.send(req);
    if (!r.ok()) return {unavailable(r.status().message), std::nullopt};
    const HttpResponse& resp = r.value();
    if (resp.status >= 200 && resp.status < 300) return {};
    json j = json::parse(resp.body, nullptr, false);
    std::string description = j.is_object() && j.contains("description") && j["description"].is_string()
                                  ? j["description"].get<std::string>()
                                  : "";
    const json* params =
        j.is_object() && j.contains("parameters") && j["parameters"].is_object() ? &j["parameters"] : nullptr;
    std::string what = "telegram: sendMessage answered " + std::to_string(resp.status) +
                       (description.empty() ? "" : ": " + http_.redact(description));
    if (resp.status == 429) {
      std::optional<Seconds> wait;
      if (params && params->contains("retry_after") && (*params)["retry_after"].is_number_integer())
        wait = Seconds((*params)["retry_after"].get<long long>());
      else if (auto h = resp.header("Retry-After"); h && is_integer(*h))
        wait = Seconds(std::stoll(*h));
      return {unavailable(what), wait};
    }
    if (resp.status == 400 && params && params->contains("migrate_to_chat_id") &&
        (*params)["migrate_to_chat_id"].is_number_integer() && round == 0) {
      std::lock_guard lock(mu_);
      chat_id_ = std::to_string((*params)["migrate_to_chat_id"].get<long long>());
      continue;
    }
    if (resp.status == 400 || resp.status == 401 || resp.status == 403 || resp.status == 404)
      return {invalid(what), std::nullopt};
    return {unavailable(what), std::nullopt};
  }
  return {invalid("telegram: chat migrated twice in one send"), std::nullopt};
}

SendResult LogOnlySender::send(const std::string& text) {
  log_.info("notification (telegram not configured): {}", text);
  return {};
}

}  // namespace orch
