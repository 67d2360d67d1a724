#include "integrations/rate_pacer.h"

#include <doctest/doctest.h>

#include "integrations/http_client.h"
#include "tests/support/manual_clock.h"

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
