// DESIGN: the outbox is the only memory of a message, so every outcome is written back to its row before the next
// is tried: sent, due again at a later time, or failed. A transient failure (network, 5xx, 429) ends the batch,
// since the next message would meet the same outage; the others stay due and the next drain probes again with
// one message. Telegram's 429 carries retry_after: the drainer holds every send until it has passed.
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
    std::string description =
        j.is_object() && j.contains("description") && j["description"].is_string() ? j["description"].get<std::string>()
                                                                                   : "";
    const json* params = j.is_object() && j.contains("parameters") && j["parameters"].is_object() ? &j["parameters"]
                                                                                                  : nullptr;
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

OutboxDrainer::OutboxDrainer(OutboxStore& store, NotificationSender& sender, const Clock& clock,
                             spdlog::logger& log, OutboxOptions options)
    : store_(store), sender_(sender), clock_(clock), log_(log), options_(options) {}

Seconds OutboxDrainer::backoff(int attempts) const {
  Seconds wait = options_.backoff_base;
  for (int i = 1; i < attempts && wait < options_.backoff_cap; ++i) wait *= 2;
  return std::min(wait, options_.backoff_cap);
}

int OutboxDrainer::drain_once() {
  int sent = 0;
  // One row per claim, so that a drain that stops early (an outage, a 429) leaves nothing claimed behind it: with
  // several replicas (or a CLI) draining one outbox, each row goes to exactly one drainer at a time.
  for (int n = 0; n < options_.batch; ++n) {
    const TimePoint now = clock_.now();
    if (now < paused_until_) return sent;
    auto due = store_.claim_due_notifications(now, options_.claim_lease, 1);
    if (!due.ok()) {
      log_.warn("outbox: cannot claim due notifications: {}", due.status().message);
      return sent;
    }
    if (due.value().empty()) return sent;
    const NotificationRow& n_row = due.value().front();
    SendResult r;
    try {
      r = sender_.send(n_row.text);
    } catch (const std::exception& e) {
      r = {internal(std::string("sender threw: ") + e.what()), std::nullopt};
    }
    const int attempts = n_row.attempts + 1;
    Status written;
    if (r.status.ok()) {
      written = store_.mark_notification_sent(n_row.id, clock_.now());
      if (written.ok()) ++sent;
    } else if (r.status.code != Code::kUnavailable || attempts >= options_.max_attempts) {
      log_.error("outbox: notification {} failed after {} attempt(s): {}", n_row.id, attempts, r.status.message);
      written = store_.mark_notification_failed(n_row.id, r.status.message);
    } else {
      Seconds wait = r.retry_after ? std::max(*r.retry_after, Seconds(1)) : backoff(attempts);
      TimePoint next = clock_.now() + wait;
      if (r.retry_after) paused_until_ = next;
      log_.warn("outbox: notification {} not sent (attempt {}): {}; next attempt in {} s", n_row.id, attempts,
                r.status.message, wait.count());
      written = store_.mark_notification_retry(n_row.id, r.status.message, next);
    }
    if (!written.ok()) {
      // The row stays claimed until its lease lapses, so a message that did go out will go out again then:
      // unavoidable without a two-phase send, and rare (the store failed between two statements).
      log_.warn("outbox: cannot record the outcome of notification {}: {}", n_row.id, written.message);
      return sent;
    }
    if (!r.status.ok() && r.status.code == Code::kUnavailable) return sent;
  }
  return sent;
}

}  // namespace orch
