#include "integrations/gitea_client.h"

#include <doctest/doctest.h>

#include "engine/gates.h"
#include "tests/fakes/fake_gitea.h"
#include "tests/fakes/recording_sleeper.h"
#include "tests/support/manual_clock.h"
#include "tests/support/pipelines.h"
#include "tests/support/table_facts.h"
#include "tests/support/test_log.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

const std::string kToken = "gitea-token-7f3a9c0e5b2d4f6a8c1e3b5d7f9a0c2e";
const std::string kRepo = "acme/shop";
const std::string kShaA = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";
const std::string kShaB = "3a1f0c6e9d2b4e7f8a9b0c1d2e3f4a5b6c7d8e9f";
const std::string kShaMain = "1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e";

struct Fixture {
  FakeGitea gitea;
  ManualClock clock;
  RecordingSleeper sleeper{clock};
  TestLog log;
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<GiteaClient> client;

  explicit Fixture(GiteaClientOptions options = {}) {
    gitea.set_token(kToken);
    gitea.set_branch(kRepo, "main", kShaMain);
    HttpClientOptions o;
    o.name = "gitea";
    o.base_url = gitea.base_url();
    o.redact = {Secret(kToken)};
    http = std::make_unique<HttpClient>(o, sleeper, clock, log.logger());
    client = std::make_unique<GiteaClient>(*http, Secret(kToken), options);
  }
};

}  // namespace

TEST_CASE("combine_ci_states follows Gitea 1.27: failure wins, green needs every context, none is pending") {
  CHECK(combine_ci_states({}) == CiState::kPending);
  CHECK(combine_ci_states({"success"}) == CiState::kSuccess);
  CHECK(combine_ci_states({"success", "skipped"}) == CiState::kSuccess);
  CHECK(combine_ci_states({"success", "pending"}) == CiState::kPending);
  CHECK(combine_ci_states({"success", "warning"}) == CiState::kFailure);
  CHECK(combine_ci_states({"pending", "error"}) == CiState::kFailure);
  CHECK(combine_ci_states({"failure"}) == CiState::kFailure);
  CHECK(combine_ci_states({"success", ""}) == CiState::kPending);
}

TEST_CASE("combined_status computes the state from the per-context statuses of a sha or a branch") {
  Fixture f;
  f.gitea.set_branch(kRepo, "orch/shop-42", kShaA);
  SUBCASE("no statuses at all (statuses: null) is pending") {
    CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kPending);
  }
  SUBCASE("all green") {
    f.gitea.add_status(kRepo, kShaA, "ci/build", "success");
    f.gitea.add_status(kRepo, kShaA, "ci/lint", "skipped");
    CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kSuccess);
    CHECK(f.client->combined_status(kRepo, "orch/shop-42").value() == CiState::kSuccess);  // by branch
  }
  SUBCASE("a later status for a context supersedes the earlier one") {
    f.gitea.add_status(kRepo, kShaA, "ci/build", "failure");
    f.gitea.add_status(kRepo, kShaA, "ci/build", "success");
    CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kSuccess);
  }
  SUBCASE("a warning is a failure") {
    f.gitea.add_status(kRepo, kShaA, "ci/build", "success");
    f.gitea.add_status(kRepo, kShaA, "ci/cov", "warning");
    CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kFailure);
  }
  SUBCASE("one pending keeps it pending") {
    f.gitea.add_status(kRepo, kShaA, "ci/build", "success");
    f.gitea.add_status(kRepo, kShaA, "ci/e2e", "pending");
    CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kPending);
  }
  auto reqs = f.gitea.requests_to("/status");
  REQUIRE_FALSE(reqs.empty());
  CHECK(reqs[0].path == "/api/v1/repos/acme/shop/commits/" + kShaA + "/status");
  CHECK(reqs[0].param("limit") == "50");
  CHECK(reqs[0].header("Authorization") == "token " + kToken);
}

TEST_CASE("combined_status pages through more contexts than one page holds") {
  Fixture f;
  for (int i = 0; i < 120; ++i) f.gitea.add_status(kRepo, kShaA, "ctx/" + std::to_string(1000 + i), "success");
  CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kSuccess);
  CHECK(f.gitea.requests_to("/status").size() == 3);
  f.gitea.add_status(kRepo, kShaA, "ctx/9999", "failure");  // sorts last: only on the third page
  CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kFailure);
}

TEST_CASE("combined_status of an unknown ref is kNotFound — a malformed answer is an error value") {
  Fixture f;
  CHECK(f.client->combined_status(kRepo, "no-such-branch").status().code == Code::kNotFound);
  f.gitea.fail_next(1, 200, "{\"state\": \"success\", \"statuses\": [");
  auto r = f.client->combined_status(kRepo, kShaMain);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message.find("not JSON") != std::string::npos);
  CHECK(f.client->combined_status("not-a-repo", kShaA).status().code == Code::kInvalid);
}

TEST_CASE("branch_head reads commit.id — a branch name keeps its slashes") {
  Fixture f;
  f.gitea.set_branch(kRepo, "orch/shop-42", kShaA);
  CHECK(f.client->branch_head(kRepo, "orch/shop-42").value() == kShaA);
  CHECK(f.gitea.requests().back().path == "/api/v1/repos/acme/shop/branches/orch/shop-42");
  CHECK(f.client->branch_head(kRepo, "gone").status().code == Code::kNotFound);
}

TEST_CASE("open_pull_requests asks for state=open and pages through them") {
  Fixture f;
  for (int i = 0; i < 120; ++i) f.gitea.add_pull(kRepo, {.head_ref = "b" + std::to_string(i), .head_sha = kShaA});
  for (int i = 0; i < 10; ++i)
    f.gitea.add_pull(kRepo, {.head_ref = "c" + std::to_string(i), .head_sha = kShaB, .state = "closed"});
  auto prs = f.client->open_pull_requests(kRepo);
  REQUIRE(prs.ok());
  CHECK(prs.value().size() == 120);
  for (const auto& pr : prs.value()) CHECK(pr.open);
  auto reqs = f.gitea.requests_to("/pulls");
  REQUIRE(reqs.size() == 3);
  for (size_t i = 0; i < reqs.size(); ++i) {
    CHECK(reqs[i].param("state") == "open");
    CHECK(reqs[i].param("page") == std::to_string(i + 1));
  }
}

TEST_CASE("pull_request_for_branch prefers the open PR, then the newest closed or merged one") {
  Fixture f;
  f.gitea.set_branch(kRepo, "orch/shop-1", kShaA);
  f.gitea.set_branch(kRepo, "orch/shop-2", kShaB);
  f.gitea.add_pull(kRepo, {.head_ref = "orch/shop-1", .state = "closed"});
  std::int64_t open = f.gitea.add_pull(kRepo, {.head_ref = "orch/shop-1"});
  std::int64_t merged = f.gitea.add_pull(
      kRepo, {.head_ref = "orch/shop-2", .state = "closed", .merged = true, .head_branch_deleted = true});

  auto a = f.client->pull_request_for_branch(kRepo, "orch/shop-1");
  REQUIRE(a.ok());
  REQUIRE(a.value().has_value());
  CHECK(a.value()->number == open);
  CHECK(a.value()->open);
  CHECK(a.value()->head_sha == kShaA);
  CHECK(a.value()->base_ref == "main");

  f.gitea.clear_requests();
  auto b = f.client->pull_request_for_branch(kRepo, "orch/shop-2");
  REQUIRE(b.ok());
  REQUIRE(b.value().has_value());
  CHECK(b.value()->number == merged);
  CHECK(b.value()->merged);
  CHECK_FALSE(b.value()->open);
  CHECK(b.value()->head_ref == "orch/shop-2");  // not refs/pull/N/head
  auto reqs = f.gitea.requests_to("/pulls");
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[1].param("state") == "all");

  auto none = f.client->pull_request_for_branch(kRepo, "orch/never");
  REQUIRE(none.ok());
  CHECK_FALSE(none.value().has_value());
}

TEST_CASE("pull_request_approved counts each reviewer's latest verdict") {
  Fixture f;
  auto pr = [&] { return f.gitea.add_pull(kRepo, {.head_ref = "x", .head_sha = kShaA}); };
  auto approved = [&](std::int64_t n) { return f.client->pull_request_approved(kRepo, n).value(); };

  std::int64_t none = pr();
  CHECK_FALSE(approved(none));

  std::int64_t one = pr();
  f.gitea.add_review(kRepo, one, {.user = "bob", .state = "APPROVED"});
  CHECK(approved(one));

  std::int64_t blocked = pr();
  f.gitea.add_review(kRepo, blocked, {.user = "bob", .state = "APPROVED"});
  f.gitea.add_review(kRepo, blocked, {.user = "eve", .state = "REQUEST_CHANGES"});
  CHECK_FALSE(approved(blocked));

  std::int64_t changed_mind = pr();
  f.gitea.add_review(kRepo, changed_mind, {.user = "eve", .state = "REQUEST_CHANGES"});
  f.gitea.add_review(kRepo, changed_mind, {.user = "eve", .state = "APPROVED"});
  CHECK(approved(changed_mind));

  std::int64_t dismissed = pr();
  f.gitea.add_review(kRepo, dismissed, {.user = "bob", .state = "APPROVED", .dismissed = true});
  CHECK_FALSE(approved(dismissed));

  std::int64_t noise = pr();
  f.gitea.add_review(kRepo, noise, {.user = "bob", .state = "APPROVED"});
  f.gitea.add_review(kRepo, noise, {.user = "bob", .state = "COMMENT"});
  f.gitea.add_review(kRepo, noise, {.user = "bob", .state = "PENDING"});
  f.gitea.add_review(kRepo, noise, {.user = "carol", .state = "REQUEST_REVIEW"});
  CHECK(approved(noise));

  CHECK(f.client->pull_request_approved(kRepo, 999).status().code == Code::kNotFound);
}

TEST_CASE("create_pull_request creates, and on 409 adopts the open PR for that head") {
  Fixture f;
  f.gitea.set_branch(kRepo, "orch/shop-42", kShaA);
  auto created = f.client->create_pull_request(kRepo, "orch/shop-42", "main", "SHOP-42: Fix login", "body");
  REQUIRE(created.ok());
  CHECK(created.value().open);
  CHECK(created.value().head_ref == "orch/shop-42");
  CHECK(created.value().head_sha == kShaA);
  auto post = f.gitea.requests_to("/pulls").at(0);
  CHECK(post.method == "POST");
  auto body = nlohmann::json::parse(post.body);
  CHECK(body["head"] == "orch/shop-42");
  CHECK(body["base"] == "main");
  CHECK(body["title"] == "SHOP-42: Fix login");

  auto again = f.client->create_pull_request(kRepo, "orch/shop-42", "main", "SHOP-42: Fix login", "body");
  REQUIRE(again.ok());
  CHECK(again.value().number == created.value().number);
  CHECK(f.gitea.pulls(kRepo).size() == 1);

  CHECK(f.client->create_pull_request(kRepo, "no-branch", "main", "t", "").status().code == Code::kNotFound);
}

TEST_CASE("a Gitea 5xx is retried — a bad token is kInvalid and never shown") {
  Fixture f;
  f.gitea.fail_next(2, 503);
  CHECK(f.client->branch_head(kRepo, "main").value() == kShaMain);
  CHECK(f.sleeper.waits().size() == 2);
  f.gitea.set_token("another-token");
  auto r = f.client->branch_head(kRepo, "main");
  CHECK(r.status().code == Code::kInvalid);
  CHECK(r.status().message.find("401") != std::string::npos);
  CHECK(r.status().message.find(kToken) == std::string::npos);
  CHECK(f.log.all().find(kToken) == std::string::npos);
}

TEST_CASE("an approval made stale by a later push does not approve, a fresh one on the new head does") {
  Fixture f;
  f.gitea.set_branch(kRepo, "orch/shop-42", kShaA);
  std::int64_t n = f.gitea.add_pull(kRepo, {.head_ref = "orch/shop-42", .head_sha = kShaA});
  f.gitea.add_review(kRepo, n, {.user = "bob", .state = "APPROVED"});
  REQUIRE(f.client->pull_request_approved(kRepo, n).value());
  // The developer agent pushes rework: Gitea marks bob's approval (on kShaA) stale.
  f.gitea.push_to_pull(kRepo, n, kShaB);
  CHECK_FALSE(f.client->pull_request_approved(kRepo, n).value());
  // Another reviewer's fresh approval of the new head counts again.
  f.gitea.add_review(kRepo, n, {.user = "carol", .state = "APPROVED"});
  CHECK(f.client->pull_request_approved(kRepo, n).value());
}

TEST_CASE("a stale approval stays ignored even with official_reviews_only = false") {
  Fixture f(GiteaClientOptions{.official_reviews_only = false});
  std::int64_t n = f.gitea.add_pull(kRepo, {.head_ref = "x", .head_sha = kShaA});
  f.gitea.add_review(kRepo, n, {.user = "bob", .state = "APPROVED", .stale = true});
  CHECK_FALSE(f.client->pull_request_approved(kRepo, n).value());
}

TEST_CASE("a change request still blocks after it went stale, as Gitea's own merge check has it") {
  Fixture f;
  std::int64_t n = f.gitea.add_pull(kRepo, {.head_ref = "x", .head_sha = kShaA});
  f.gitea.add_review(kRepo, n, {.user = "eve", .state = "REQUEST_CHANGES"});
  f.gitea.push_to_pull(kRepo, n, kShaB);
  f.gitea.add_review(kRepo, n, {.user = "bob", .state = "APPROVED"});
  CHECK_FALSE(f.client->pull_request_approved(kRepo, n).value());
}

TEST_CASE("a non-official approval does not approve by default, and does with official_reviews_only = false") {
  SUBCASE("default: official reviews only") {
    Fixture f;
    std::int64_t n = f.gitea.add_pull(kRepo, {.head_ref = "x", .head_sha = kShaA});
    f.gitea.add_review(kRepo, n, {.user = "mallory", .state = "APPROVED", .official = false});
    CHECK_FALSE(f.client->pull_request_approved(kRepo, n).value());
    f.gitea.add_review(kRepo, n, {.user = "bob", .state = "APPROVED"});  // official
    CHECK(f.client->pull_request_approved(kRepo, n).value());
  }
  SUBCASE("official_reviews_only = false") {
    Fixture f(GiteaClientOptions{.official_reviews_only = false});
    std::int64_t n = f.gitea.add_pull(kRepo, {.head_ref = "x", .head_sha = kShaA});
    f.gitea.add_review(kRepo, n, {.user = "mallory", .state = "APPROVED", .official = false});
    CHECK(f.client->pull_request_approved(kRepo, n).value());
  }
}

TEST_CASE("fake Gitea lists reviews with commit_id, stale and official as Gitea does") {
  Fixture f;
  std::int64_t n = f.gitea.add_pull(kRepo, {.head_ref = "x", .head_sha = kShaA});
  f.gitea.add_review(kRepo, n, {.user = "bob", .state = "APPROVED"});
  f.gitea.add_review(kRepo, n, {.user = "ann", .state = "COMMENT"});
  f.gitea.push_to_pull(kRepo, n, kShaB);
  httplib::Client c("127.0.0.1", f.gitea.port());
  auto res = c.Get("/api/v1/repos/acme/shop/pulls/" + std::to_string(n) + "/reviews",
                   httplib::Headers{{"Authorization", "token " + kToken}});
  REQUIRE(res);
  auto j = nlohmann::json::parse(res->body);
  REQUIRE(j.size() == 2);
  CHECK(j[0]["commit_id"] == kShaA);
  CHECK(j[0]["stale"] == true);
  CHECK(j[0]["official"] == true);
  CHECK(j[1]["official"] == false);  // a COMMENT review is not official
}

TEST_CASE("the review stage's gate over the real client: a stale approval leaves pr_approved red, so no advance") {
  Fixture f;
  Config config = default_config();
  TableTracker tracker;
  TableRunner runner;
  DataLayout layout("/nonexistent-orch-data");
  GateEvaluator gates(config, *f.client, tracker, runner, layout);
  const StageSpec* review = nullptr;
  for (const auto& st : config.stages)
    if (st.name == "review") review = &st;
  REQUIRE(review);
  const GateSpec& review_gate = *review->gate;  // any(pr_approved, pr_merged)
  TaskRow t;
  t.project = "shop";
  t.work_item_key = "SHOP-42";
  t.stage = "review";
  t.branch = "orch/shop-42";
  f.gitea.set_branch(kRepo, t.branch, kShaA);
  std::int64_t n = f.gitea.add_pull(kRepo, {.head_ref = t.branch, .head_sha = kShaA});
  f.gitea.add_review(kRepo, n, {.user = "bob", .state = "APPROVED"});
  REQUIRE(gates.evaluate(review_gate, t).value().green);
  f.gitea.push_to_pull(kRepo, n, kShaB);  // rework after the approval
  auto after = gates.evaluate(review_gate, t);
  REQUIRE(after.ok());
  CHECK_FALSE(after.value().green);
  CHECK(after.value().why.find("not approved") != std::string::npos);
}

TEST_CASE(
    "create_review posts CreatePullReviewOptions and the fake records a fresh official review of the token's user") {
  Fixture f;
  f.gitea.set_branch(kRepo, "orch/shop-42", kShaA);
  std::int64_t n = f.gitea.add_pull(kRepo, {.head_ref = "orch/shop-42", .user = "dev"});
  REQUIRE(f.client->create_review(kRepo, n, "APPROVED", "orch: checks passed").ok());
  auto posts = f.gitea.requests_to("/pulls/" + std::to_string(n) + "/reviews");
  REQUIRE(posts.size() == 1);
  CHECK(posts[0].method == "POST");
  CHECK(posts[0].path == "/api/v1/repos/acme/shop/pulls/" + std::to_string(n) + "/reviews");
  CHECK(posts[0].header("Authorization") == "token " + kToken);
  CHECK(nlohmann::json::parse(posts[0].body) ==
        nlohmann::json{{"event", "APPROVED"}, {"body", "orch: checks passed"}, {"commit_id", ""}});
  auto reviews = f.gitea.reviews(kRepo, n);
  REQUIRE(reviews.size() == 1);
  CHECK(reviews[0].user == "orch");
  CHECK(reviews[0].state == "APPROVED");
  CHECK(reviews[0].official == true);
  CHECK_FALSE(reviews[0].stale);
  CHECK(reviews[0].commit_id == kShaA);                      // no commit_id sent: Gitea takes the PR head
  CHECK(f.client->pull_request_approved(kRepo, n).value());  // the read side sees it as any approval

  f.gitea.set_api_user("orch-reviewer");
  REQUIRE(f.client->create_review(kRepo, n, "REQUEST_CHANGES", "tests fail", kShaA).ok());
  CHECK(nlohmann::json::parse(f.gitea.requests_to("/reviews").back().body)["commit_id"] == kShaA);
  CHECK(f.gitea.reviews(kRepo, n).back().user == "orch-reviewer");
  CHECK_FALSE(f.client->pull_request_approved(kRepo, n).value());
  REQUIRE(f.client->create_review(kRepo, n, "COMMENT", "a note").ok());
  CHECK(f.gitea.reviews(kRepo, n).back().official == false);  // a COMMENT is never official
}

TEST_CASE("create_review: a bad event sends nothing, Gitea's refusals are kInvalid, a 5xx is not retried") {
  Fixture f;
  f.gitea.set_branch(kRepo, "orch/shop-42", kShaA);
  std::int64_t own = f.gitea.add_pull(kRepo, {.head_ref = "orch/shop-42", .user = "orch"});
  std::int64_t other = f.gitea.add_pull(kRepo, {.head_ref = "orch/shop-42", .base_ref = "dev", .user = "dev"});

  CHECK(f.client->create_review(kRepo, other, "APPROVE", "x").code == Code::kInvalid);  // GitHub's word, not Gitea's
  CHECK(f.client->create_review(kRepo, other, "PENDING", "x").code == Code::kInvalid);
  CHECK(f.gitea.requests_to("/reviews").empty());

  Status self = f.client->create_review(kRepo, own, "APPROVED", "");
  CHECK(self.code == Code::kInvalid);
  CHECK(self.message.find("approve your own pull is not allowed") != std::string::npos);
  CHECK(f.client->create_review(kRepo, other, "REQUEST_CHANGES", "  ").code == Code::kInvalid);  // needs a body
  CHECK(f.client->create_review(kRepo, 999, "COMMENT", "x").code == Code::kInvalid);             // 404
  CHECK(f.gitea.reviews(kRepo, other).empty());

  const size_t posted = f.gitea.requests_to("/reviews").size();
  f.gitea.fail_next(1, 502);
  Status lost = f.client->create_review(kRepo, other, "APPROVED", "ok");
  CHECK(lost.code == Code::kUnavailable);
  CHECK(f.gitea.requests_to("/reviews").size() == posted + 1);  // not retried
  CHECK(f.sleeper.waits().empty());

  Fault throttle;
  throttle.status = 429;
  throttle.headers = {{"Retry-After", "2"}};
  throttle.path_contains = "/reviews";
  f.gitea.inject(throttle);
  REQUIRE(f.client->create_review(kRepo, other, "APPROVED", "ok").ok());  // a 429 surely was not processed
  CHECK(f.sleeper.waits() == std::vector<Millis>{2000ms});
  CHECK(f.gitea.reviews(kRepo, other).size() == 1);
}

TEST_CASE("set_commit_status posts CreateStatusOption, the combined status sees it, and a 5xx is retried") {
  Fixture f;
  f.gitea.set_branch(kRepo, "orch/shop-42", kShaA);
  f.gitea.add_status(kRepo, kShaA, "ci/build", "success");
  REQUIRE(f.client
              ->set_commit_status(kRepo, kShaA, "pending", "orch/review", "waiting for a reviewer",
                                  "https://orch.example.com/queue")
              .ok());
  auto posts = f.gitea.requests_to("/statuses/");
  REQUIRE(posts.size() == 1);
  CHECK(posts[0].method == "POST");
  CHECK(posts[0].path == "/api/v1/repos/acme/shop/statuses/" + kShaA);
  CHECK(nlohmann::json::parse(posts[0].body) == nlohmann::json{{"state", "pending"},
                                                               {"target_url", "https://orch.example.com/queue"},
                                                               {"description", "waiting for a reviewer"},
                                                               {"context", "orch/review"}});
  CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kPending);

  f.gitea.fail_next(1, 500);
  REQUIRE(f.client->set_commit_status(kRepo, kShaA, "success", "orch/review", "approved", "").ok());
  CHECK(f.gitea.requests_to("/statuses/").size() == 3);  // the 500, then the retry
  CHECK(f.client->combined_status(kRepo, "orch/shop-42").value() == CiState::kSuccess);

  auto history = f.gitea.status_history(kRepo, kShaA);
  REQUIRE(history.size() == 3);
  CHECK(history[0]["context"] == "ci/build");
  CHECK(history[1]["status"] == "pending");
  CHECK(history[1]["description"] == "waiting for a reviewer");
  CHECK(history[1]["target_url"] == "https://orch.example.com/queue");
  CHECK(history[1]["creator"]["login"] == "orch");
  CHECK(history[2]["status"] == "success");
  CHECK(history[2]["target_url"] == "");
}

TEST_CASE("the combined status leaves out orch's own orch/pipeline status, so the ci_green gate sees CI only") {
  Fixture f;
  f.gitea.add_status(kRepo, kShaA, "ci/build", "success");
  REQUIRE(f.client->set_commit_status(kRepo, kShaA, "pending", "orch/pipeline", "in review", "").ok());
  CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kSuccess);  // counted, it would be pending
  REQUIRE(f.client->set_commit_status(kRepo, kShaA, "failure", "orch/pipeline", "blocked", "").ok());
  CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kSuccess);
  f.gitea.add_status(kRepo, kShaA, "ci/test", "failure");
  CHECK(f.client->combined_status(kRepo, kShaA).value() == CiState::kFailure);
}

TEST_CASE("set_commit_status: an unknown state sends nothing, and an unknown sha is Gitea's 500, kUnavailable") {
  Fixture f;
  f.gitea.set_branch(kRepo, "orch/shop-42", kShaA);
  CHECK(f.client->set_commit_status(kRepo, kShaA, "skipped", "orch/review", "", "").code == Code::kInvalid);
  CHECK(f.client->set_commit_status(kRepo, kShaA, "SUCCESS", "orch/review", "", "").code == Code::kInvalid);
  CHECK(f.client->set_commit_status(kRepo, "", "success", "orch/review", "", "").code == Code::kInvalid);
  CHECK(f.gitea.requests_to("/statuses/").empty());
  CHECK(f.client->set_commit_status(kRepo, kShaB, "success", "orch/review", "", "").code == Code::kUnavailable);
  CHECK(f.gitea.status_history(kRepo, kShaB).empty());
}
