#include "tests/fakes/fake_server.h"

#include <cctype>
#include <cstdio>
#include <random>
#include <stdexcept>

namespace orch::testing {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// Decodes one UTF-8 code point at s[i]; invalid bytes decode as U+FFFD, one byte each.
char32_t next_code_point(std::string_view s, size_t& i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || i + len > s.size()) {
    ++i;
    return 0xFFFD;
  }
  char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < len; ++k) {
    unsigned char cc = static_cast<unsigned char>(s[i + k]);
    if ((cc >> 6) != 2) {
      ++i;
      return 0xFFFD;
    }
    cp = (cp << 6) | (cc & 0x3F);
  }
  i += len;
  return cp;
}

std::string u_escape(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "\\u%04x", v);
  return buf;
}

std::string python_string(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    char32_t cp = next_code_point(s, i);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20 || (cp > 0x7E && cp < 0x10000)) {
          out += u_escape(static_cast<unsigned>(cp));
        } else if (cp >= 0x10000) {
          char32_t v = cp - 0x10000;
          out += u_escape(0xD800 + static_cast<unsigned>(v >> 10));
          out += u_escape(0xDC00 + static_cast<unsigned>(v & 0x3FF));
        } else {
          out += static_cast<char>(cp);
        }
    }
  }
  return out + "\"";
}

// Go's encoding/json string encoder with HTML escaping on (the default for Marshal / MarshalIndent).
std::string go_string(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    size_t start = i;
    char32_t cp = next_code_point(s, i);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '<':
      case '>':
      case '&': out += u_escape(static_cast<unsigned>(cp)); break;
      case 0x2028: out += "\\u2028"; break;
      case 0x2029: out += "\\u2029"; break;
      default:
        if (cp < 0x20)
          out += u_escape(static_cast<unsigned>(cp));
        else if (cp == 0xFFFD && !(i - start == 3 && s.substr(start, 3) == "\xEF\xBF\xBD"))
          out += "\\ufffd";
        else
          out.append(s.substr(start, i - start));
    }
  }
  return out + "\"";
}

void python_dump(const nlohmann::ordered_json& v, std::string& out) {
  switch (v.type()) {
    case nlohmann::ordered_json::value_t::object: {
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        out += python_string(it.key());
        out += ": ";
        python_dump(it.value(), out);
      }
      out += '}';
      break;
    }
    case nlohmann::ordered_json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v) {
        if (!first) out += ", ";
        first = false;
        python_dump(e, out);
      }
      out += ']';
      break;
    }
    case nlohmann::ordered_json::value_t::string: out += python_string(v.get_ref<const std::string&>()); break;
    case nlohmann::ordered_json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case nlohmann::ordered_json::value_t::null: out += "null"; break;
    default: out += v.dump(); break;  // numbers: 42, 75535.0
  }
}

void go_dump(const nlohmann::ordered_json& v, std::string& out, int depth) {
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<size_t>(d) * 2, ' ');
  };
  switch (v.type()) {
    case nlohmann::ordered_json::value_t::object: {
      if (v.empty()) {
        out += "{}";
        break;
      }
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ',';
        first = false;
        newline(depth + 1);
        out += go_string(it.key());
        out += ": ";
        go_dump(it.value(), out, depth + 1);
      }
      newline(depth);
      out += '}';
      break;
    }
    case nlohmann::ordered_json::value_t::array: {
      if (v.empty()) {
        out += "[]";
        break;
      }
      out += '[';
      bool first = true;
      for (const auto& e : v) {
        if (!first) out += ',';
        first = false;
        newline(depth + 1);
        go_dump(e, out, depth + 1);
      }
      newline(depth);
      out += ']';
      break;
    }
    case nlohmann::ordered_json::value_t::string: out += go_string(v.get_ref<const std::string&>()); break;
    case nlohmann::ordered_json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case nlohmann::ordered_json::value_t::null: out += "null"; break;
    default: out += v.dump(); break;
  }
}

}  // namespace

std::string RecordedRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

std::string RecordedRequest::param(const std::string& name) const {
  auto it = params.find(name);
  return it == params.end() ? std::string() : it->second;
}

FakeServer::FakeServer(std::string name) : name_(std::move(name)) {
  // A short keep-alive: a connection left idle by a client must not hold up stop() for long.
  server_.set_keep_alive_timeout(2);
  server_.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty() && res.status == 404)
      res.set_content(R"({"message":"no such route in the fake"})", "application/json");
  });
}

FakeServer::~FakeServer() { stop(); }

void FakeServer::start() {
  port_ = server_.bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error(name_ + ": cannot bind a loopback port");
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  // The socket already listens, but stop() is a no-op until the accept loop runs: wait for it.
  while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void FakeServer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    server_.stop();
    thread_.join();
  }
}

void FakeServer::interruptible_wait(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, d, [this] { return stopping_; });
}

std::string FakeServer::default_error_body(int status) const {
  return R"({"message":"fault injected","status":)" + std::to_string(status) + "}";
}

std::optional<Fault> FakeServer::take_fault(const std::string& path) {
  std::lock_guard lock(mu_);
  for (auto it = faults_.begin(); it != faults_.end(); ++it) {
    if (!it->first.path_contains.empty() && path.find(it->first.path_contains) == std::string::npos) continue;
    Fault f = it->first;
    if (--it->second <= 0) faults_.erase(it);
    return f;
  }
  return std::nullopt;
}

void FakeServer::route(const std::string& method, const std::string& pattern, Handler handler) {
  auto wrapped = [this, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    RecordedRequest r;
    r.method = req.method;
    r.path = req.path;
    auto q = req.target.find('?');
    if (q != std::string::npos) r.query = req.target.substr(q + 1);
    for (const auto& [k, v] : req.headers) r.headers.emplace_back(k, v);
    for (const auto& [k, v] : req.params) r.params.emplace(k, v);
    r.body = req.body;
    r.remote_port = req.remote_port;
    {
      std::lock_guard lock(mu_);
      log_.push_back(std::move(r));
      if (log_limit_ > 0 && log_.size() > log_limit_)
        log_.erase(log_.begin(), log_.begin() + static_cast<std::ptrdiff_t>(log_.size() - log_limit_));
    }
    if (auto fault = take_fault(req.path)) {
      if (fault->delay.count() > 0) interruptible_wait(fault->delay);
      if (!fault->then_answer_normally) {
        res.status = fault->status;
        for (const auto& [k, v] : fault->headers) res.set_header(k, v);
        res.set_content(fault->body.empty() ? default_error_body(fault->status) : fault->body, fault->content_type);
        return;
      }
    }
    handler(req, res);
  };
  if (method == "GET")
    server_.Get(pattern, wrapped);
  else if (method == "POST")
    server_.Post(pattern, wrapped);
  else if (method == "PATCH")
    server_.Patch(pattern, wrapped);
  else if (method == "PUT")
    server_.Put(pattern, wrapped);
  else if (method == "DELETE")
    server_.Delete(pattern, wrapped);
  else
    throw std::invalid_argument("unsupported method " + method);
}

std::vector<RecordedRequest> FakeServer::requests() const {
  std::lock_guard lock(mu_);
  return log_;
}

std::vector<RecordedRequest> FakeServer::requests_to(std::string_view path_contains) const {
  std::lock_guard lock(mu_);
  std::vector<RecordedRequest> out;
  for (const auto& r : log_)
    if (r.path.find(path_contains) != std::string::npos) out.push_back(r);
  return out;
}

size_t FakeServer::request_count() const {
  std::lock_guard lock(mu_);
  return log_.size();
}

void FakeServer::clear_requests() {
  std::lock_guard lock(mu_);
  log_.clear();
}

void FakeServer::inject(Fault fault, int times) {
  if (times <= 0) return;
  std::lock_guard lock(mu_);
  faults_.emplace_back(std::move(fault), times);
}

void FakeServer::fail_next(int times, int status, std::string body) {
  Fault f;
  f.status = status;
  f.body = std::move(body);
  inject(std::move(f), times);
}

void FakeServer::delay_next(int times, std::chrono::milliseconds delay) {
  Fault f;
  f.delay = delay;
  f.then_answer_normally = true;
  inject(std::move(f), times);
}

void FakeServer::clear_faults() {
  std::lock_guard lock(mu_);
  faults_.clear();
}

std::string python_json_dumps(const nlohmann::ordered_json& value) {
  std::string out;
  python_dump(value, out);
  return out;
}

std::string go_json_marshal_indent(const nlohmann::ordered_json& value) {
  std::string out;
  go_dump(value, out, 0);
  return out;
}

std::string random_uuid4() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  unsigned char b[16];
  for (int i = 0; i < 16; i += 8) {
    std::uint64_t v = rng();
    for (int k = 0; k < 8; ++k) b[i + k] = static_cast<unsigned char>(v >> (k * 8));
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0F) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3F) | 0x80);
  char out[37];
  std::snprintf(out, sizeof out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return out;
}

DeliveryResult post_webhook(const std::string& url, const std::vector<std::pair<std::string, std::string>>& headers,
                            const std::string& body, const std::string& content_type) {
  DeliveryResult result;
  if (url.rfind("http://", 0) != 0) {
    result.error = "only http:// URLs are supported by the fakes: " + url;
    return result;
  }
  auto slash = url.find('/', 7);
  std::string origin = slash == std::string::npos ? url : url.substr(0, slash);
  std::string target = slash == std::string::npos ? "/" : url.substr(slash);
  httplib::Client client(origin);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(30, 0);
  httplib::Headers h;
  for (const auto& [k, v] : headers) h.emplace(k, v);
  auto res = client.Post(target.c_str(), h, body, content_type.c_str());
  if (!res) {
    result.error = httplib::to_string(res.error());
    return result;
  }
  result.status = res->status;
  result.body = res->body;
  return result;
}

std::string python_isoformat(TimePoint t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  long long secs = us >= 0 ? us / 1000000 : (us - 999999) / 1000000;
  long long frac = us - secs * 1000000;
  std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[128];
  if (frac == 0) {
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec);
  } else {
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  }
  return buf;
}

void FakeServer::set_request_log_limit(size_t n) {
  std::lock_guard lock(mu_);
  log_limit_ = n;
}

}  // namespace orch::testing
