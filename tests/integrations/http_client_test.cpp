#include "integrations/http_client.h"

#include <doctest/doctest.h>

#include <functional>
#include <thread>

#include "tests/fakes/fake_gitea.h"
#include "tests/fakes/fake_plane.h"
#include "tests/fakes/recording_sleeper.h"
#include "tests/support/manual_clock.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_log.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

// A fake Gitea with one branch: a cheap GET target that answers 200.
struct Fixture {
  FakeGitea gitea;  // first, so it outlives the client's kept-alive connections
  ManualClock clock;
  RecordingSleeper sleeper{clock};
  TestLog log;
  std::unique_ptr<HttpClient> http;

  explicit Fixture(HttpClientOptions o = {}) {
    gitea.set_branch("acme/shop", "main", "1111111111111111111111111111111111111111");
    o.name = "gitea";
    if (o.base_url.empty()) o.base_url = gitea.base_url();
    http = std::make_unique<HttpClient>(o, sleeper, clock, log.logger());
  }
  Result<HttpResponse> get_branch() { return http->send(HttpRequest::get("/api/v1/repos/acme/shop/branches/main")); }
};

}  // namespace

TEST_CASE("a 2xx answer comes back with its status, headers and body") {
  Fixture f;
  auto r = f.get_branch();
  REQUIRE(r.ok());
  CHECK(r.value().status == 200);
  CHECK(r.value().header("content-type").value_or("").find("application/json") != std::string::npos);
  auto j = parse_json_body(r.value(), "branch");
  REQUIRE(j.ok());
  CHECK(j.value()["commit"]["id"] == "1111111111111111111111111111111111111111");
  CHECK(f.sleeper.waits().empty());
}

TEST_CASE("a 429 is retried after exactly Retry-After seconds, waited through the sleeper") {
  Fixture f;
  Fault rate_limited;
  rate_limited.status = 429;
  rate_limited.headers = {{"Retry-After", "7"}};
  f.gitea.inject(rate_limited, 2);
  auto r = f.get_branch();
  REQUIRE(r.ok());
  CHECK(f.sleeper.waits() == std::vector<Millis>{7000ms, 7000ms});
  CHECK(f.clock.now() == kMonday9am + 14s);
  CHECK(f.gitea.request_count() == 3);
  CHECK(f.http->attempts_made() == 3);
}

TEST_CASE("a 5xx is retried with full-jitter backoff under an exponential ceiling, then succeeds") {
  HttpClientOptions o;
  o.backoff_base = 500ms;
  o.backoff_cap = 800ms;
  Fixture f(o);
  f.gitea.fail_next(3, 502);
  auto r = f.get_branch();
  REQUIRE(r.ok());
  auto waits = f.sleeper.waits();
  REQUIRE(waits.size() == 3);
  CHECK(waits[0] <= 500ms);
  CHECK(waits[1] <= 800ms);  // 1000 ms capped
  CHECK(waits[2] <= 800ms);
  CHECK(f.gitea.request_count() == 4);
}

TEST_CASE("a 5xx on every attempt ends as kUnavailable after max_attempts") {
  HttpClientOptions o;
  o.max_attempts = 3;
  Fixture f(o);
  f.gitea.fail_next(10, 500);
  auto r = f.get_branch();
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kUnavailable);
  CHECK(r.status().message.find("GET /api/v1/repos/acme/shop/branches/main") != std::string::npos);
  CHECK(r.status().message.find("500") != std::string::npos);
  CHECK(r.status().message.find("after 3 attempts") != std::string::npos);
  CHECK(f.gitea.request_count() == 3);
  CHECK(f.sleeper.waits().size() == 2);
}

TEST_CASE("a 404 is not retried and is kNotFound") {
  Fixture f;
  auto r = f.http->send(HttpRequest::get("/api/v1/repos/acme/shop/branches/nope"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kNotFound);
  CHECK(f.gitea.request_count() == 1);
  CHECK(f.sleeper.waits().empty());
}

TEST_CASE("another 4xx is kInvalid naming method, path, status and an excerpt, but never the query") {
  Fixture f;
  f.gitea.fail_next(1, 422, R"({"message":"[Head Base Title]: Required"})");
  auto r = f.http->send(HttpRequest::get("/api/v1/repos/acme/shop/branches/main?access_token=hunter2"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kInvalid);
  const std::string& m = r.status().message;
  CHECK(m.find("gitea: GET /api/v1/repos/acme/shop/branches/main") != std::string::npos);
  CHECK(m.find("422") != std::string::npos);
  CHECK(m.find("Required") != std::string::npos);
  CHECK(m.find("hunter2") == std::string::npos);
  CHECK(m.find("access_token") == std::string::npos);
  CHECK(f.gitea.request_count() == 1);
}

TEST_CASE("a 409 is kConflict, so a caller can adopt what already exists") {
  Fixture f;
  f.gitea.fail_next(1, 409);
  auto r = f.get_branch();
  CHECK(r.status().code == Code::kConflict);
}

TEST_CASE("a Retry-After longer than the retry budget gives up at once instead of blocking the caller") {
  HttpClientOptions o;
  o.retry_budget = 60s;
  Fixture f(o);
  Fault rate_limited;
  rate_limited.status = 429;
  rate_limited.headers = {{"Retry-After", "3600"}};
  f.gitea.inject(rate_limited);
  auto r = f.get_branch();
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kUnavailable);
  CHECK(r.status().message.find("retry budget") != std::string::npos);
  CHECK(f.sleeper.waits().empty());
  CHECK(f.gitea.request_count() == 1);
}

TEST_CASE("the retry budget bounds the total time across attempts") {
  HttpClientOptions o;
  o.max_attempts = 10;
  o.retry_budget = 20s;
  Fixture f(o);
  Fault rate_limited;
  rate_limited.status = 429;
  rate_limited.headers = {{"Retry-After", "8"}};
  f.gitea.inject(rate_limited, 10);
  auto r = f.get_branch();
  CHECK(r.status().code == Code::kUnavailable);
  CHECK(f.sleeper.waits() == std::vector<Millis>{8000ms, 8000ms});  // a third wait would pass 20 s
  CHECK(f.gitea.request_count() == 3);
}

TEST_CASE("an answer slower than the total timeout is kUnavailable") {
  HttpClientOptions o;
  o.total_timeout = 200ms;
  o.max_attempts = 2;
  Fixture f(o);
  f.gitea.delay_next(2, 2000ms);
  auto r = f.get_branch();
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kUnavailable);
  CHECK(r.status().message.find("timed out") != std::string::npos);
  CHECK(f.gitea.request_count() == 2);  // a timeout is retried (GET is idempotent)
  CHECK(f.sleeper.waits().size() == 1);
}

// With the real sleeper and clock: what SIGTERM does to a call that is waiting (App::stop interrupts the sleeper).
struct InterruptibleFixture {
  FakeGitea gitea;
  SystemClock clock;
  RealSleeper sleeper;
  TestLog log;
  std::unique_ptr<HttpClient> http;
  Result<HttpResponse> result = unavailable("not run");

  InterruptibleFixture() {
    gitea.set_branch("acme/shop", "main", "1111111111111111111111111111111111111111");
    HttpClientOptions o;
    o.name = "gitea";
    o.base_url = gitea.base_url();
    o.total_timeout = 120s;  // longer than the test could wait: only the interruption ends the call
    o.retry_budget = 600s;
    http = std::make_unique<HttpClient>(o, sleeper, clock, log.logger());
  }
  // Sends from another thread, interrupts once `ready` (the fake saw the request, the client is waiting), returns
  // the call's result.
  Result<HttpResponse> interrupt_when(const std::function<bool()>& ready) {
    std::jthread caller([this] { result = http->send(HttpRequest::get("/api/v1/repos/acme/shop/branches/main")); });
    REQUIRE(eventually(ready, 30s));
    sleeper.interrupt();
    caller.join();
    return result;
  }
};

TEST_CASE("a shutdown interrupts a Retry-After wait: the call gives up at once instead of waiting out the throttle") {
  InterruptibleFixture f;
  Fault rate_limited;
  rate_limited.status = 429;
  rate_limited.headers = {{"Retry-After", "300"}};  // five minutes: the test would hit CTest's timeout
  f.gitea.inject(rate_limited, 3);
  // Interrupted during the wait, not while the 429 is being read: the client logs the wait before it begins.
  auto r = f.interrupt_when([&] { return f.log.contains("retrying in 300000 ms"); });
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kUnavailable);  // transient: the delivery or the pass is retried after the restart
  CHECK(r.status().message.find("answered 429") != std::string::npos);
  CHECK(r.status().message.find("not retried: shutting down") != std::string::npos);
  CHECK(f.gitea.request_count() == 1);
}

TEST_CASE("a shutdown aborts a transfer in flight, and no call is sent after it") {
  InterruptibleFixture f;
  f.gitea.delay_next(1, 300s);  // the server holds the answer
  auto r = f.interrupt_when([&] { return f.gitea.request_count() == 1; });
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kUnavailable);
  CHECK(r.status().message.find("stopped: shutting down") != std::string::npos);

  auto later = f.http->send(HttpRequest::get("/api/v1/repos/acme/shop/branches/main"));
  REQUIRE_FALSE(later.ok());
  CHECK(later.status().message.find("not sent: shutting down") != std::string::npos);
  CHECK(f.gitea.request_count() == 1);
}

TEST_CASE("a refused connection is retried, then kUnavailable") {
  HttpClientOptions o;
  o.max_attempts = 3;
  o.base_url = "http://127.0.0.1:1";  // nothing listens on port 1
  Fixture f(o);
  auto r = f.get_branch();
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kUnavailable);
  CHECK(f.sleeper.waits().size() == 2);
}

TEST_CASE("a non-idempotent call is not retried after a 5xx, but is after a 429") {
  Fixture f;
  HttpRequest post = HttpRequest::json("POST", "/api/v1/repos/acme/shop/pulls", nlohmann::json::object());
  post.idempotent = false;
  f.gitea.fail_next(1, 500);
  auto r = f.http->send(post);
  CHECK(r.status().code == Code::kUnavailable);
  CHECK(f.gitea.request_count() == 1);
  Fault rate_limited;
  rate_limited.status = 429;
  rate_limited.headers = {{"Retry-After", "1"}};
  f.gitea.inject(rate_limited);
  f.gitea.fail_next(1, 500);
  r = f.http->send(post);
  CHECK(f.gitea.request_count() == 3);  // 429, then the retry got the 500 and stopped
}

TEST_CASE("any_status returns every HTTP answer as a value") {
  Fixture f;
  f.gitea.fail_next(1, 403, R"({"message":"forbidden"})");
  HttpRequest req = HttpRequest::get("/api/v1/repos/acme/shop/branches/main");
  req.any_status = true;
  auto r = f.http->send(req);
  REQUIRE(r.ok());
  CHECK(r.value().status == 403);
  CHECK(r.value().body.find("forbidden") != std::string::npos);
}

TEST_CASE("sequential calls reuse one kept-alive connection") {
  Fixture f;
  for (int i = 0; i < 5; ++i) REQUIRE(f.get_branch().ok());
  auto reqs = f.gitea.requests();
  REQUIRE(reqs.size() == 5);
  for (const auto& r : reqs) CHECK(r.remote_port == reqs.front().remote_port);
}

TEST_CASE("a body that is not JSON is an error value, not an exception") {
  Fixture f;
  f.gitea.fail_next(1, 200, "<html>502 Bad Gateway</html>");
  auto r = f.get_branch();
  REQUIRE(r.ok());
  auto j = parse_json_body(r.value(), "gitea: branch");
  REQUIRE_FALSE(j.ok());
  CHECK(j.status().code == Code::kUnavailable);
  CHECK(j.status().message.find("not JSON") != std::string::npos);
}

TEST_CASE("redact hides configured secrets and Telegram's token path segment") {
  HttpClientOptions o;
  o.redact = {Secret("s3cr3t-value")};
  Fixture f(o);
  CHECK(f.http->redact("key s3cr3t-value here") == "key <redacted> here");
  CHECK(f.http->redact("POST /bot123:ABC/sendMessage") == "POST /bot<redacted>/sendMessage");
  CHECK(f.http->redact("GET /botany/leaves") == "GET /botany/leaves");
}

TEST_CASE("url_escape keeps unreserved characters and optionally slashes") {
  CHECK(url_escape("a b/c?d") == "a%20b%2Fc%3Fd");
  CHECK(url_escape("orch/shop-42", true) == "orch/shop-42");
  CHECK(url_escape("100:1:0") == "100%3A1%3A0");
}
