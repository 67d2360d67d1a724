// tests/fakes/fake_server.h: the common part of the fake Plane, Gitea and Telegram servers: a cpp-httplib server on
// an ephemeral loopback port with its own thread, a log of every request it received, and fault injection (the
// next N answers fail with a status, or come late). Also the helpers the fakes use to send webhooks the way the
// real senders serialise them. Thread-safe: tests set tables and faults while the server thread answers.
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "engine/clock.h"

namespace orch::testing {

struct RecordedRequest {
  std::string method;
  std::string path;   // decoded, without the query
  std::string query;  // raw, without the '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::multimap<std::string, std::string> params;  // decoded query parameters
  std::string body;
  int remote_port = 0;  // the client's side of the connection: equal ports mean a reused connection

  std::string header(std::string_view name) const;   // case-insensitive; "" if absent
  std::string param(const std::string& name) const;  // "" if absent
  bool has_param(const std::string& name) const { return params.count(name) > 0; }
};

// One injected answer. Consumed by the next request whose path contains `path_contains`.
struct Fault {
  int status = 500;
  std::string body;  // "" = the server's default error body for the status
  std::vector<std::pair<std::string, std::string>> headers;
  std::string content_type = "application/json";
  std::chrono::milliseconds delay{0};  // before answering
  bool then_answer_normally = false;   // after the delay, answer as if there were no fault
  std::string path_contains;
};

// What a webhook delivery came to. status -1: no HTTP answer (error says why).
struct DeliveryResult {
  int status = -1;
  std::string body;
  std::string delivery_id;
  std::string error;
};

class FakeServer {
 public:
  explicit FakeServer(std::string name);
  virtual ~FakeServer();
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

  std::vector<RecordedRequest> requests() const;
  std::vector<RecordedRequest> requests_to(std::string_view path_contains) const;
  size_t request_count() const;
  void clear_requests();

  void inject(Fault fault, int times = 1);
  void fail_next(int times, int status, std::string body = "");
  void delay_next(int times, std::chrono::milliseconds delay);  // then answers normally
  void clear_faults();
  // Keeps only the last `n` requests in the log (default: all). A long-running fake (the sandbox) sets it, or its
  // log would grow with every request, git packs included.
  void set_request_log_limit(size_t n);
  // Stops answering now and waits for the handlers in flight (the destructor does the same): for an owner whose
  // handlers call back into it, so that none runs while the owner is being destroyed. Idempotent.
  void shutdown() { stop(); }

 protected:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  // Registers a handler that records the request and applies faults first. Patterns are full-match regexes.
  void route(const std::string& method, const std::string& pattern, Handler handler);
  void start();  // at the end of the derived constructor: binds, starts the thread, returns once it accepts
  void stop();   // first thing in the derived destructor: a handler must not outlive the tables it reads
  virtual std::string default_error_body(int status) const;
  // Waits up to `d`, returning early when the server stops (a slow answer must not hold up the destructor).
  void interruptible_wait(std::chrono::milliseconds d);

 private:
  std::optional<Fault> take_fault(const std::string& path);

  const std::string name_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                     // guarded by mu_
  std::vector<RecordedRequest> log_;          // guarded by mu_
  size_t log_limit_ = 0;                      // guarded by mu_; 0 = no limit
  std::deque<std::pair<Fault, int>> faults_;  // guarded by mu_; (fault, times left)
};

// Python's json.dumps(obj) with its defaults: separators ", " and ": ", ensure_ascii (\uXXXX, lowercase hex,
// surrogate pairs), keys in insertion order. What Plane signs and sends.
std::string python_json_dumps(const nlohmann::ordered_json& value);
// Go's json.MarshalIndent(v, "", "  "): 2-space indent, "key": value, <>& escaped as \u003c \u003e \u0026.
// What Gitea signs and sends.
std::string go_json_marshal_indent(const nlohmann::ordered_json& value);
// A random, lowercase, hyphenated UUIDv4.
std::string random_uuid4();
// POSTs `body` to an absolute http:// URL with exactly these headers (plus Host / Content-Length).
DeliveryResult post_webhook(const std::string& url, const std::vector<std::pair<std::string, std::string>>& headers,
                            const std::string& body, const std::string& content_type = "application/json");
// "2026-05-19T10:15:42.118233Z": microseconds, and no fraction when it is zero (Python's isoformat()).
std::string python_isoformat(TimePoint t);

}  // namespace orch::testing
