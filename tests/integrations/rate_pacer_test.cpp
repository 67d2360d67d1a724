#include "integrations/rate_pacer.h"

#include <doctest/doctest.h>

#include "integrations/http_client.h"
#include "integrations/plane_client.h"
#include "tests/fakes/fake_plane.h"
#include "tests/fakes/recording_sleeper.h"
#include "tests/support/manual_clock.h"
#include "tests/support/test_log.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

std::int64_t unix_s(TimePoint t) { return std::chrono::duration_cast<Seconds>(t.time_since_epoch()).count(); }

HttpResponse allowed(std::int64_t remaining, std::int64_t reset) {
  HttpResponse r;
  r.status = 200;
  r.headers = {{"X-RateLimit-Remaining", std::to_string(remaining)}, {"X-RateLimit-Reset", std::to_string(reset)}};
  return r;
}

HttpResponse throttled(const std::string& retry_after) {
  HttpResponse r;
  r.status = 429;
  r.headers = {{"Retry-After", retry_after}};
  r.body = R"({"error_code":5900,"error_message":"RATE_LIMIT_EXCEEDED"})";
  return r;
}

}  // namespace

TEST_CASE("rate pacing: with no rate headers seen the pacer never waits") {
  RatePacer pacer;
  for (int i = 0; i < 200; ++i) CHECK(pacer.before_request(kMonday9am) == 0ms);
  HttpResponse plain;
  plain.status = 200;
  pacer.observe(plain, kMonday9am);
  CHECK(pacer.before_request(kMonday9am) == 0ms);
  CHECK_FALSE(pacer.remaining().has_value());
  CHECK(pacer.pauses() == 0);
}

TEST_CASE("rate pacing: the allowance left is spent, then the pacer waits until Reset plus the margin") {
  RatePacer pacer;  // reserve 0, margin 1 s
  const TimePoint now = kMonday9am;
  pacer.observe(allowed(2, unix_s(now) + 60), now);
  CHECK(pacer.before_request(now) == 0ms);
  CHECK(pacer.before_request(now) == 0ms);
  CHECK(pacer.remaining() == 0);
  CHECK(pacer.before_request(now) == 61000ms);
  CHECK(pacer.before_request(now + 30s) == 31000ms);  // asked again later: only what is left of the window
  CHECK(pacer.before_request(now + 61s) == 0ms);      // the window has passed: go, allowance unknown again
  CHECK(pacer.pauses() == 2);
}

TEST_CASE("rate pacing: Remaining 0 pauses the very next request") {
  RatePacer pacer;
  const TimePoint now = kMonday9am;
  pacer.observe(allowed(0, unix_s(now) + 60), now);
  CHECK(pacer.before_request(now) == 61000ms);
  CHECK(pacer.before_request(now + 61s) == 0ms);
}

TEST_CASE("rate pacing: a Reset already in the past (server clock behind ours) does not pause") {
  RatePacer pacer;
  const TimePoint now = kMonday9am;
  pacer.observe(allowed(0, unix_s(now) - 600), now);
  CHECK(pacer.before_request(now) == 0ms);
  CHECK(pacer.pauses() == 0);
}

TEST_CASE("rate pacing: a Reset far ahead (clock skew) is capped by max_pause") {
  RatePacer pacer;  // max_pause 61 s
  const TimePoint now = kMonday9am;
  pacer.observe(allowed(0, unix_s(now) + 3 * 3600), now);
  CHECK(pacer.before_request(now) == 61000ms);
  RatePacer tight(RatePacerOptions{.max_pause = 5000ms});
  tight.observe(allowed(0, unix_s(now) + 3 * 3600), now);
  CHECK(tight.before_request(now) == 5000ms);
}

TEST_CASE("rate pacing: a reserve keeps that many requests back for another client of the key") {
  RatePacer pacer(RatePacerOptions{.reserve = 5});
  const TimePoint now = kMonday9am;
  pacer.observe(allowed(7, unix_s(now) + 60), now);
  CHECK(pacer.before_request(now) == 0ms);
  CHECK(pacer.before_request(now) == 0ms);
  CHECK(pacer.before_request(now) == 61000ms);
}

TEST_CASE("rate pacing: a 429's Retry-After closes the window for every caller, capped by max_pause") {
  RatePacer pacer;
  const TimePoint now = kMonday9am;
  pacer.observe(throttled("12"), now);
  CHECK(pacer.remaining() == 0);
  CHECK(pacer.before_request(now) == 12000ms);
  CHECK(pacer.before_request(now + 12s) == 0ms);
  pacer.observe(throttled("100000"), now);
  CHECK(pacer.before_request(now) == 61000ms);
}

TEST_CASE("rate pacing: malformed rate headers are ignored, not guessed at") {
  RatePacer pacer;
  const TimePoint now = kMonday9am;
  HttpResponse r;
  r.status = 200;
  r.headers = {{"X-RateLimit-Remaining", "-3"}, {"X-RateLimit-Reset", "soon"}};
  pacer.observe(r, now);
  CHECK_FALSE(pacer.remaining().has_value());
  pacer.observe(throttled("later"), now);
  CHECK(pacer.before_request(now) == 0ms);
  // A sane Remaining with a nonsense Reset: assume the longest window rather than none.
  r.headers = {{"X-RateLimit-Remaining", "0"}, {"X-RateLimit-Reset", "99999999999999"}};
  pacer.observe(r, now);
  CHECK(pacer.before_request(now) == 61000ms);
}

TEST_CASE("rate pacing: a caller's reserve pauses it while a caller with none spends the rest (writes first)") {
  RatePacer pacer;  // reserve 0 of its own
  const TimePoint now = kMonday9am;
  pacer.observe(allowed(12, unix_s(now) + 60), now);
  CHECK(pacer.before_request(now, kPlaneReadReserve) == 0ms);               // 12 left
  CHECK(pacer.before_request(now, kPlaneReadReserve) == 0ms);               // 11 left
  CHECK(pacer.before_request(now, kPlaneReadReserve) == 61000ms);           // 10 left: the reads wait for the window
  for (int i = 0; i < 10; ++i) CHECK(pacer.before_request(now, 0) == 0ms);  // the writes still go, all 10
  CHECK(pacer.before_request(now) == 61000ms);                              // and then they wait too
  CHECK(pacer.before_request(now + 61s, kPlaneReadReserve) == 0ms);         // the window has passed for everyone
  CHECK(pacer.pauses() == 2);

  RatePacer own(RatePacerOptions{.reserve = 5});  // the larger of the two reserves counts
  own.observe(allowed(6, unix_s(now) + 60), now);
  CHECK(own.before_request(now, 2) == 0ms);
  CHECK(own.before_request(now, 2) == 61000ms);
}

namespace {

const std::string kProjectId = "22b6fc9c-1849-45da-b103-52a3e3a6b4c1";
const std::string kApiKey = "plane_api_0123456789abcdef0123456789abcdef";

// One Plane API key, one pacer, two clients as the process wires them: the reads client (reconciler polling) keeps
// kPlaneReadReserve back, the writes client (the outbox) keeps nothing. The fake counts on the shared ManualClock,
// which each client's RecordingSleeper advances.
struct TwoClients {
  FakePlane plane;
  ManualClock clock;
  RecordingSleeper read_sleeper{clock}, write_sleeper{clock};
  TestLog log;
  RatePacer pacer;
  std::unique_ptr<HttpClient> read_http, write_http;
  std::unique_ptr<PlaneClient> reads, writes;
  ProjectSpec project;
  std::string item;

  TwoClients() {
    plane.add_project("acme", kProjectId, "SHOP");
    plane.set_api_key(kApiKey);
    plane.set_clock(&clock);
    plane.set_rate_limit(60, std::chrono::minutes(1));
    item = plane.add_work_item(kProjectId, {});
    auto options = [&](const char* name, int reserve) {
      HttpClientOptions o;
      o.name = name;
      o.base_url = plane.base_url();
      o.redact = {Secret(kApiKey)};
      o.pacer = &pacer;
      o.pacer_reserve = reserve;
      return o;
    };
    read_http = std::make_unique<HttpClient>(options("plane", kPlaneReadReserve), read_sleeper, clock, log.logger());
    write_http = std::make_unique<HttpClient>(options("plane-writes", 0), write_sleeper, clock, log.logger());
    reads = std::make_unique<PlaneClient>(*read_http, Secret(kApiKey));
    writes = std::make_unique<PlaneClient>(*write_http, Secret(kApiKey));
    project.name = "shop";
    project.plane_workspace = "acme";
    project.plane_project_id = kProjectId;
  }

  Status write(int n) {
    return writes->add_comment(project, item, "<p>step " + std::to_string(n) + "</p>", "e" + std::to_string(n));
  }
};

}  // namespace

TEST_CASE("rate pacing over HTTP: with 5 requests left the reads wait for the window and the writes go at once") {
  TwoClients f;
  for (int i = 0; i < 50; ++i) REQUIRE(f.reads->get_work_item(f.project, f.item).ok());
  CHECK(f.pacer.remaining() == 10);
  CHECK(f.read_sleeper.waits().empty());
  for (int i = 0; i < 5; ++i) REQUIRE(f.write(i).ok());
  CHECK(f.pacer.remaining() == 5);
  const TimePoint before = f.clock.now();
  REQUIRE(f.write(5).ok());  // goes at once
  CHECK(f.write_sleeper.waits().empty());
  CHECK(f.clock.now() == before);
  REQUIRE(f.reads->get_work_item(f.project, f.item).ok());  // waits for the window first
  REQUIRE(f.read_sleeper.waits().size() == 1);
  CHECK(f.read_sleeper.waits()[0] >= 60s);
  CHECK(f.read_sleeper.waits()[0] <= 61s);
  CHECK(f.plane.throttled() == 0);
  CHECK(f.plane.comments(f.item).size() == 6);
}

TEST_CASE(
    "rate pacing over HTTP: reads polling flat out and bursts of writes meet no 429 over minutes, and no write waits") {
  TwoClients f;
  const TimePoint started = f.clock.now();
  int writes = 0;
  // Four polls, then a job step's burst of three writes, 60 times. 60 = 8 * 7 + 4: without the reads' reserve the
  // 61st request of the first window is a write, and it would have to wait.
  for (int cycle = 0; cycle < 60; ++cycle) {
    for (int i = 0; i < 4; ++i) REQUIRE(f.reads->get_work_item(f.project, f.item).ok());
    for (int i = 0; i < 3; ++i) REQUIRE(f.write(writes++).ok());
  }
  CHECK(f.clock.now() - started >= 6min);  // 420 requests at 60 a minute
  CHECK(f.plane.throttled() == 0);
  CHECK(f.plane.max_requests_in_window(std::chrono::minutes(1)) <= 60);
  CHECK(f.write_sleeper.waits().empty());  // every write went at once; only the reads waited
  CHECK_FALSE(f.read_sleeper.waits().empty());
  CHECK(f.plane.comments(f.item).size() == static_cast<size_t>(writes));
}
