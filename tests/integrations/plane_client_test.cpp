#include "integrations/plane_client.h"

#include <doctest/doctest.h>

#include "integrations/plane_html.h"
#include "integrations/rate_pacer.h"
#include "tests/fakes/fake_plane.h"
#include "tests/fakes/recording_sleeper.h"
#include "tests/support/manual_clock.h"
#include "tests/support/test_log.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

const std::string kProjectId = "22b6fc9c-1849-45da-b103-52a3e3a6b4c1";
const std::string kApiKey = "plane_api_0123456789abcdef0123456789abcdef";

struct Fixture {
  FakePlane plane;
  ManualClock clock;
  RecordingSleeper sleeper{clock};
  TestLog log;
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<PlaneClient> client;
  ProjectSpec project;
  std::string in_progress, approved, rejected, todo;

  explicit Fixture(bool with_rejected = true) {
    plane.add_project("acme", kProjectId, "SHOP");
    plane.set_api_key(kApiKey);
    in_progress = plane.state_id(kProjectId, "In Progress");
    todo = plane.state_id(kProjectId, "Todo");
    approved = plane.add_state(kProjectId, "Approved", "completed");
    if (with_rejected) rejected = plane.add_state(kProjectId, "Rejected", "cancelled");
    HttpClientOptions o;
    o.name = "plane";
    o.base_url = plane.base_url();
    o.redact = {Secret(kApiKey)};
    http = std::make_unique<HttpClient>(o, sleeper, clock, log.logger());
    client = std::make_unique<PlaneClient>(*http, Secret(kApiKey));
    project.name = "shop";
    project.plane_workspace = "acme";
    project.plane_project_id = kProjectId;
  }
};

}  // namespace

TEST_CASE("states are resolved by name from one listing per project, then cached") {
  Fixture f;
  CHECK(f.client->classify_state(f.project, f.in_progress).value() == TrackerState::kInProgress);
  CHECK(f.client->classify_state(f.project, f.approved).value() == TrackerState::kApproved);
  CHECK(f.client->classify_state(f.project, f.rejected).value() == TrackerState::kRejected);
  CHECK(f.client->classify_state(f.project, f.todo).value() == TrackerState::kOther);
  CHECK(f.client->classify_state(f.project, "").value() == TrackerState::kOther);
  auto reqs = f.plane.requests_to("/states/");
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].path == "/api/v1/workspaces/acme/projects/" + kProjectId + "/states/");
  CHECK(reqs[0].param("per_page") == "100");
  CHECK(reqs[0].header("X-API-Key") == kApiKey);
}

TEST_CASE("custom state names from the project spec are honoured") {
  Fixture f;
  std::string custom = f.plane.add_state(kProjectId, "Doing", "started");
  f.project.plane_states.in_progress = "Doing";
  CHECK(f.client->classify_state(f.project, custom).value() == TrackerState::kInProgress);
  CHECK(f.client->classify_state(f.project, f.in_progress).value() == TrackerState::kOther);
}

TEST_CASE("a missing state name is a clear kInvalid naming the project and the state") {
  Fixture f(/*with_rejected=*/false);
  auto r = f.client->classify_state(f.project, f.in_progress);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kInvalid);
  CHECK(r.status().message.find("'shop'") != std::string::npos);
  CHECK(r.status().message.find("'Rejected'") != std::string::npos);
  CHECK(r.status().message.find("In Progress") != std::string::npos);  // lists what exists
  Status s = f.client->list_work_items(f.project, true, [](const WorkItem&, TrackerState) { return true; });
  CHECK(s.code == Code::kInvalid);
}

TEST_CASE("2000 work items are listed over 20 pages of the same per_page, one page in memory at a time") {
  Fixture f;
  // Item i is updated at base + i s, so -updated_at lists it at position 1999 - i; every fourth is in Todo.
  const TimePoint base = kMonday9am;
  std::map<std::string, int> index_of;
  for (int i = 0; i < 2000; ++i) {
    PlaneWorkItemSeed seed;
    seed.name = "item " + std::to_string(i);
    seed.state_id = i % 4 == 3 ? f.todo : i % 4 == 0 ? f.in_progress : i % 4 == 1 ? f.approved : f.rejected;
    seed.created_at = base - 24h + std::chrono::seconds(2000 - i);
    seed.updated_at = base + std::chrono::seconds(i) + 250ms;
    index_of[f.plane.add_work_item(kProjectId, seed)] = i;
  }
  f.plane.clear_requests();
  int visited = 0;
  int last_index = 2000;
  bool lazily_paged = true;
  Status s = f.client->list_work_items(f.project, true, [&](const WorkItem& w, TrackerState st) {
    ++visited;
    int i = index_of.at(w.id);
    CHECK(i < last_index);  // newest updated first
    last_index = i;
    int page = (1999 - i) / 100;
    // The page holding this item is the last one fetched: nothing was read ahead.
    if (static_cast<int>(f.plane.requests_to("/work-items/").size()) != page + 1) lazily_paged = false;
    CHECK(st != TrackerState::kOther);
    CHECK(w.updated_at == base + std::chrono::seconds(i) + 250ms);
    CHECK(w.project_id == kProjectId);
    return true;
  });
  REQUIRE(s.ok());
  CHECK(visited == 1500);
  CHECK(lazily_paged);
  auto reqs = f.plane.requests_to("/work-items/");
  REQUIRE(reqs.size() == 20);
  for (size_t p = 0; p < reqs.size(); ++p) {
    CHECK(reqs[p].param("per_page") == "100");
    CHECK(reqs[p].param("order_by") == "-updated_at");
    CHECK(reqs[p].header("X-API-Key") == kApiKey);
    if (p == 0)
      CHECK_FALSE(reqs[p].has_param("cursor"));
    else
      CHECK(reqs[p].param("cursor") == "100:" + std::to_string(p) + ":0");
  }
  CHECK(f.plane.requests_to("/states/").size() == 1);
}

TEST_CASE("listing oldest-created-first asks for -created_at") {
  Fixture f;
  f.plane.add_work_item(kProjectId, {.state_id = f.in_progress});
  int visited = 0;
  REQUIRE(
      f.client->list_work_items(f.project, false, [&](const WorkItem&, TrackerState) { return ++visited, true; }).ok());
  CHECK(visited == 1);
  CHECK(f.plane.requests_to("/work-items/").at(0).param("order_by") == "-created_at");
}

TEST_CASE("the listing stops on next_page_results, even though next_cursor is still set") {
  Fixture f;
  for (int i = 0; i < 100; ++i) f.plane.add_work_item(kProjectId, {.state_id = f.in_progress});
  int visited = 0;
  REQUIRE(
      f.client->list_work_items(f.project, true, [&](const WorkItem&, TrackerState) { return ++visited, true; }).ok());
  CHECK(visited == 100);
  CHECK(f.plane.requests_to("/work-items/").size() == 1);  // exactly one full page: no empty follow-up
}

TEST_CASE("visit returning false stops the listing early") {
  Fixture f;
  for (int i = 0; i < 350; ++i) f.plane.add_work_item(kProjectId, {.state_id = f.approved});
  int visited = 0;
  REQUIRE(
      f.client->list_work_items(f.project, true, [&](const WorkItem&, TrackerState) { return ++visited < 5; }).ok());
  CHECK(visited == 5);
  CHECK(f.plane.requests_to("/work-items/").size() == 1);
}

TEST_CASE("a malformed page ends the listing with an error value") {
  Fixture f;
  for (int i = 0; i < 450; ++i) f.plane.add_work_item(kProjectId, {.state_id = f.in_progress});
  SUBCASE("not JSON") {
    Fault pass;
    pass.then_answer_normally = true;
    pass.path_contains = "/work-items/";
    f.plane.inject(pass, 2);
    Fault broken;
    broken.status = 200;
    broken.body = R"({"grouped_by": null, "results": [{"id": )";
    broken.path_contains = "/work-items/";
    f.plane.inject(broken);
    int visited = 0;
    Status s =
        f.client->list_work_items(f.project, true, [&](const WorkItem&, TrackerState) { return ++visited, true; });
    CHECK_FALSE(s.ok());
    CHECK(s.message.find("not JSON") != std::string::npos);
    CHECK(visited == 200);
  }
  SUBCASE("no results array") {
    Fault broken;
    broken.status = 200;
    broken.body = R"({"next_page_results": true, "next_cursor": "100:1:0"})";
    broken.path_contains = "/work-items/";
    f.plane.inject(broken);
    Status s = f.client->list_work_items(f.project, true, [&](const WorkItem&, TrackerState) { return true; });
    CHECK_FALSE(s.ok());
    CHECK(s.message.find("no results") != std::string::npos);
  }
}

TEST_CASE("a 429 in the middle of a listing is waited out per Retry-After and the listing completes") {
  Fixture f;
  for (int i = 0; i < 250; ++i) f.plane.add_work_item(kProjectId, {.state_id = f.rejected});
  REQUIRE(f.client->state_ids(f.project).ok());  // cached: the faults below meet the work-item pages only
  Fault pass;
  pass.then_answer_normally = true;
  pass.path_contains = "/work-items/";
  f.plane.inject(pass, 1);
  f.plane.rate_limit_next(1, 12);
  int visited = 0;
  REQUIRE(
      f.client->list_work_items(f.project, true, [&](const WorkItem&, TrackerState) { return ++visited, true; }).ok());
  CHECK(visited == 250);
  CHECK(f.sleeper.waits() == std::vector<Millis>{12000ms});
  auto reqs = f.plane.requests_to("/work-items/");
  REQUIRE(reqs.size() == 4);  // page 0, page 1 (429), page 1 again, page 2
  CHECK(reqs[1].param("cursor") == reqs[2].param("cursor"));
}

TEST_CASE("get_work_item reads one work item, its state a bare id") {
  Fixture f;
  std::string id = f.plane.add_work_item(
      kProjectId, {.name = "Fix <b>login</b>", .state_id = f.approved, .description_html = "<p>Steps</p>"});
  auto w = f.client->get_work_item(f.project, id);
  REQUIRE(w.ok());
  CHECK(w.value().id == id);
  CHECK(w.value().name == "Fix <b>login</b>");
  CHECK(w.value().state_id == f.approved);
  CHECK(w.value().description == "<p>Steps</p>");
  CHECK(w.value().sequence_id == 1);
  CHECK(f.plane.requests_to("/work-items/").at(0).path.back() == '/');
  auto missing = f.client->get_work_item(f.project, "00000000-0000-4000-8000-000000000000");
  CHECK(missing.status().code == Code::kNotFound);
}

TEST_CASE("a REST work item's updated_at may carry an offset and any fraction") {
  nlohmann::json j = {{"id", "x"}, {"state", "s"}, {"sequence_id", 42}, {"updated_at", "2026-11-23T14:30:00.5+05:30"}};
  auto w = parse_plane_work_item(j);
  REQUIRE(w.ok());
  CHECK(w.value().updated_at == kMonday9am + 500ms);
  j["updated_at"] = "2026-11-23T09:00:00Z";
  CHECK(parse_plane_work_item(j).value().updated_at == kMonday9am);
  j["state"] = {{"id", "s2"}, {"name", "In Progress"}};
  CHECK(parse_plane_work_item(j).value().state_id == "s2");
  CHECK_FALSE(parse_plane_work_item(nlohmann::json::array()).ok());
}

TEST_CASE("move_work_item PATCHes the resolved state id, with the trailing slash") {
  Fixture f;
  std::string id = f.plane.add_work_item(kProjectId, {.state_id = f.in_progress});
  REQUIRE(f.client->move_work_item(f.project, id, TrackerState::kApproved).ok());
  CHECK(f.plane.work_item(id).value()["state"] == f.approved);
  auto patches = f.plane.requests_to("/work-items/" + id + "/");
  REQUIRE(patches.size() == 1);
  CHECK(patches[0].method == "PATCH");
  CHECK(nlohmann::json::parse(patches[0].body) == nlohmann::json{{"state", f.approved}});
  CHECK(patches[0].header("Content-Type").find("application/json") != std::string::npos);
  CHECK(f.client->move_work_item(f.project, id, TrackerState::kOther).code == Code::kInvalid);
}

TEST_CASE("add_comment posts comment_html and is not retried after a 5xx") {
  Fixture f;
  std::string id = f.plane.add_work_item(kProjectId, {.state_id = f.in_progress});
  REQUIRE(f.client->add_comment(f.project, id, "<p>orch: analysis done</p>").ok());
  auto comments = f.plane.comments(id);
  REQUIRE(comments.size() == 1);
  CHECK(comments[0]["comment_html"] == "<p>orch: analysis done</p>");
  f.plane.fail_next(1, 500);
  CHECK(f.client->add_comment(f.project, id, "<p>again</p>").code == Code::kUnavailable);
  CHECK(f.plane.comments(id).size() == 1);
  CHECK(f.plane.requests_to("/comments/").size() == 2);
}

TEST_CASE(
    "plane comments: a marked comment carries external_source orch and its id, and a second one is a delivered 409") {
  Fixture f;
  const std::string item = f.plane.add_work_item(kProjectId, {.state_id = f.in_progress});
  const std::string html = text_to_comment_html("Analysis finished.\n\nMove the item to Approved or Rejected.");
  REQUIRE(f.client->add_comment(f.project, item, html, "7:31:analysis_done").ok());
  // The same event again — a retry after an answer lost to a timeout, or another replica — is refused by Plane
  // with 409 and counts as delivered: the item still has one comment.
  REQUIRE(f.client->add_comment(f.project, item, html, "7:31:analysis_done").ok());
  auto comments = f.plane.comments(item);
  REQUIRE(comments.size() == 1);
  CHECK(comments[0]["external_source"] == "orch");
  CHECK(comments[0]["external_id"] == "7:31:analysis_done");
  CHECK(comments[0]["comment_html"] == "<p>Analysis finished.</p><p>Move the item to Approved or Rejected.</p>");
  auto posts = f.plane.requests_to("/comments/");
  REQUIRE(posts.size() == 2);
  CHECK(nlohmann::json::parse(posts[1].body)["external_id"] == "7:31:analysis_done");
  // A different event is a different comment.
  REQUIRE(f.client->add_comment(f.project, item, "<p>PR opened</p>", "7:32:pr_opened").ok());
  CHECK(f.plane.comments(item).size() == 2);
}

TEST_CASE("plane comments: a marked comment is retried after a 5xx (Plane dedupes it), an unmarked one is not") {
  Fixture f;
  const std::string item = f.plane.add_work_item(kProjectId, {.state_id = f.in_progress});
  f.plane.fail_next(1, 500);
  REQUIRE(f.client->add_comment(f.project, item, "<p>blocked</p>", "7:40:blocked").ok());
  CHECK(f.plane.comments(item).size() == 1);
  CHECK(f.plane.requests_to("/comments/").size() == 2);
  CHECK(f.sleeper.waits().size() == 1);

  f.plane.fail_next(1, 500);
  CHECK(f.client->add_comment(f.project, item, "<p>unmarked</p>").code == Code::kUnavailable);
  CHECK(f.plane.requests_to("/comments/").size() == 3);
  CHECK(f.plane.comments(item).size() == 1);
}

TEST_CASE("plane comments: a 409 for an unmarked comment, or any other refusal, is not taken for delivered") {
  Fixture f;
  const std::string item = f.plane.add_work_item(kProjectId, {.state_id = f.in_progress});
  f.plane.fail_next(1, 409);
  CHECK(f.client->add_comment(f.project, item, "<p>x</p>").code == Code::kConflict);
  CHECK(f.client->add_comment(f.project, "no-such-item", "<p>x</p>", "7:1:done").code == Code::kNotFound);
}

TEST_CASE("project_identifier is read once and cached") {
  Fixture f;
  CHECK(f.client->project_identifier(f.project).value() == "SHOP");
  CHECK(f.client->project_identifier(f.project).value() == "SHOP");
  auto reqs = f.plane.requests();
  CHECK(std::count_if(reqs.begin(), reqs.end(), [](const RecordedRequest& r) {
          return r.path == "/api/v1/workspaces/acme/projects/" + kProjectId + "/";
        }) == 1);
}

TEST_CASE("a rejected API key is kInvalid and the key appears in no message or log line") {
  Fixture f;
  f.plane.set_api_key("plane_api_someone_else");
  auto r = f.client->project_identifier(f.project);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kInvalid);
  CHECK(r.status().message.find("403") != std::string::npos);
  CHECK(r.status().message.find(kApiKey) == std::string::npos);
  CHECK(f.log.all().find(kApiKey) == std::string::npos);
}

namespace {

// The fake Plane counts on the test's manual clock, which the RecordingSleeper advances: a client that waits for the
// window sees it pass, instantly.
struct PacedFixture {
  FakePlane plane;
  ManualClock clock;
  RecordingSleeper sleeper{clock};
  TestLog log;
  RatePacer pacer;
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<PlaneClient> client;
  ProjectSpec project;

  explicit PacedFixture(bool paced = true) {
    plane.add_project("acme", kProjectId, "SHOP");
    plane.set_api_key(kApiKey);
    plane.set_clock(&clock);
    plane.set_rate_limit(60, std::chrono::minutes(1));
    HttpClientOptions o;
    o.name = "plane";
    o.base_url = plane.base_url();
    o.redact = {Secret(kApiKey)};
    if (paced) o.pacer = &pacer;
    http = std::make_unique<HttpClient>(o, sleeper, clock, log.logger());
    client = std::make_unique<PlaneClient>(*http, Secret(kApiKey));
    project.name = "shop";
    project.plane_workspace = "acme";
    project.plane_project_id = kProjectId;
  }

  Millis slept() const {
    Millis total{0};
    for (Millis w : sleeper.waits()) total += w;
    return total;
  }

  // One request as Plane answers it, neither paced nor retried.
  HttpResponse raw_get(const std::string& id) {
    HttpClientOptions o;
    o.name = "raw";
    o.base_url = plane.base_url();
    o.max_attempts = 1;
    HttpClient raw(o, sleeper, clock, log.logger());
    HttpRequest r;
    r.target = "/api/v1/workspaces/acme/projects/" + kProjectId + "/work-items/" + id + "/";
    r.headers = {{"X-API-Key", kApiKey}};
    r.any_status = true;
    auto res = raw.send(r);
    REQUIRE(res.ok());
    return res.value();
  }
};

}  // namespace

TEST_CASE("rate pacing: a burst of 150 Plane requests waits for the window and meets no 429") {
  PacedFixture f;
  std::vector<std::string> ids;
  for (int i = 0; i < 150; ++i) ids.push_back(f.plane.add_work_item(kProjectId, {}));
  const TimePoint started = f.clock.now();
  for (const std::string& id : ids) REQUIRE(f.client->get_work_item(f.project, id).ok());
  CHECK(f.plane.throttled() == 0);
  CHECK(f.plane.requests_to("/work-items/").size() == 150);  // no retry was needed
  CHECK(f.pacer.pauses() == 2);                              // 60 + 60 + 30
  CHECK(f.slept() >= 120s);
  CHECK(f.slept() <= 124s);
  CHECK(f.clock.now() - started == f.slept());  // the fake's window passed on the sleeper's time, not the wall's
  for (Millis w : f.sleeper.waits()) CHECK(w <= 61000ms);
}

TEST_CASE("rate pacing: without a pacer the same burst runs into the fake Plane's 429s") {
  PacedFixture f(/*paced=*/false);
  std::vector<std::string> ids;
  for (int i = 0; i < 150; ++i) ids.push_back(f.plane.add_work_item(kProjectId, {}));
  for (const std::string& id : ids) REQUIRE(f.client->get_work_item(f.project, id).ok());  // retried per Retry-After
  CHECK(f.plane.throttled() == 2);
  CHECK(f.plane.requests_to("/work-items/").size() == 152);
}

TEST_CASE(
    "rate limit: the fake Plane answers the real 429 (body, Retry-After, no rate headers) and the client waits it "
    "out") {
  PacedFixture f;
  const std::string id = f.plane.add_work_item(kProjectId, {});
  const auto now_s = std::chrono::duration_cast<Seconds>(f.clock.now().time_since_epoch()).count();
  HttpResponse first = f.raw_get(id);
  CHECK(first.status == 200);
  CHECK(first.header("X-RateLimit-Remaining") == "59");
  CHECK(first.header("X-RateLimit-Reset") == std::to_string(now_s + 60));
  for (int i = 1; i < 60; ++i) CHECK(f.raw_get(id).status == 200);  // another user of the key spends the allowance
  HttpResponse over = f.raw_get(id);
  CHECK(over.status == 429);
  CHECK(over.body == R"({"error_code":5900,"error_message":"RATE_LIMIT_EXCEEDED"})");
  CHECK(over.header("Retry-After") == "60");
  CHECK_FALSE(over.header("X-RateLimit-Remaining").has_value());
  CHECK_FALSE(over.header("X-RateLimit-Reset").has_value());
  CHECK(f.sleeper.waits().empty());

  // The paced client knows nothing yet: its first try meets the 429, it waits Retry-After, then it succeeds.
  auto w = f.client->get_work_item(f.project, id);
  REQUIRE(w.ok());
  CHECK(w.value().id == id);
  CHECK(f.sleeper.waits() == std::vector<Millis>{60000ms});
  CHECK(f.plane.throttled() == 2);
  // The window the 429 announced has passed: the next request goes at once.
  REQUIRE(f.client->get_work_item(f.project, id).ok());
  CHECK(f.sleeper.waits().size() == 1);
}

TEST_CASE("plane writes: current_user_id reads the API key's user from /api/v1/users/me/") {
  Fixture f;
  auto id = f.client->current_user_id();
  REQUIRE(id.ok());
  CHECK(id.value() == FakePlane::kApiUserId);
  auto reqs = f.plane.requests_to("/users/me/");
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].path == "/api/v1/users/me/");
  CHECK(reqs[0].header("X-API-Key") == kApiKey);
  f.plane.set_api_user_id("0b7c2f1e-9a3d-4c5b-8e6f-112233445566");
  CHECK(f.client->current_user_id().value() == "0b7c2f1e-9a3d-4c5b-8e6f-112233445566");
}

TEST_CASE("plane writes: current_user_id says when the key is refused, and tells transient from malformed") {
  Fixture f;
  f.plane.fail_next(1, 401, R"({"detail":"Authentication credentials were not provided."})");
  auto refused = f.client->current_user_id();
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code == Code::kInvalid);
  CHECK(refused.status().message.find("API key was refused (401)") != std::string::npos);
  f.plane.set_api_key("plane_api_someone_else");  // Plane answers a wrong key 403
  auto wrong = f.client->current_user_id();
  CHECK(wrong.status().code == Code::kInvalid);
  CHECK(wrong.status().message.find("API key was refused (403)") != std::string::npos);
  CHECK(wrong.status().message.find(kApiKey) == std::string::npos);
  f.plane.set_api_key(kApiKey);

  f.plane.fail_next(4, 503);  // every attempt
  CHECK(f.client->current_user_id().status().code == Code::kUnavailable);
  f.plane.malform_next(1, R"({"id": )");
  CHECK(f.client->current_user_id().status().code == Code::kInvalid);
  f.plane.malform_next(1, R"({"display_name": "orch"})");
  CHECK(f.client->current_user_id().status().code == Code::kInvalid);
  CHECK(f.client->current_user_id().ok());
}

TEST_CASE(
    "plane writes: state_id_by_name resolves any state from the one cached listing, and an unknown one is kNotFound") {
  Fixture f;
  CHECK(f.client->state_id_by_name(f.project, "Todo").value() == f.todo);
  CHECK(f.client->state_id_by_name(f.project, "Approved").value() == f.approved);
  REQUIRE(f.client->state_ids(f.project).ok());  // shares the listing
  CHECK(f.plane.requests_to("/states/").size() == 1);
  auto missing = f.client->state_id_by_name(f.project, "todo");  // names compare exactly, as plane_states do
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code == Code::kNotFound);
  CHECK(missing.status().message.find("'todo'") != std::string::npos);
  CHECK(missing.status().message.find("'shop'") != std::string::npos);
  CHECK(missing.status().message.find("Todo") != std::string::npos);  // lists what exists
  CHECK(f.plane.requests_to("/states/").size() == 1);

  std::string review = f.plane.add_state(kProjectId, "In Review", "started");
  CHECK(f.client->state_id_by_name(f.project, "In Review").status().code == Code::kNotFound);  // cached
  f.client->forget_cache();
  CHECK(f.client->state_id_by_name(f.project, "In Review").value() == review);
  CHECK(f.plane.requests_to("/states/").size() == 2);
}

TEST_CASE("plane writes: move_work_item_to_state PATCHes the named state and is retried after a 5xx") {
  Fixture f;
  std::string review = f.plane.add_state(kProjectId, "In Review", "started");
  std::string id = f.plane.add_work_item(kProjectId, {.state_id = f.in_progress});
  REQUIRE(f.client->state_ids(f.project).ok());  // the states are listed: the next request is the PATCH
  f.plane.fail_next(1, 502);
  REQUIRE(f.client->move_work_item_to_state(f.project, id, "In Review").ok());
  CHECK(f.plane.work_item(id).value()["state"] == review);
  auto patches = f.plane.requests_to("/work-items/" + id + "/");
  REQUIRE(patches.size() == 2);  // the 502, then the retry: setting a state twice is harmless
  CHECK(patches[1].method == "PATCH");
  CHECK(nlohmann::json::parse(patches[1].body) == nlohmann::json{{"state", review}});
  REQUIRE(f.client->move_work_item(f.project, id, TrackerState::kApproved).ok());  // the shared PATCH
  CHECK(f.plane.state_history(id) == std::vector<std::string>{"In Review", "Approved"});

  Status unknown = f.client->move_work_item_to_state(f.project, id, "Shipped");
  CHECK(unknown.code == Code::kNotFound);
  CHECK(f.plane.requests_to("/work-items/" + id + "/").size() == 3);  // nothing sent for it
}

TEST_CASE("plane writes: a marked comment whose answer is lost is retried into Plane's 409, and lands once") {
  Fixture f;
  std::string id = f.plane.add_work_item(kProjectId, {.state_id = f.in_progress});
  f.plane.store_then_drop_next_comments(1);
  REQUIRE(f.client->add_comment(f.project, id, "<p>orch: done</p>", "job-7-step-2").ok());
  CHECK(f.plane.requests_to("/comments/").size() == 2);
  CHECK(f.plane.comments(id).size() == 1);
  f.plane.store_then_drop_next_comments(1);  // unmarked: the client cannot know, so it does not retry
  CHECK(f.client->add_comment(f.project, id, "<p>unmarked</p>").code == Code::kUnavailable);
  CHECK(f.plane.requests_to("/comments/").size() == 3);
  CHECK(f.plane.comments(id).size() == 2);
}
