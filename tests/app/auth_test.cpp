#include "app/auth.h"

#include <doctest/doctest.h>

#include "tests/app/app_harness.h"

namespace orch {
namespace {

using namespace orch::testing;

httplib::Request with_auth(const std::string& value) {
  httplib::Request req;
  req.headers.emplace("Authorization", value);
  return req;
}

std::string basic(const std::string& user, const std::string& password) {
  return httplib::make_basic_authentication_header(user, password).second;
}

TEST_CASE("a bearer token or a basic-auth password is the presented credential, anything else is none") {
  CHECK(presented_token(with_auth("Bearer abc")) == "abc");
  CHECK(presented_token(with_auth("bearer  abc ")) == "abc");
  CHECK(presented_token(with_auth(basic("anyone", "pa:ss"))) == "pa:ss");
  CHECK(presented_token(with_auth(basic("", "tok"))) == "tok");
  CHECK(presented_token(with_auth("Basic !!!")) == "");
  CHECK(presented_token(with_auth("Token abc")) == "");
  CHECK(presented_token(httplib::Request{}) == "");
}

TEST_CASE("the admin token decides, and without one configured nobody gets in") {
  Secret token("t0ken");
  CHECK(authorize(with_auth("Bearer t0ken"), token) == AuthDecision::kAllowed);
  CHECK(authorize(with_auth(basic("x", "t0ken")), token) == AuthDecision::kAllowed);
  CHECK(authorize(with_auth("Bearer t0ke"), token) == AuthDecision::kWrong);
  CHECK(authorize(with_auth("Bearer t0kenn"), token) == AuthDecision::kWrong);
  CHECK(authorize(httplib::Request{}, token) == AuthDecision::kMissing);
  CHECK(authorize(with_auth("Bearer "), Secret()) == AuthDecision::kNotConfigured);
  CHECK(authorize(with_auth("Bearer anything"), Secret()) == AuthDecision::kNotConfigured);
  CHECK(constant_time_equal("a", "a"));
  CHECK_FALSE(constant_time_equal("a", "b"));
  CHECK_FALSE(constant_time_equal("", "a"));
}

struct Route {
  const char* method;
  const char* path;
};
const Route kProtected[] = {{"GET", "/queue"},
                            {"GET", "/queue.json"},
                            {"POST", "/admin/reconcile/enable"},
                            {"POST", "/admin/reconcile/disable"},
                            {"POST", "/admin/reconcile/disable?side=plane"},
                            {"POST", "/admin/deliveries/nope/replay"},
                            {"POST", "/admin/tasks/12345/retry"}};

httplib::Result call(httplib::Client& c, const Route& r, const httplib::Headers& h) {
  if (std::string(r.method) == "GET") return c.Get(r.path, h);
  return c.Post(r.path, h, "", "application/json");
}

TEST_CASE("every protected route refuses a missing or wrong token and accepts the right one as bearer or basic") {
  RunningApp app;
  app.start();
  auto c = app.client();
  for (const Route& r : kProtected) {
    CAPTURE(r.path);
    auto none = call(c, r, {});
    REQUIRE(none);
    CHECK(none->status == 401);
    CHECK(none->get_header_value("WWW-Authenticate") == R"(Basic realm="orch")");
    auto wrong = call(c, r, bearer("not-the-token"));
    REQUIRE(wrong);
    CHECK(wrong->status == 401);
    auto wrong_basic = call(c, r, {{"Authorization", basic("admin", "not-the-token")}});
    REQUIRE(wrong_basic);
    CHECK(wrong_basic->status == 401);
    auto right = call(c, r, admin());
    REQUIRE(right);
    CHECK(right->status != 401);
    CHECK(right->status != 503);
    auto right_basic = call(c, r, {{"Authorization", basic("whoever", kAdminToken)}});
    REQUIRE(right_basic);
    CHECK(right_basic->status != 401);
  }
  // A POST the browser marks as coming from another site is refused even with the credentials it holds.
  auto csrf = c.Post("/admin/reconcile/disable",
                     {{"Authorization", "Bearer " + std::string(kAdminToken)}, {"Sec-Fetch-Site", "cross-site"}}, "",
                     "application/json");
  REQUIRE(csrf);
  CHECK(csrf->status == 403);
  // The unknown delivery and task are answered as such once authenticated.
  CHECK(c.Post("/admin/deliveries/nope/replay", admin(), "", "application/json")->status == 404);
  CHECK(c.Post("/admin/tasks/12345/retry", admin(), "", "application/json")->status == 404);
  // Open routes stay open.
  CHECK(c.Get("/healthz")->status == 200);
  CHECK(c.Get("/metrics")->status == 200);
  auto ready = c.Get("/readyz");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  CHECK_FALSE(app.log().contains(kAdminToken));
}

TEST_CASE("without ORCH_ADMIN_TOKEN the protected routes are refused with 503, never opened") {
  RunningApp app(Env{{"ORCH_ADMIN_TOKEN", ""}});
  app.start();
  auto c = app.client();
  for (const Route& r : kProtected) {
    CAPTURE(r.path);
    auto res = call(c, r, bearer(""));
    REQUIRE(res);
    CHECK(res->status == 503);
    CHECK(res->body.find("ORCH_ADMIN_TOKEN") != std::string::npos);
    auto guess = call(c, r, bearer("anything"));
    REQUIRE(guess);
    CHECK(guess->status == 503);
  }
  CHECK(c.Get("/healthz")->status == 200);
}

TEST_CASE("with ORCH_METRICS_TOKEN set, /metrics needs it") {
  RunningApp app(Env{{"ORCH_METRICS_TOKEN", "metrics-tok"}});
  app.start();
  auto c = app.client();
  CHECK(c.Get("/metrics")->status == 401);
  CHECK(c.Get("/metrics", bearer("wrong"))->status == 401);
  CHECK(c.Get("/metrics", bearer(kAdminToken))->status == 401);
  CHECK(c.Get("/metrics", bearer("metrics-tok"))->status == 200);
}

}  // namespace
}  // namespace orch
