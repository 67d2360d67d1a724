// DESIGN: one retry loop for every outbound call. An attempt that fails transiently (connection, timeout, 429,
// 5xx) waits before the next: Retry-After when the server gave one (Plane's throttle, Telegram), otherwise full
// jitter over an exponential ceiling (AWS "exponential backoff and jitter"), so that a fleet of clients do not
// retry in lockstep. The loop ends after max_attempts, or as soon as the next wait would overrun retry_budget:
// a caller (the reconciler, the outbox) has its own cadence and is better served by a quick kUnavailable than by
// a thread blocked for minutes.
#include "integrations/http_client.h"

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cstdlib>
#include <thread>

namespace orch {

namespace {

std::once_flag g_curl_init;

void ensure_curl_initialised() {
  // curl_global_init is not thread-safe; run it once before the first handle, whichever thread gets there.
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* ctx = static_cast<std::pair<std::string*, std::pair<size_t, bool*>>*>(user);
  size_t len = size * n;
  if (ctx->first->size() + len > ctx->second.first) {
    *ctx->second.second = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  ctx->first->append(data, len);
  return len;
}

// Nonzero aborts the transfer (CURLE_ABORTED_BY_CALLBACK): the process is shutting down.
int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const Sleeper*>(user)->interrupted() ? 1 : 0;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* headers = static_cast<std::vector<HttpHeader>*>(user);
  size_t len = size * n;
  std::string_view line(data, len);
  if (line.starts_with("HTTP/")) {
    headers->clear();  // a new response (after 100 Continue, or a proxy's CONNECT answer)
    return len;
  }
  auto colon = line.find(':');
  if (colon != std::string_view::npos) headers->push_back({trim(line.substr(0, colon)), trim(line.substr(colon + 1))});
  return len;
}

// Failures where nothing reached the server: safe to retry even a non-idempotent call.
bool not_sent(CURLcode c) {
  return c == CURLE_COULDNT_CONNECT || c == CURLE_COULDNT_RESOLVE_HOST || c == CURLE_COULDNT_RESOLVE_PROXY;
}

bool transient(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return true;
    default: return false;
  }
}

// Retry-After in seconds (the only form Plane's DRF and Telegram send); an HTTP-date is ignored.
std::optional<Millis> retry_after(const HttpResponse& r) {
  auto v = r.header("Retry-After");
  if (!v || v->empty()) return std::nullopt;
  char* end = nullptr;
  long secs = std::strtol(v->c_str(), &end, 10);
  if (end == v->c_str() || *end != '\0' || secs < 0) return std::nullopt;
  return Millis(secs * 1000);
}

std::string excerpt(const std::string& body) {
  constexpr size_t kMax = 200;
  std::string out;
  for (char c : body.substr(0, kMax)) out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  if (body.size() > kMax) out += "...";
  return out;
}

}  // namespace

bool RealSleeper::sleep_for(Millis d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return interrupted_.load(); });
}

void RealSleeper::interrupt() {
  {
    std::lock_guard lock(mu_);
    interrupted_ = true;
  }
  cv_.notify_all();
}

HttpRequest HttpRequest::get(std::string target) {
  HttpRequest r;
  r.method = "GET";
  r.target = std::move(target);
  return r;
}

HttpRequest HttpRequest::json(std::string method, std::string target, const nlohmann::json& body) {
  HttpRequest r;
  r.method = std::move(method);
  r.target = std::move(target);
  r.body = body.dump();
  return r;
}

std::optional<std::string> HttpResponse::header(std::string_view name) const {
  std::optional<std::string> found;
  for (const auto& h : headers)
    if (iequals(h.name, name)) found = h.value;
  return found;
}

HttpClient::HttpClient(HttpClientOptions options, Sleeper& sleeper, const Clock& clock, spdlog::logger& log)
    : options_(std::move(options)), sleeper_(sleeper), clock_(clock), log_(log), rng_(std::random_device{}()) {
  ensure_curl_initialised();
}

HttpClient::~HttpClient() {
  std::lock_guard lock(pool_mu_);
  for (CURL* h : idle_) curl_easy_cleanup(h);
}

CURL* HttpClient::acquire() {
  {
    std::lock_guard lock(pool_mu_);
    if (!idle_.empty()) {
      CURL* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void HttpClient::release(CURL* handle) {
  std::lock_guard lock(pool_mu_);
  if (static_cast<int>(idle_.size()) < options_.pool_size) {
    idle_.push_back(handle);
  } else {
    curl_easy_cleanup(handle);
  }
}

std::string HttpClient::redact(std::string text) const {
  for (const Secret& s : options_.redact) {
    if (s.empty()) continue;
    for (size_t pos = text.find(s.reveal()); pos != std::string::npos; pos = text.find(s.reveal(), pos))
      text.replace(pos, s.reveal().size(), "<redacted>");
  }
  // Telegram puts the token in the path: /bot123456:AA.../sendMessage.
  for (size_t pos = text.find("/bot"); pos != std::string::npos; pos = text.find("/bot", pos + 4)) {
    size_t start = pos + 4;
    size_t end = text.find_first_of("/ ?", start);
    if (end == std::string::npos) end = text.size();
    std::string_view seg(text.data() + start, end - start);
    if (seg.find(':') != std::string_view::npos) text.replace(start, end - start, "<redacted>");
  }
  return text;
}

std::string HttpClient::describe(const HttpRequest& request) const {
  std::string path = request.log_target.empty() ? request.target : request.log_target;
  path = path.substr(0, path.find('?'));
  return redact(options_.name + ": " + request.method + " " + path);
}

Millis HttpClient::jittered_backoff(int attempt) {
  long long ceiling = options_.backoff_base.count();
  for (int i = 1; i < attempt && ceiling < options_.backoff_cap.count(); ++i) ceiling *= 2;
  ceiling = std::min<long long>(ceiling, options_.backoff_cap.count());
  std::lock_guard lock(rng_mu_);
  return Millis(std::uniform_int_distribution<long long>(0, std::max(0LL, ceiling))(rng_));
}

HttpClient::Attempt HttpClient::perform(const HttpRequest& request) {
  Attempt a;
  CURL* h = acquire();
  if (!h) {
    a.curl = CURLE_OUT_OF_MEMORY;
    a.curl_error = "cannot create a curl handle";
    return a;
  }
  ++attempts_;
  // reset() keeps the handle's live connections (keep-alive) and DNS cache; only options are cleared.
  curl_easy_reset(h);
  std::string base = options_.base_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::string url = base + request.target;
  char errbuf[CURL_ERROR_SIZE] = {0};
  std::pair<std::string*, std::pair<size_t, bool*>> body_ctx{&a.response.body,
                                                             {options_.max_response_bytes, &a.too_large}};

  curl_slist* headers = nullptr;
  bool has_content_type = false;
  for (const auto& hd : request.headers) {
    if (iequals(hd.name, "Content-Type")) has_content_type = true;
    headers = curl_slist_append(headers, (hd.name + ": " + hd.value).c_str());
  }
  if (!request.body.empty() && !has_content_type)
    headers = curl_slist_append(headers, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Accept: application/json");
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip

  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);  // Plane turns a redirected POST into a GET: never follow
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.total_timeout.count()));
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!options_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str());
  curl_easy_setopt(h, CURLOPT_USERAGENT, options_.user_agent.c_str());
  // gzip only: it is what Plane and Gitea serve, and brotli encoders burn far more CPU per large page.
  curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "gzip");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body_ctx);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &a.response.headers);
  // libcurl calls this about once a second even on a silent connection: a shutdown aborts the transfer.
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &on_progress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &sleeper_);
  if (request.method == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  }

  a.curl = curl_easy_perform(h);
  if (a.curl == CURLE_OK) {
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    a.response.status = static_cast<int>(code);
  } else {
    a.curl_error = errbuf[0] ? errbuf : curl_easy_strerror(a.curl);
  }
  curl_slist_free_all(headers);
  // A handle whose transfer failed may hold a half-read connection; curl discards such connections itself.
  release(h);
  return a;
}

Status HttpClient::pace(const std::string& what, Millis& paced) {
  for (;;) {
    const Millis wait = options_.pacer->before_request(clock_.now(), options_.pacer_reserve);
    if (wait <= Millis(0)) return {};
    log_.info(
        "{}: the server's rate-limit allowance is used up (or down to this client's reserve); pausing {} ms "
        "until its window resets",
        what, wait.count());
    if (!sleeper_.sleep_for(wait)) return unavailable(what + ": not sent: shutting down");
    paced += wait;
  }
}

Result<HttpResponse> HttpClient::send(const HttpRequest& request) {
  const std::string what = describe(request);
  const TimePoint started = clock_.now();
  Millis paced{0};  // time spent waiting for the rate-limit window: not a retry, so not charged to the budget
  const int max_attempts = std::max(1, options_.max_attempts);
  std::string last_failure;
  for (int attempt = 1;; ++attempt) {
    if (sleeper_.interrupted()) return unavailable(what + ": not sent: shutting down");
    if (options_.pacer) {
      Status s = pace(what, paced);
      if (!s.ok()) return s;
    }
    const auto attempt_started = std::chrono::steady_clock::now();
    Attempt a = perform(request);
    if (a.curl == CURLE_ABORTED_BY_CALLBACK) return unavailable(what + ": stopped: shutting down");
    if (options_.pacer && a.curl == CURLE_OK) options_.pacer->observe(a.response, clock_.now());
    {
      const int st = a.response.status;
      const ApiOutcome outcome = a.curl != CURLE_OK || a.too_large ? ApiOutcome::kNetworkError
                                 : st == 429                       ? ApiOutcome::kRateLimited
                                 : st >= 500                       ? ApiOutcome::kServerError
                                 : st >= 200 && st < 300           ? ApiOutcome::kOk
                                                                   : ApiOutcome::kClientError;
      options_.telemetry->api_call(
          options_.name, outcome,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - attempt_started).count());
    }
    bool retryable = false;
    std::optional<Millis> server_wait;
    if (a.too_large) {
      return invalid(what + ": response exceeds " + std::to_string(options_.max_response_bytes) + " bytes");
    }
    if (a.curl != CURLE_OK) {
      std::string why = a.curl == CURLE_OPERATION_TIMEDOUT
                            ? "timed out after " + std::to_string(options_.total_timeout.count()) + " ms"
                            : a.curl_error;
      last_failure = redact(why);
      if (a.curl == CURLE_URL_MALFORMAT || a.curl == CURLE_UNSUPPORTED_PROTOCOL)
        return invalid(what + ": " + last_failure);
      retryable = transient(a.curl) && (request.idempotent || not_sent(a.curl));
      if (!transient(a.curl)) return unavailable(what + ": " + last_failure);
    } else {
      const HttpResponse& r = a.response;
      if (r.status >= 200 && r.status < 300) return std::move(a.response);
      last_failure = "answered " + std::to_string(r.status) + ": " + redact(excerpt(r.body));
      if (r.status == 429 || r.status >= 500) {
        retryable = request.idempotent || r.status == 429;
        server_wait = retry_after(r);
      }
      if (!retryable || attempt >= max_attempts) {
        if (request.any_status) return std::move(a.response);
        if (r.status == 429 || r.status >= 500)
          return unavailable(what + " " + last_failure +
                             (attempt > 1 ? " (after " + std::to_string(attempt) + " attempts)" : ""));
        if (r.status == 404) return not_found(what + " " + last_failure);
        if (r.status == 409) return conflict(what + " " + last_failure);
        return invalid(what + " " + last_failure);
      }
    }
    if (!retryable || attempt >= max_attempts) {
      return unavailable(what + ": " + last_failure +
                         (attempt > 1 ? " (after " + std::to_string(attempt) + " attempts)" : ""));
    }
    Millis wait = server_wait ? *server_wait : jittered_backoff(attempt);
    auto spent = std::chrono::duration_cast<Millis>(clock_.now() - started) - paced;
    if (spent + wait > options_.retry_budget) {
      std::string msg = what + " " + last_failure + "; next retry in " + std::to_string(wait.count()) +
                        " ms would exceed the retry budget of " + std::to_string(options_.retry_budget.count()) + " ms";
      if (a.curl == CURLE_OK && request.any_status) return std::move(a.response);
      return unavailable(msg);
    }
    log_.warn("{} {}; attempt {}/{}, retrying in {} ms", what, last_failure, attempt, max_attempts, wait.count());
    if (!sleeper_.sleep_for(wait)) return unavailable(what + " " + last_failure + "; not retried: shutting down");
  }
}

std::string url_escape(std::string_view s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

Result<nlohmann::json> parse_json_body(const HttpResponse& response, const std::string& what) {
  nlohmann::json j = nlohmann::json::parse(response.body, nullptr, false);
  if (j.is_discarded()) return unavailable(what + ": answer is not JSON: " + excerpt(response.body));
  return j;
}

}  // namespace orch
