// tests/integrations/write_back_test.cpp: the outbox's Plane and Gitea channels end to end below the app: messages
// worded by WriteBackPlan, stored in a real SQLite outbox, claimed by an OutboxDrainer per channel and sent by the
// write-back senders over real HTTP to the fake Plane / Gitea (reference formats). Time is a ManualClock shared by
// the fakes, the clients' sleeper and the drainer, so a 30 s outage and Plane's 60-a-minute window pass at once.
#include "integrations/write_back_sender.h"

#include <doctest/doctest.h>

#include "engine/store/sqlite_store.h"
#include "engine/write_back.h"
#include "integrations/rate_pacer.h"
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

const std::string kProjectId = "22b6fc9c-1849-45da-b103-52a3e3a6b4c1";
const std::string kApiKey = "plane_api_0123456789abcdef0123456789abcdef";
const std::string kRepo = "acme/shop";

struct World {
  TempDir dir;
  ManualClock clock;
  RecordingSleeper sleeper{clock};
  TestLog log;
  FakePlane plane;
  FakeGitea gitea;
  std::unique_ptr<SqliteStore> store;
  Config config;
  RatePacer pacer;
  std::unique_ptr<HttpClient> plane_http, gitea_http;
  std::unique_ptr<PlaneClient> plane_client;
  std::unique_ptr<GiteaClient> gitea_client;
  std::unique_ptr<Pipeline> pipeline;
  std::unique_ptr<WriteBackPlan> plan;
  std::vector<std::string> learned;  // what the sender told the echo filter
  std::unique_ptr<PlaneWriteSender> plane_sender;
  std::unique_ptr<GiteaWriteSender> gitea_sender;
  std::unique_ptr<OutboxDrainer> plane_drainer, gitea_drainer;

  World() {
    plane.set_clock(&clock);
    plane.add_project("acme", kProjectId, "SHOP");
    plane.set_api_key(kApiKey);
    plane.add_state(kProjectId, "In Review", "started");
    plane.add_state(kProjectId, "Approved", "completed");
    plane.add_state(kProjectId, "Rejected", "cancelled");
    gitea.add_repo(kRepo);
    auto opened = SqliteStore::open(dir.file("orch.db"));
    REQUIRE(opened.ok());
    store = std::move(opened).value();
    ProjectSpec p;
    p.name = "shop";
    p.gitea_repo = kRepo;
    p.plane_workspace = "acme";
    p.plane_project_id = kProjectId;
    config.projects.push_back(p);
    StageSpec review;
    review.name = "review";
    review.agent = "reviewer";
    review.post_review = true;
    review.plane_state = "In Review";
    config.stages.push_back(review);
    config.plane_done_state = "Done";
    HttpClientOptions po;
    po.name = "plane";
    po.base_url = plane.base_url();
    po.redact = {Secret(kApiKey)};
    po.pacer = &pacer;
    plane_http = std::make_unique<HttpClient>(po, sleeper, clock, log.logger());
    plane_client = std::make_unique<PlaneClient>(*plane_http, Secret(kApiKey));
    HttpClientOptions go;
    go.name = "gitea";
    go.base_url = gitea.base_url();
    gitea_http = std::make_unique<HttpClient>(go, sleeper, clock, log.logger());
    gitea_client = std::make_unique<GiteaClient>(*gitea_http, Secret(""));
    pipeline = std::make_unique<Pipeline>(config);
    plan = std::make_unique<WriteBackPlan>(config, *pipeline,
                                           WriteBackOptions{true, "https://orch.example", gitea.base_url()});
    plane_sender = std::make_unique<PlaneWriteSender>(
        *plane_client, config, [this](const std::string& id) { learned.push_back(id); }, log.logger());
    gitea_sender = std::make_unique<GiteaWriteSender>(*gitea_client, *gitea_client, log.logger());
    OutboxOptions o;
    o.channel = std::string(kChannelPlane);
    plane_drainer = std::make_unique<OutboxDrainer>(*store, *plane_sender, clock, log.logger(), o);
    o.channel = std::string(kChannelGitea);
    gitea_drainer = std::make_unique<OutboxDrainer>(*store, *gitea_sender, clock, log.logger(), o);
  }

  TaskRow task(const std::string& work_item_id, TaskId id) const {
    TaskRow t;
    t.id = id;
    t.project = "shop";
    t.work_item_id = work_item_id;
    t.work_item_key = "SHOP-" + std::to_string(id);
    t.stage = "review";
    t.branch = "orch/shop-" + std::to_string(id);
    return t;
  }

  void store_all(const std::vector<OutboxMessage>& messages) {
    auto added = store->enqueue_messages(messages, clock.now());
    REQUIRE_MESSAGE(added.ok(), added.status().message);
  }

  // Drains both channels, a second of manual time apart, until nothing is pending (or the time is up).
  void drain_until_empty(std::chrono::seconds limit = std::chrono::hours(1)) {
    const TimePoint end = clock.now() + limit;
    while (clock.now() < end) {
      plane_drainer->drain_once();
      gitea_drainer->drain_once();
      if (store->channel_counts(std::string(kChannelPlane)).value().pending == 0 &&
          store->channel_counts(std::string(kChannelGitea)).value().pending == 0)
        return;
      clock.advance(1s);
    }
    FAIL("write-backs still pending after the time limit");
  }
};

std::vector<std::string> comment_ids(const std::vector<nlohmann::ordered_json>& comments) {
  std::vector<std::string> out;
  for (const auto& c : comments) out.push_back(c["external_id"].is_string() ? c["external_id"].get<std::string>() : "");
  return out;
}

}  // namespace

TEST_CASE("write-back: Plane down for 30 s and a comment whose answer is lost: every write lands once, in order") {
  World w;
  const std::string item = w.plane.add_work_item(kProjectId, {});
  const TaskRow t = w.task(item, 7);
  std::vector<OutboxMessage> messages = w.plan->ci_failed(t, "1111111111111111", "ci/build", "failure", "https://ci/1");
  for (auto more : {w.plan->review_verdict(t, 3, false, "ann"), w.plan->blocked(t, "review", "reviewer failed 3x"),
                    w.plan->ci_failed(t, "2222222222222222", "ci/test", "error", "")})
    messages.insert(messages.end(), more.begin(), more.end());
  TransitionRequest to_review{7, "development", "review", Cause::kAgent, "", std::nullopt, w.clock.now()};
  auto moves = w.plan->for_transition(t, to_review);
  messages.insert(messages.end(), moves.begin(), moves.end());
  w.store_all(messages);

  SUBCASE("Plane answers 500 for 30 s") { w.plane.fail_until(w.clock.now() + 30s, 500); }
  SUBCASE("Plane stores two comments and the client never hears back") { w.plane.store_then_drop_next_comments(2); }
  w.drain_until_empty();

  auto comments = w.plane.comments(item);
  REQUIRE(comments.size() == 4);
  CHECK(comment_ids(comments) == std::vector<std::string>{"7:0:ci_red:111111111111", "7:0:review_changes",
                                                          "7:0:blocked", "7:0:ci_red:222222222222"});
  for (const auto& c : comments) CHECK(c["external_source"] == "orch");
  CHECK(comments[0]["comment_html"].get<std::string>().find("ci/build reported failure") != std::string::npos);
  CHECK(comments[2]["comment_html"].get<std::string>().find("https://orch.example/queue") != std::string::npos);
  CHECK(w.plane.state_history(item) == std::vector<std::string>{"In Review"});
  CHECK(w.store->channel_counts(std::string(kChannelPlane)).value().sent == 5);
  CHECK(w.store->channel_counts(std::string(kChannelPlane)).value().failed == 0);
  CHECK(w.learned == std::vector<std::string>{FakePlane::kApiUserId});  // before the first write, once
}

TEST_CASE("write-back: a hostile summary and title arrive as text in Plane and in the Gitea review") {
  World w;
  const std::string item = w.plane.add_work_item(kProjectId, {});
  w.gitea.set_branch(kRepo, "orch/shop-9", "abababababababababababababababababababab");
  const std::int64_t pr = w.gitea.add_pull(kRepo, {.head_ref = "orch/shop-9"});
  TaskRow t = w.task(item, 9);
  t.work_item_key = "SHOP-9";
  t.title = "<img src=x onerror=alert(1)>";
  t.pr_number = pr;
  t.stage = "review";
  const std::string hostile = "<script>alert(1)</script> <img src=x onerror=alert(2)> *[x](javascript:alert(3))*";
  w.store_all(w.plan->agent_succeeded(t, hostile, std::string("APPROVED")));
  w.store_all(w.plan->blocked(t, "review", hostile));
  w.drain_until_empty();

  auto comments = w.plane.comments(item);
  REQUIRE(comments.size() == 1);  // the review stage is not human-gated: only the block is said in Plane
  const std::string html = comments[0]["comment_html"];
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("<img") == std::string::npos);
  CHECK(html.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  auto reviews = w.gitea.reviews(kRepo, pr);
  REQUIRE(reviews.size() == 1);
  CHECK(reviews[0].state == "APPROVED");
  CHECK(reviews[0].body.find("<script") == std::string::npos);
  CHECK(reviews[0].body.find("<img") == std::string::npos);
  CHECK(reviews[0].body.find("&lt;script&gt;") != std::string::npos);
  CHECK(reviews[0].body.find(review_marker("9:0:review")) != std::string::npos);
  auto statuses = w.gitea.status_history(kRepo, "abababababababababababababababababababab");
  REQUIRE(statuses.size() == 1);
  CHECK(statuses[0]["context"] == kPipelineStatusContext);
  CHECK(statuses[0]["status"] == "failure");
}

TEST_CASE("write-back: a review whose answer was lost is not posted again, and a refused verdict goes as a comment") {
  World w;
  w.gitea.set_branch(kRepo, "orch/shop-4", "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd");
  const std::int64_t pr = w.gitea.add_pull(kRepo, {.head_ref = "orch/shop-4", .user = "orch"});
  TaskRow t = w.task(w.plane.add_work_item(kProjectId, {}), 4);
  t.pr_number = pr;
  // The fake refuses a verdict on one's own PR (422), as Gitea does: the sender falls back to a COMMENT review.
  w.store_all(w.plan->agent_succeeded(t, "looks fine", std::string("APPROVED")));
  w.drain_until_empty();
  auto reviews = w.gitea.reviews(kRepo, pr);
  REQUIRE(reviews.size() == 1);
  CHECK(reviews[0].state == "COMMENT");
  CHECK(reviews[0].body.find("orch's verdict was APPROVED") != std::string::npos);
  // The same write again (a retry after a lost answer): the marker is found and nothing new is posted.
  const auto rows = w.store->messages(std::string(kChannelGitea), NotificationStatus::kSent, 10).value();
  REQUIRE(rows.size() == 1);
  CHECK(w.gitea_sender->send_row(rows[0]).status.ok());
  CHECK(w.gitea.reviews(kRepo, pr).size() == 1);
}

TEST_CASE("write-back: 50 items' writes and flat-out polling share Plane's budget: never over 60 a minute") {
  World w;
  w.plane.set_rate_limit(60, 1min);
  // The reads' client, as the reconciler's: it leaves the last kPlaneReadReserve requests of a window to the writes.
  HttpClientOptions ro;
  ro.name = "plane";
  ro.base_url = w.plane.base_url();
  ro.pacer = &w.pacer;
  ro.pacer_reserve = kPlaneReadReserve;
  HttpClient reads_http(ro, w.sleeper, w.clock, w.log.logger());
  PlaneClient reads(reads_http, Secret(kApiKey));
  ProjectSpec project = w.config.projects.front();
  for (int i = 1; i <= 50; ++i) {
    const TaskRow t = w.task(w.plane.add_work_item(kProjectId, {}), i);
    std::vector<OutboxMessage> m = w.plan->review_verdict(t, i, true, "ann");
    auto more = w.plan->blocked(t, "review", "reviewer failed");
    m.insert(m.end(), more.begin(), more.end());
    w.store_all(m);
  }
  // A few writes per drain, as the app's write-back thread ticks between the reconciler's polls.
  OutboxOptions few;
  few.channel = std::string(kChannelPlane);
  few.batch = 5;
  OutboxDrainer drainer(*w.store, *w.plane_sender, w.clock, w.log.logger(), few);
  const TimePoint start = w.clock.now();
  int polls = 0;
  while (w.store->channel_counts(std::string(kChannelPlane)).value().pending > 0 && w.clock.now() < start + 1h) {
    Status polled = reads.list_work_items(project, true, [](const WorkItem&, TrackerState) { return true; });
    CHECK_MESSAGE(polled.ok(), polled.message);
    ++polls;
    drainer.drain_once();
  }
  CHECK(w.store->channel_counts(std::string(kChannelPlane)).value().sent == 100);
  CHECK(polls > 10);  // the polling went on meanwhile, paced, not starved
  CHECK(w.plane.throttled() == 0);
  CHECK(w.plane.max_requests_in_window(1min) <= 60);
}

TEST_CASE("write-back: with a second Gitea user's token the agent's verdict is a review that meets pr_approved") {
  World w;
  w.gitea.set_token("orch-token");
  w.gitea.add_user_token("reviewer-token", "orch-reviewer");
  HttpClientOptions o;
  o.name = "gitea";
  o.base_url = w.gitea.base_url();
  HttpClient main_http(o, w.sleeper, w.clock, w.log.logger()), review_http(o, w.sleeper, w.clock, w.log.logger());
  GiteaClient main(main_http, Secret("orch-token")), reviewer(review_http, Secret("reviewer-token"));
  GiteaWriteSender sender(main, reviewer, w.log.logger());
  OutboxOptions go;
  go.channel = std::string(kChannelGitea);
  OutboxDrainer drainer(*w.store, sender, w.clock, w.log.logger(), go);

  w.gitea.set_branch(kRepo, "orch/shop-5", "efefefefefefefefefefefefefefefefefefefef");
  const std::int64_t pr = w.gitea.add_pull(kRepo, {.head_ref = "orch/shop-5", .user = "orch"});  // orch opened it
  TaskRow t = w.task(w.plane.add_work_item(kProjectId, {}), 5);
  t.pr_number = pr;
  CHECK_FALSE(main.pull_request_approved(kRepo, pr).value());
  w.store_all(w.plan->agent_succeeded(t, "LGTM: tests cover the change", std::string("APPROVED")));
  CHECK(drainer.drain_once() == 1);
  auto reviews = w.gitea.reviews(kRepo, pr);
  REQUIRE(reviews.size() == 1);
  CHECK(reviews[0].user == "orch-reviewer");
  CHECK(reviews[0].state == "APPROVED");
  CHECK(main.pull_request_approved(kRepo, pr).value());  // the review stage's gate can now be met by the agent
}
