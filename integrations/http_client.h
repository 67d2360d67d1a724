// integrations/http_client.h: the one libcurl client every integration uses (Plane, Gitea, Telegram).
// send() never throws: every outcome is a Result<HttpResponse>. It retries connection errors, timeouts, 429 and
// 5xx with exponential backoff and full jitter (honouring Retry-After), bounded in attempts and in total time;
// the waits go through the injected Sleeper so tests advance a ManualClock instead of sleeping.
// Thread-safe: any thread may call send(); easy handles (and their kept-alive connections) are pooled.
#pragma once

#include <curl/curl.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <spdlog/logger.h>
#include <string>
#include <string_view>
#include <vector>

#include "engine/clock.h"
#include "engine/secret.h"
#include "engine/status.h"
#include "engine/telemetry.h"
#include "integrations/rate_pacer.h"

namespace orch {

// How the client waits between attempts, and whether it should stop trying (the process is shutting down). The
// real one sleeps; tests advance a ManualClock and record the waits.
struct Sleeper {
  virtual ~Sleeper() = default;
  // false: interrupted (shutting down) before the wait was over; the caller gives up instead of retrying.
  virtual bool sleep_for(Millis d) = 0;
  // Once true, stays true: transfers in flight are aborted and no new attempt is made.
  virtual bool interrupted() const = 0;
};

// Sleeps on a condition variable that interrupt() wakes: a SIGTERM during a Retry-After of Plane's throttle (up to a
// minute) or a slow transfer stops the calling thread within a second, not at the end of the wait. Thread-safe.
class RealSleeper final : public Sleeper {
 public:
  bool sleep_for(Millis d) override;
  bool interrupted() const override { return interrupted_.load(); }
  void interrupt();  // for the owner, at the start of shutdown; every current and later wait returns false at once

 private:
  std::atomic<bool> interrupted_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

struct HttpHeader {
  std::string name;
  std::string value;
};

struct HttpRequest {
  std::string method = "GET";
  std::string target;               // path and query relative to the base URL, e.g. "/api/v1/version"
  std::vector<HttpHeader> headers;  // may carry credentials: never logged, never put in a message
  std::string body;                 // sent with Content-Type: application/json unless a header says otherwise
  // Shown instead of the path in messages and logs when the path itself holds a secret (Telegram's /bot<token>/).
  std::string log_target;
  // A non-idempotent call (a POST creating a comment) is retried only when it surely was not processed:
  // 429, or the connection could not be made. A 5xx or a timeout might have been applied already.
  bool idempotent = true;
  // Return every HTTP answer as a value, whatever its status, instead of mapping 4xx/5xx to a Status.
  // Transport failures are still a Status. Retries still follow the client's options.
  bool any_status = false;

  static HttpRequest get(std::string target);
  static HttpRequest json(std::string method, std::string target, const nlohmann::json& body);
};

struct HttpResponse {
  int status = 0;
  std::vector<HttpHeader> headers;  // in arrival order; names as sent
  std::string body;
  // Case-insensitive; the last value when repeated. nullopt if absent.
  std::optional<std::string> header(std::string_view name) const;
};

struct HttpClientOptions {
  std::string name = "http";  // prefixes log lines and messages: "plane", "gitea", "telegram"
  std::string base_url;       // "https://plane.example.com"; a trailing slash is ignored
  Millis connect_timeout{5000};
  Millis total_timeout{30000};  // one attempt, connect to last byte
  std::string ca_file;          // "" = the system trust store; TLS verification is always on
  int max_attempts = 4;         // 1 = no retries
  Millis backoff_base{500};     // attempt n waits uniform[0, min(cap, base * 2^(n-1))]
  Millis backoff_cap{30000};
  Millis retry_budget{60000};  // no retry once this much time has passed since the first attempt
  std::size_t max_response_bytes = 32u << 20;
  std::vector<Secret> redact;  // values replaced by "<redacted>" in every message and log line
  int pool_size = 4;           // easy handles kept for reuse (each keeps its connections alive)
  std::string user_agent = "orch/0.1";
  Telemetry* telemetry = &no_telemetry();  // told the outcome and duration of every attempt; never null
  // Asked before every attempt and told every answer: waits for the server's rate-limit window instead of running
  // into 429s (Plane). Not owned; shared by every client of one API key. Null: no pacing, only 429s are handled.
  // Its waits go through the Sleeper like retries, and do not count against retry_budget.
  RatePacer* pacer = nullptr;
  // This client's requests pause once the pacer's known allowance left is at or below this (or the pacer's own
  // reserve, whichever is larger): the Plane read client sets kPlaneReadReserve, so it stops polling while the
  // write client of the same pacer (0) can still comment and move states at once. Ignored without a pacer.
  int pacer_reserve = 0;
};

class HttpClient {
 public:
  HttpClient(HttpClientOptions options, Sleeper& sleeper, const Clock& clock, spdlog::logger& log);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // 2xx -> the response. After retries: network error, timeout, 429, 5xx -> kUnavailable; 404 -> kNotFound;
  // 409 -> kConflict; other 3xx/4xx -> kInvalid. Messages name the method and path (never the query, a header
  // or a secret), the status and a short excerpt of the body.
  Result<HttpResponse> send(const HttpRequest& request);

  // Attempts made (each retry counts), for tests and metrics.
  std::int64_t attempts_made() const { return attempts_.load(); }
  const HttpClientOptions& options() const { return options_; }

  // Replaces every configured secret and any Telegram-style "/bot<token>" path segment by "<redacted>".
  std::string redact(std::string text) const;

 private:
  struct Attempt {
    CURLcode curl = CURLE_OK;
    std::string curl_error;
    bool too_large = false;
    HttpResponse response;
  };
  Attempt perform(const HttpRequest& request);
  CURL* acquire();
  void release(CURL* handle);
  Millis jittered_backoff(int attempt);
  Status pace(const std::string& what, Millis& paced);     // waits as options_.pacer says; kUnavailable if interrupted
  std::string describe(const HttpRequest& request) const;  // "GET /api/v1/x" with no query, redacted

  const HttpClientOptions options_;
  Sleeper& sleeper_;
  const Clock& clock_;
  spdlog::logger& log_;
  std::atomic<std::int64_t> attempts_{0};
  std::mutex pool_mu_;
  std::vector<CURL*> idle_;  // guarded by pool_mu_
  std::mutex rng_mu_;
  std::mt19937_64 rng_;  // guarded by rng_mu_
};

// Percent-encodes everything but RFC 3986 unreserved characters; keep_slash leaves '/' alone (Gitea branch paths).
std::string url_escape(std::string_view s, bool keep_slash = false);

// Parses a body as JSON without throwing; a body that is not JSON is kUnavailable naming `what`.
Result<nlohmann::json> parse_json_body(const HttpResponse& response, const std::string& what);

}  // namespace orch
