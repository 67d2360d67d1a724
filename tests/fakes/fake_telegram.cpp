#include "tests/fakes/fake_telegram.h"

#include <algorithm>
#include <set>

namespace orch::testing {

namespace {

using ojson = nlohmann::ordered_json;

std::string error_body(int code, const std::string& description, const ojson& parameters = nullptr) {
  ojson j;
  j["ok"] = false;
  j["error_code"] = code;
  j["description"] = description;
  if (!parameters.is_null()) j["parameters"] = parameters;
  return j.dump();
}

void fail(httplib::Response& res, int code, const std::string& description, const ojson& parameters = nullptr) {
  res.status = code;
  res.set_content(error_body(code, description, parameters), "application/json");
}

// Telegram's HTML mode: only its tags, and every other <, > and & escaped. An empty string means it parses.
std::string html_error(const std::string& text) {
  static const std::set<std::string> kTags = {"b",        "strong", "i",   "em",        "u",          "ins",
                                              "s",        "strike", "del", "span",      "tg-spoiler", "a",
                                              "tg-emoji", "code",   "pre", "blockquote"};
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '<') {
      size_t j = i + 1;
      if (j < text.size() && text[j] == '/') ++j;
      size_t name_start = j;
      while (j < text.size() && (std::isalnum(static_cast<unsigned char>(text[j])) || text[j] == '-')) ++j;
      std::string name = text.substr(name_start, j - name_start);
      size_t close = text.find('>', j);
      if (name.empty() || !kTags.count(name) || close == std::string::npos)
        return "Unsupported start tag \"" + name + "\" at byte offset " + std::to_string(i);
      i = close;
    } else if (c == '>') {
      return "Unexpected end tag at byte offset " + std::to_string(i);
    } else if (c == '&') {
      size_t semi = text.find(';', i);
      std::string entity = semi == std::string::npos ? "" : text.substr(i + 1, semi - i - 1);
      bool numeric = entity.size() > 1 && entity[0] == '#';
      if (!(entity == "lt" || entity == "gt" || entity == "amp" || entity == "quot" || numeric))
        return "Character entity expected at byte offset " + std::to_string(i);
      i = semi;
    }
  }
  return {};
}

// The text Telegram shows for a message that html_error() accepted: tags dropped, entities decoded. Its length,
// not the raw text's, is what the 4096 limit counts ("1-4096 characters after entities parsing").
std::string html_shown(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '<') {
      i = text.find('>', i);
    } else if (c == '&') {
      size_t semi = text.find(';', i);
      std::string entity = text.substr(i + 1, semi - i - 1);
      if (entity == "lt")
        out += '<';
      else if (entity == "gt")
        out += '>';
      else if (entity == "amp")
        out += '&';
      else if (entity == "quot")
        out += '"';
      else
        out += '?';  // a numeric entity: one character, enough for the count
      i = semi;
    } else {
      out += c;
    }
  }
  return out;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

size_t utf16_length(const std::string& s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) == 0x80) continue;
    n += (c >= 0xF0) ? 2 : 1;
  }
  return n;
}

}  // namespace

FakeTelegram::FakeTelegram(std::string token, std::string chat_id)
    : FakeServer("fake telegram"), token_(std::move(token)), chat_id_(std::move(chat_id)) {
  chats_.push_back(chat_id_);
  install_routes();
  start();
}

FakeTelegram::~FakeTelegram() { stop(); }

std::string FakeTelegram::default_error_body(int status) const {
  if (status >= 500) return error_body(status, "Internal Server Error");
  return error_body(status, "Bad Request: fault injected");
}

std::vector<TelegramMessage> FakeTelegram::messages() const {
  std::lock_guard lock(mu_);
  return messages_;
}

void FakeTelegram::rate_limit_next(int times, int retry_after_seconds) {
  Fault f;
  f.status = 429;
  f.headers = {{"Retry-After", std::to_string(retry_after_seconds)}};
  f.body = error_body(429, "Too Many Requests: retry after " + std::to_string(retry_after_seconds),
                      ojson{{"retry_after", retry_after_seconds}});
  inject(std::move(f), times);
}

void FakeTelegram::fail_next_with(int times, int status, const std::string& description) {
  Fault f;
  f.status = status;
  f.body = error_body(status, description);
  inject(std::move(f), times);
}

void FakeTelegram::migrate_chat(const std::string& from, const std::string& to) {
  std::lock_guard lock(mu_);
  migrated_.emplace_back(from, to);
  chats_.push_back(to);
}

void FakeTelegram::install_routes() {
  route("POST", R"(/bot([^/]+)/(\w+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != token_) return fail(res, 401, "Unauthorized");
    std::string method = req.matches[2];
    std::transform(method.begin(), method.end(), method.begin(), [](unsigned char c) { return std::tolower(c); });
    if (method != "sendmessage") return fail(res, 404, "Not Found: method not found");
    auto body = nlohmann::json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return fail(res, 400, "Bad Request: message text is empty");
    std::string chat;
    if (body.contains("chat_id") && body["chat_id"].is_number_integer())
      chat = std::to_string(body["chat_id"].get<std::int64_t>());
    else if (body.contains("chat_id") && body["chat_id"].is_string())
      chat = body["chat_id"].get<std::string>();
    std::string text = body.contains("text") && body["text"].is_string() ? body["text"].get<std::string>() : "";
    std::string parse_mode = body.value("parse_mode", "");
    std::lock_guard lock(mu_);
    for (const auto& [from, to] : migrated_)
      if (chat == from)
        return fail(res, 400, "Bad Request: group chat was upgraded to a supergroup chat",
                    ojson{{"migrate_to_chat_id", std::stoll(to)}});
    if (std::find(chats_.begin(), chats_.end(), chat) == chats_.end())
      return fail(res, 400, "Bad Request: chat not found");
    if (text.empty()) return fail(res, 400, "Bad Request: message text is empty");
    if (text.size() > 32768) return fail(res, 400, "Bad Request: text is too long");
    if (!valid_utf8(text)) return fail(res, 400, "Bad Request: strings must be encoded in UTF-8");
    if (parse_mode == "HTML")
      if (std::string err = html_error(text); !err.empty())
        return fail(res, 400, "Bad Request: can't parse entities: " + err);
    const std::string shown = parse_mode == "HTML" ? html_shown(text) : text;
    if (utf16_length(shown) > 4096) return fail(res, 400, "Bad Request: message is too long");
    TelegramMessage m;
    m.chat_id = chat;
    m.text = text;
    m.parse_mode = parse_mode;
    m.shown = shown;
    m.link_preview_disabled = body.contains("link_preview_options") && body["link_preview_options"].is_object() &&
                              body["link_preview_options"].value("is_disabled", false);
    m.message_id = static_cast<std::int64_t>(messages_.size()) + 800;
    messages_.push_back(m);
    ojson result;
    result["message_id"] = m.message_id;
    result["from"] = ojson{{"id", 7012345678LL}, {"is_bot", true}, {"first_name", "orch"}, {"username", "orch_bot"}};
    bool numeric = !chat.empty() && chat.find_first_not_of("-0123456789") == std::string::npos;
    result["chat"] =
        ojson{{"id", numeric ? ojson(std::stoll(chat)) : ojson(chat)}, {"title", "orch"}, {"type", "supergroup"}};
    result["date"] = 1795424400;
    result["text"] = text;
    ojson ok;
    ok["ok"] = true;
    ok["result"] = std::move(result);
    res.status = 200;
    res.set_content(ok.dump(), "application/json");
  });
}

}  // namespace orch::testing
