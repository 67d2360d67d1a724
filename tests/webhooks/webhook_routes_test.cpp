// Integration: the real HttpServer on loopback, signed payloads shaped like the references, the real store.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <mutex>
#include <utility>
#include <vector>
#include <thread>

#include "tests/support/temp_dir.h"
#include "tests/webhooks/webhook_harness.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

const std::string kSha = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";

void check_nothing_written(WebhookStack& s) {
  InboxCounts c = s.counts();
  CHECK(c.received == 0);
  CHECK(s.f.store->count_tasks().value() == 0);
}

}  // namespace

TEST_CASE("a signed Plane delivery is stored and answered 202, the same id again is answered 200 duplicate") {
  WebhookStack s;
  const std::string body = plane_issue_body(PlaneHook{});
  Reply r = s.plane(body, "5b0e7f0e-2f7c-4a0e-9d5e-0c1f3b2a9e11");
  CHECK(r.status == 202);
  CHECK(r.json() == nlohmann::json{{"delivery", "5b0e7f0e-2f7c-4a0e-9d5e-0c1f3b2a9e11"}});
  DeliveryRow row = s.delivery("5b0e7f0e-2f7c-4a0e-9d5e-0c1f3b2a9e11");
  CHECK(row.source == Source::kPlane);
  CHECK(row.event == "issue");
  CHECK(row.body == body);  // the raw bytes, as signed
  CHECK(row.status == DeliveryStatus::kPending);
  CHECK(row.received_at == s.f.clock.now());

  Reply dup = s.plane(body, "5b0e7f0e-2f7c-4a0e-9d5e-0c1f3b2a9e11");
  CHECK(dup.status == 200);
  CHECK(dup.json() == nlohmann::json{{"duplicate", true}});
  // Plane's retry after a timeout: a fresh delivery id, byte-identical body.
  Reply retry = s.plane(body, "0d6e9c1a-7b1f-4c55-8f8e-4d3c2b1a0f9e");
  CHECK(retry.status == 200);
  CHECK(retry.json() == nlohmann::json{{"duplicate", true}});
  CHECK(s.counts().received == 1);
}

TEST_CASE("Gitea deliveries are deduplicated by delivery id, X-Hub-Signature-256 alone is accepted") {
  WebhookStack s;
  const std::string body = gitea_push_body("orch/shop-42", kSha);
  CHECK(s.gitea(body, "f3c1a6d2-0000-4000-8000-000000000001", "push").status == 202);
  CHECK(s.gitea(body, "f3c1a6d2-0000-4000-8000-000000000001", "push").status == 200);
  // A manual redeliver: new id, same body: stored (Gitea bodies may repeat; its handlers are idempotent).
  CHECK(s.gitea(body, "f3c1a6d2-0000-4000-8000-000000000002", "push").status == 202);
  HeaderList hub = gitea_headers(body, "f3c1a6d2-0000-4000-8000-000000000003", "push");
  std::erase_if(hub, [](const auto& h) { return h.first == "X-Gitea-Signature"; });
  CHECK(post_to(s.server.port(), "/webhooks/gitea", hub, body).status == 202);
  // A sender older than X-Gitea-Event-Type: the coarse X-Gitea-Event is stored instead.
  const std::string review = gitea_pull_request_body(
      GiteaPr{12, "opened", "open", false, "orch/shop-42", kSha, "pull_request_review_approved"});
  HeaderList old = gitea_headers(review, "f3c1a6d2-0000-4000-8000-000000000004", "pull_request_review_approved");
  std::erase_if(old, [](const auto& h) { return h.first == "X-Gitea-Event-Type"; });
  CHECK(post_to(s.server.port(), "/webhooks/gitea", old, review).status == 202);
  CHECK(s.counts().received == 4);
  CHECK(s.delivery("f3c1a6d2-0000-4000-8000-000000000001").event == "push");
  CHECK(s.delivery("f3c1a6d2-0000-4000-8000-000000000004").event == "pull_request_approved");
}

TEST_CASE("a missing or invalid signature is refused with 401 and leaves no trace") {
  WebhookStack s;
  const std::string body = plane_issue_body(PlaneHook{});
  std::string altered = body;
  altered[altered.find("high")] = 'H';  // one byte
  CHECK(post_to(s.server.port(), "/webhooks/plane", plane_headers(body, "id-1"), altered).status == 401);
  CHECK(post_to(s.server.port(), "/webhooks/plane", plane_headers(body, "id-2", "wrong secret"), body).status == 401);
  HeaderList unsigned_headers = plane_headers(body, "id-3");
  std::erase_if(unsigned_headers, [](const auto& h) { return h.first == "X-Plane-Signature"; });
  Reply missing = post_to(s.server.port(), "/webhooks/plane", unsigned_headers, body);
  CHECK(missing.status == 401);
  CHECK(missing.json()["error"] == "missing X-Plane-Signature");

  const std::string gbody = gitea_status_body(kSha, "success");
  std::string galtered = gbody;
  galtered.back() = ' ';
  CHECK(post_to(s.server.port(), "/webhooks/gitea", gitea_headers(gbody, "g-1", "status"), galtered).status == 401);
  HeaderList wrong = gitea_headers(gbody, "g-2", "status", "not the secret");
  CHECK(post_to(s.server.port(), "/webhooks/gitea", wrong, gbody).status == 401);
  // What Gitea sends for a hook without a secret: empty signature, bare "sha256=".
  HeaderList empty = {{"X-Gitea-Delivery", "g-3"},
                      {"X-Gitea-Event-Type", "status"},
                      {"X-Gitea-Signature", ""},
                      {"X-Hub-Signature-256", "sha256="}};
  CHECK(post_to(s.server.port(), "/webhooks/gitea", empty, gbody).status == 401);
  check_nothing_written(s);
  CHECK(s.f.log.contains("refused a plane delivery: invalid signature (401)"));
  CHECK_FALSE(s.f.log.contains(kPlaneSecret));
  CHECK_FALSE(s.f.log.contains("id-1"));  // no header value in the log
}

TEST_CASE("oversized (413), malformed (400), wrong content type (415) and id-less (400) requests write nothing") {
  WebhookRouteOptions o;
  o.max_body_bytes = 4096;
  WebhookStack s(test_secrets(), o);
  const int port = s.server.port();

  std::string big = plane_issue_body(PlaneHook{});
  big.insert(big.size() - 1, ", \"padding\": \"" + std::string(5000, 'x') + "\"");
  Reply too_big = post_to(port, "/webhooks/plane", plane_headers(big, "big-1"), big);
  CHECK(too_big.status == 413);
  CHECK(too_big.json()["error"] == "body exceeds 4096 bytes");

  const std::string malformed = R"({"event": "issue", "action": })";
  Reply bad = post_to(port, "/webhooks/plane", plane_headers(malformed, "bad-1"), malformed);
  CHECK(bad.status == 400);
  CHECK(bad.json()["error"] == "malformed JSON");
  CHECK(bad.json()["byte"] == 30);  // the '}' where a value should be
  const std::string trailing = "{} x";
  CHECK(post_to(port, "/webhooks/plane", plane_headers(trailing, "bad-2"), trailing).status == 400);

  const std::string body = plane_issue_body(PlaneHook{});
  Reply form = post_to(port, "/webhooks/plane", plane_headers(body, "ct-1"), body, "application/x-www-form-urlencoded");
  CHECK(form.status == 415);
  CHECK(post_to(port, "/webhooks/plane", plane_headers(body, "ct-2"), body, "application/json; charset=utf-8").status ==
        202);  // a charset parameter is fine

  HeaderList no_id = plane_headers(body, "");
  Reply id_less = post_to(port, "/webhooks/plane", no_id, body);
  CHECK(id_less.status == 400);
  CHECK(id_less.json()["error"] == "missing or oversized X-Plane-Delivery header");
  HeaderList no_event = gitea_headers("{}", "g-9", "status");
  std::erase_if(no_event, [](const auto& h) { return h.first.find("Event") != std::string::npos; });
  CHECK(post_to(port, "/webhooks/gitea", no_event, "{}").status == 400);

  // Only the one good request is in the inbox.
  CHECK(s.counts().received == 1);
  // The connection is still usable after a refusal: a keep-alive client sends three requests in a row.
  httplib::Client client("127.0.0.1", port);
  client.set_keep_alive(true);
  httplib::Headers h;
  for (const auto& [k, v] : plane_headers(big, "ka-1")) h.emplace(k, v);
  CHECK(client.Post("/webhooks/plane", h, big, "application/json")->status == 413);
  h.clear();
  for (const auto& [k, v] : plane_headers(malformed, "ka-2")) h.emplace(k, v);
  CHECK(client.Post("/webhooks/plane", h, malformed, "application/json")->status == 400);
  PlaneHook other;
  other.priority = "low";
  const std::string good = plane_issue_body(other);
  h.clear();
  for (const auto& [k, v] : plane_headers(good, "ka-3")) h.emplace(k, v);
  CHECK(client.Post("/webhooks/plane", h, good, "application/json")->status == 202);
  CHECK(s.counts().received == 2);
}

TEST_CASE("a source without a secret is refused with 503 unless unsigned webhooks are explicitly allowed") {
  WebhookSecrets none;  // no secrets at all
  {
    WebhookStack s(none);
    CHECK(
        s.f.log.contains("warning webhooks: plane webhooks are refused (503) until ORCH_PLANE_WEBHOOK_SECRET is set"));
    const std::string body = plane_issue_body(PlaneHook{});
    Reply r = s.plane(body, "p-1");
    CHECK(r.status == 503);
    CHECK(r.json()["error"].get<std::string>().find("ORCH_PLANE_WEBHOOK_SECRET is not set") != std::string::npos);
    CHECK(s.gitea(gitea_push_body("b", kSha), "g-1", "push").status == 503);
    check_nothing_written(s);
  }
  WebhookSecrets open_gitea;
  open_gitea.plane = Secret(kPlaneSecret);
  open_gitea.allow_unsigned = true;
  WebhookStack s(open_gitea);
  CHECK(s.f.log.contains("warning webhooks: gitea webhooks are accepted UNSIGNED"));
  const std::string body = gitea_push_body("b", kSha);
  HeaderList unsigned_headers = {{"X-Gitea-Delivery", "g-2"}, {"X-Gitea-Event-Type", "push"}};
  CHECK(post_to(s.server.port(), "/webhooks/gitea", unsigned_headers, body).status == 202);
  // A source that has a secret is still verified.
  const std::string pbody = plane_issue_body(PlaneHook{});
  CHECK(post_to(s.server.port(), "/webhooks/plane", {{"X-Plane-Delivery", "p-2"}, {"X-Plane-Event", "issue"}}, pbody)
            .status == 401);
  CHECK(s.counts().received == 1);
}

TEST_CASE("Plane In Progress creates the task and its first job, again for an existing task changes nothing") {
  WebhookStack s;
  PlaneHook h;
  CHECK(s.plane(plane_issue_body(h), "d-1").status == 202);
  InboxPass pass = s.processor.run_once();
  CHECK(pass.handled == 1);
  auto task = s.task_of(h.work_item_id);
  REQUIRE(task);
  CHECK(task->work_item_key == "SHOP-42");
  CHECK(task->branch == "orch/shop-42");
  CHECK(task->stage == "analysis");
  CHECK(s.f.store->jobs_for_task(task->id).value().size() == 1);
  CHECK(s.delivery("d-1").status == DeliveryStatus::kHandled);

  PlaneHook ui = h;
  ui.field = "state_id";  // the same change seen from the web UI: another delivery, another body
  CHECK(s.plane(plane_issue_body(ui), "d-2").status == 202);
  s.processor.run_once();
  CHECK(s.delivery("d-2").status == DeliveryStatus::kHandled);
  CHECK(s.f.store->count_tasks().value() == 1);
  CHECK(s.f.store->jobs_for_task(task->id).value().size() == 1);
  CHECK(s.f.store->transitions_for_task(task->id).value().size() == 1);
}

TEST_CASE("Plane Approved advances a task in analysis, Rejected rolls it back with the reason") {
  WebhookStack s;
  TaskRow a = s.f.task_in("analysis", "SHOP-1");
  TaskRow b = s.f.task_in("analysis", "SHOP-2");
  PlaneHook approve;
  approve.work_item_id = a.work_item_id;
  approve.state = "Approved";
  PlaneHook reject;
  reject.work_item_id = b.work_item_id;
  reject.state = "Rejected";
  CHECK(s.plane(plane_issue_body(approve), "v-1").status == 202);
  CHECK(s.plane(plane_issue_body(reject), "v-2").status == 202);
  CHECK(s.processor.run_once().handled == 2);
  CHECK(s.f.reload(a.id).stage == "development");
  CHECK(s.f.store->jobs_for_task(a.id).value().back().agent == "developer");
  TaskRow back = s.f.reload(b.id);
  CHECK(back.stage == "analysis");
  CHECK(back.visit == b.visit + 1);
  CHECK(back.rejection_reason == "rejected in Plane");
  auto rows = s.f.store->transitions_for_task(b.id).value();
  CHECK(rows.back().cause == Cause::kWebhook);
}

TEST_CASE("Plane deliveries that are not ours are stored and marked ignored with a reason") {
  WebhookStack s;
  PlaneHook foreign;
  foreign.project = "00000000-1111-4222-8333-444444444444";
  PlaneHook priority;
  priority.field = "priority";
  priority.work_item_id = "another";
  CHECK(s.plane(plane_issue_body(foreign), "i-1").status == 202);
  CHECK(s.plane(plane_issue_body(priority), "i-2").status == 202);
  const std::string comment = R"({"event": "issue_comment", "action": "created", "data": {}})";
  HeaderList ch = plane_headers(comment, "i-3");
  for (auto& [k, v] : ch)
    if (k == "X-Plane-Event") v = "issue_comment";
  CHECK(post_to(s.server.port(), "/webhooks/plane", ch, comment).status == 202);
  InboxPass pass = s.processor.run_once();
  CHECK(pass.ignored == 3);
  CHECK(s.delivery("i-1").error == "unknown plane project 00000000-1111-4222-8333-444444444444");
  CHECK(s.delivery("i-2").error == "plane field 'priority' changed, not the state");
  CHECK(s.delivery("i-3").error == "plane event 'issue_comment' is not handled");
  CHECK(s.f.store->count_tasks().value() == 0);
}

TEST_CASE("Gitea push, PR, status and review deliveries carry a task from development to done") {
  WebhookStack s;
  TaskRow t = s.f.task_in("development", "SHOP-42");
  CHECK(s.gitea(gitea_push_body(t.branch, kSha), "g-push", "push").status == 202);
  GiteaPr opened;
  opened.head_ref = t.branch;
  CHECK(s.gitea(gitea_pull_request_body(opened), "g-pr", "pull_request").status == 202);
  s.f.gitea.set_branch(t.branch, kSha);
  s.f.gitea.set_status(kSha, CiState::kSuccess);
  CHECK(s.gitea(gitea_status_body(kSha, "success"), "g-status", "status").status == 202);
  s.processor.run_once();
  CHECK(s.delivery("g-push").status == DeliveryStatus::kHandled);
  CHECK(s.delivery("g-pr").status == DeliveryStatus::kHandled);
  CHECK(s.delivery("g-status").status == DeliveryStatus::kHandled);
  TaskRow review = s.f.reload(t.id);
  CHECK(review.stage == "review");
  CHECK(review.pr_number == 12);
  CHECK(review.head_sha == kSha);

  // Changes requested: back to development (a new developer job), then a new push and a synchronize.
  GiteaPr rejected = opened;
  rejected.review_type = "pull_request_review_rejected";
  CHECK(s.gitea(gitea_pull_request_body(rejected), "g-review-1", "pull_request_review_rejected").status == 202);
  s.processor.run_once();
  CHECK(s.f.reload(t.id).stage == "development");
  CHECK(s.f.reload(t.id).review_state == ReviewState::kChangesRequested);

  const std::string sha2 = "1111111111111111111111111111111111111111";
  GiteaPr sync = opened;
  sync.action = "synchronized";
  sync.head_sha = sha2;
  s.f.gitea.set_branch(t.branch, sha2);
  s.f.gitea.set_status(sha2, CiState::kSuccess);
  CHECK(s.gitea(gitea_pull_request_body(sync), "g-sync", "pull_request_sync").status == 202);
  s.processor.run_once();
  CHECK(s.f.reload(t.id).stage == "review");  // the synchronize made the gate look again: CI is green
  CHECK(s.f.reload(t.id).head_sha == sha2);

  GiteaPr approved = sync;
  approved.review_type = "pull_request_review_approved";
  s.f.gitea.set_pr(t.branch, PullRequestInfo{12, true, false, t.branch, sha2, "main", ""});
  s.f.gitea.set_approved(12, true);
  CHECK(s.gitea(gitea_pull_request_body(approved), "g-review-2", "pull_request_review_approved").status == 202);
  s.processor.run_once();
  TaskRow done = s.f.reload(t.id);
  CHECK(done.stage == "done");
  CHECK(done.review_state == ReviewState::kApproved);
  CHECK(s.counts().failed == 0);
}

TEST_CASE("a merged pull request closes the review, an unknown repository is ignored") {
  WebhookStack s;
  TaskRow t = s.f.task_in("review", "SHOP-42");
  GiteaPr merged;
  merged.head_ref = t.branch;
  merged.action = "closed";
  merged.state = "closed";
  merged.merged = true;
  s.f.gitea.set_pr(t.branch, PullRequestInfo{12, false, true, t.branch, merged.head_sha, "main", ""});
  CHECK(s.gitea(gitea_pull_request_body(merged), "m-1", "pull_request").status == 202);
  auto foreign = nlohmann::ordered_json::parse(gitea_status_body(kSha, "success"));
  foreign["repository"]["full_name"] = "someone/else";
  const std::string fbody = go_json_marshal_indent(foreign);
  CHECK(s.gitea(fbody, "m-2", "status").status == 202);
  s.processor.run_once();
  CHECK(s.f.reload(t.id).stage == "done");
  CHECK(s.f.reload(t.id).pr_state == PrState::kMerged);
  CHECK(s.delivery("m-2").status == DeliveryStatus::kIgnored);
  CHECK(s.delivery("m-2").error == "unknown gitea repository someone/else");
}

TEST_CASE("a failed delivery is replayed after the cause is fixed") {
  InboxProcessorOptions o;
  o.max_attempts = 1;  // fail at once
  WebhookStack s;
  InboxProcessor processor(*s.f.store, s.dispatcher, s.f.clock, s.f.log, o);
  s.f.task_in("development", "SHOP-1");
  TaskRow t = s.f.task_in("development", "SHOP-2");
  s.f.gitea.fail_with(Status{Code::kUnavailable, "gitea: 502 Bad Gateway"});
  CHECK(s.gitea(gitea_status_body(kSha, "success"), "r-1", "status").status == 202);
  CHECK(processor.run_once().failed == 1);
  DeliveryRow failed = s.delivery("r-1");
  CHECK(failed.status == DeliveryStatus::kFailed);
  CHECK(failed.error.find("502") != std::string::npos);

  s.f.gitea.fail_with(std::nullopt);
  s.f.gitea.set_pr(t.branch, PullRequestInfo{5, true, false, t.branch, kSha, "main", ""});
  s.f.gitea.set_branch(t.branch, kSha);
  s.f.gitea.set_status(kSha, CiState::kSuccess);
  auto replayed = processor.replay("r-1");
  REQUIRE(replayed.ok());
  CHECK(replayed->status == DeliveryStatus::kHandled);
  CHECK(s.delivery("r-1").status == DeliveryStatus::kHandled);
  CHECK(s.f.reload(t.id).stage == "review");
}

// What the committer reports through Telemetry; the rest of the seam is not under test here.
struct CommitLog final : Telemetry {
  void api_call(std::string_view, ApiOutcome, double) override {}
  void agent_run(std::string_view, std::string_view, AgentOutcome, double) override {}
  void delivery_handled(Source, std::string_view, DeliveryStatus, double) override {}
  void unblocked(std::string_view, std::string_view) override {}
  void reconcile_pass(std::string_view, double) override {}
  void delivery_refused(Source, std::string_view) override {}
  void inbox_commit(std::size_t deliveries, double seconds, double queued_seconds) override {
    std::lock_guard lock(mu);
    commits.emplace_back(deliveries, seconds);
    queued.push_back(queued_seconds);
  }
  std::mutex mu;
  std::vector<std::pair<std::size_t, double>> commits;
  std::vector<double> queued;  // per commit, the first delivery's wait in the queue
};

TEST_CASE(
    "the same start event delivered 50 times at once, under different ids and bodies, makes one task and one job") {
  CommitLog commit_log;
  WebhookRouteOptions options;
  options.telemetry = &commit_log;
  WebhookStack s(test_secrets(), options);
  s.processor.start();  // handling runs while deliveries still arrive
  std::atomic<int> accepted{0}, other{0};
  std::vector<std::thread> senders;
  for (int i = 0; i < 50; ++i)
    senders.emplace_back([&, i] {
      PlaneHook h;
      h.priority = "p" + std::to_string(i);  // a harmless field: digest dedup must not hide the race
      const std::string body = plane_issue_body(h);
      Reply r = s.plane(body, random_uuid4());
      if (r.status == 202) {
        ++accepted;
        s.processor.poke();
      } else {
        ++other;
        MESSAGE("status " << r.status << " " << r.body);
      }
    });
  for (auto& t : senders) t.join();
  CHECK(accepted == 50);
  CHECK(other == 0);
  {  // every acknowledged delivery was in exactly one reported commit, and each commit took time
    std::lock_guard lock(commit_log.mu);
    std::size_t written = 0;
    for (const auto& [deliveries, seconds] : commit_log.commits) {
      CHECK(deliveries >= 1);
      CHECK(seconds > 0);
      written += deliveries;
    }
    CHECK(written == 50);
  }
  CHECK(eventually(
      [&] {
        auto c = s.f.store->inbox_counts().value();
        return c.handled == 50 && c.pending == 0;
      },
      20s));
  s.processor.stop();
  CHECK(s.f.store->count_tasks().value() == 1);
  auto task = s.task_of(PlaneHook{}.work_item_id);
  REQUIRE(task);
  CHECK(task->branch == "orch/shop-42");
  CHECK(s.f.store->jobs_for_task(task->id).value().size() == 1);
  CHECK(s.f.store->transitions_for_task(task->id).value().size() == 1);
}

TEST_CASE("64 idle connections do not starve a real delivery") {
  WebhookStack s;
  std::vector<int> idle;
  for (int i = 0; i < 64; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(s.server.port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    if (i % 2 == 0) {
      const char partial[] = "POST /webhooks/plane HTTP/1.1\r\nHost: x\r\n";  // slow: headers never finish
      REQUIRE(::send(fd, partial, sizeof partial - 1, 0) > 0);
    }
    idle.push_back(fd);
  }
  const auto t0 = std::chrono::steady_clock::now();
  Reply r = s.plane(plane_issue_body(PlaneHook{}), "real-1");
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(r.status == 202);
  CHECK(took < 2s);  // well inside Gitea's 5 s delivery timeout
  for (int fd : idle) ::close(fd);
}

TEST_CASE("the route files a delivery under its project's lane, the same lane for Plane and Gitea") {
  WebhookRouteOptions o;
  o.lane_of = [](Source source, const std::string& key) -> std::string {
    if ((source == Source::kPlane && key == kPlaneProjectId) || (source == Source::kGitea && key == kRepo))
      return "project:shop";
    return std::string(source_name(source)) + ":" + key;
  };
  WebhookStack w(test_secrets(), o);
  REQUIRE(w.plane(plane_issue_body(PlaneHook{}), "p-1").status == 202);
  REQUIRE(w.gitea(gitea_status_body("abc", "success"), "g-1", "status").status == 202);
  PlaneHook other;
  other.project = "0c0c0c0c-0000-4000-8000-000000000000";
  REQUIRE(w.plane(plane_issue_body(other), "p-2").status == 202);
  CHECK(w.delivery("p-1").lane == "project:shop");
  CHECK(w.delivery("g-1").lane == "project:shop");
  CHECK(w.delivery("p-2").lane == "plane:0c0c0c0c-0000-4000-8000-000000000000");
  // A nested object named like the field does not confuse the scan: only the top-level data.project counts.
  const std::string tricky = R"({"event":"issue","x":{"data":{"project":"wrong"}},"data":{"state":{"project":"no"},)"
                             R"("project":")" +
                             kPlaneProjectId + R"("}})";
  REQUIRE(w.plane(tricky, "p-3").status == 202);
  CHECK(w.delivery("p-3").lane == "project:shop");
  // No project named at all: the lane says so rather than guessing.
  REQUIRE(w.plane(R"({"event":"issue"})", "p-4").status == 202);
  CHECK(w.delivery("p-4").lane == "plane:");
}

namespace {
// What Go's url.Values.Encode does to a value (QueryEscape): unreserved bytes stay, a space is '+', the rest %XX.
std::string go_query_escape(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
      out += static_cast<char>(c);
    else if (c == ' ')
      out += '+';
    else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}
}  // namespace

TEST_CASE("a Gitea status sent with the form content type is verified over its JSON, stored as it and handled") {
  // gitea.md §1.1/§1.3: body = payload=<urlencoded JSON>, both signatures over the decoded JSON. Gitea tries once:
  // a 415 here would lose the event for good.
  WebhookStack s;
  TaskRow t = s.f.task_in("development", "SHOP-42");
  s.f.gitea.set_branch(t.branch, kSha);
  s.f.gitea.set_status(kSha, CiState::kSuccess);
  REQUIRE(s.gitea(gitea_push_body(t.branch, kSha), "form-0", "push").status == 202);
  const std::string json_body = gitea_status_body(kSha, "success");
  const std::string form_body = "payload=" + go_query_escape(json_body);
  REQUIRE(form_body.find('{') == std::string::npos);  // really encoded
  const int port = s.server.port();
  Reply r = post_to(port, "/webhooks/gitea", gitea_headers(json_body, "form-1", "status"), form_body,
                    "application/x-www-form-urlencoded");
  CHECK(r.status == 202);
  CHECK(s.delivery("form-1").body == json_body);  // what the handlers read is the JSON, as for a JSON hook
  s.processor.run_once();
  CHECK(s.delivery("form-1").status == DeliveryStatus::kHandled);
  CHECK(s.f.reload(t.id).stage == "review");

  // Signed over the urlencoded body instead of the JSON: not what Gitea does, refused.
  Reply wrong = post_to(port, "/webhooks/gitea", gitea_headers(form_body, "form-2", "status"), form_body,
                        "application/x-www-form-urlencoded");
  CHECK(wrong.status == 401);
  // A form without a payload field, or with a broken escape: 400, nothing stored.
  Reply empty = post_to(port, "/webhooks/gitea", gitea_headers("", "form-3", "status"), "other=1",
                        "application/x-www-form-urlencoded");
  CHECK(empty.status == 400);
  CHECK(empty.json()["error"] == "the form body has no payload field");
  Reply broken = post_to(port, "/webhooks/gitea", gitea_headers("", "form-4", "status"), "payload=%7",
                         "application/x-www-form-urlencoded");
  CHECK(broken.status == 400);
  CHECK(broken.json()["error"] == "the form body's payload has a broken %-escape");
  // Plane never sends a form: still 415 there.
  const std::string pbody = plane_issue_body(PlaneHook{});
  CHECK(post_to(port, "/webhooks/plane", plane_headers(pbody, "form-5"), "payload=" + go_query_escape(pbody),
                "application/x-www-form-urlencoded")
            .status == 415);
  CHECK(s.counts().received == 2);  // the push and the form-encoded status
}

TEST_CASE("a 1.5 MiB Plane work item, its description three times over, is stored under the default body limit") {
  // Plane's issue webhook carries description_html, description_binary (base64 of the editor's document) and
  // description_stripped (plane.md, the issue payload). A long specification pasted into the description makes such
  // a body; a 413 would lose it until the reconciler's next pass, since Plane ignores the status code.
  WebhookStack s;  // the default WebhookRouteOptions, as `orch serve` uses without max_body_bytes in the config
  auto body_json = nlohmann::ordered_json::parse(plane_issue_body(PlaneHook{}));
  const std::string text(400 * 1024, 'a');
  body_json["data"]["description_html"] = "<p>" + text + "</p>";
  body_json["data"]["description_stripped"] = text;
  body_json["data"]["description_binary"] = std::string(560 * 1024, 'Q');  // base64 of a ~420 KiB Yjs document
  body_json["data"]["description"] = {{"type", "doc"}, {"content", text}};
  const std::string body = python_json_dumps(body_json);
  REQUIRE(body.size() > 1536 * 1024);
  REQUIRE(body.size() < 2 * 1024 * 1024);
  CHECK(WebhookRouteOptions{}.max_body_bytes == kDefaultMaxBodyBytes);
  Reply r = s.plane(body, "big-plane-1");
  CHECK(r.status == 202);
  CHECK(s.delivery("big-plane-1").body.size() == body.size());
}

TEST_CASE("every refusal is counted by source and reason, with its last message, and a stored delivery is not") {
  WebhookRouteOptions o;
  o.max_body_bytes = 4096;
  WebhookStack s(test_secrets(), o);
  const int port = s.server.port();
  const std::string body = plane_issue_body(PlaneHook{});
  CHECK(s.plane(body, "ok-1").status == 202);
  CHECK(post_to(port, "/webhooks/plane", plane_headers(body, "r-1", "wrong"), body).status == 401);
  CHECK(post_to(port, "/webhooks/plane", plane_headers(body, "r-2", "wrong"), body).status == 401);
  const std::string big(5000, ' ');
  CHECK(post_to(port, "/webhooks/plane", plane_headers(big, "r-3"), big).status == 413);
  CHECK(post_to(port, "/webhooks/gitea", gitea_headers("{}", "r-4", "push"), "{}", "text/plain").status == 415);
  CHECK(post_to(port, "/webhooks/gitea", gitea_headers("{", "r-5", "push"), "{").status == 400);
  auto rows = s.routes.refusals().rows();
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].source == Source::kPlane);
  CHECK(rows[0].reason == Refusal::kTooLarge);
  CHECK(rows[0].count == 1);
  CHECK(rows[0].last_error == "body exceeds 4096 bytes");
  CHECK(rows[1].source == Source::kPlane);
  CHECK(rows[1].reason == Refusal::kBadSignature);
  CHECK(rows[1].count == 2);
  CHECK(rows[1].last_at == s.f.clock.now());
  CHECK(rows[2].source == Source::kGitea);
  CHECK(rows[2].reason == Refusal::kUnsupportedMediaType);
  CHECK(rows[3].reason == Refusal::kMalformed);
  CHECK(rows[3].last_error == "malformed JSON at byte 2");
}

namespace {

// The names of this process's threads, from /proc (what `top -H` and bench/peer_once.sh show).
std::multiset<std::string> thread_names() {
  std::multiset<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::string comm = read_file(task.path() / "comm");
    if (!comm.empty() && comm.back() == '\n') comm.pop_back();
    names.insert(comm);
  }
  return names;
}

}  // namespace

TEST_CASE(
    "the group committer and the HTTP threads are named for what they do, and the committer thread ends with stop()") {
  WebhookStack s;
  const std::string body = plane_issue_body(PlaneHook{});
  REQUIRE(s.plane(body, "named-1").status == 202);
  std::multiset<std::string> names = thread_names();
  CHECK(names.count("inbox-commit") == 1);
  CHECK(names.count("http-accept") == 1);
  CHECK(names.count("http-worker") >= 1);
  s.routes.stop();
  CHECK(thread_names().count("inbox-commit") == 0);
}
