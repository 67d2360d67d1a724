// The fakes must speak exactly what the real senders send (docs/wire-formats.md): these tests pin their bytes.
#include <doctest/doctest.h>

#include <regex>

#include "tests/fakes/fake_gitea.h"
#include "tests/fakes/fake_plane.h"
#include "tests/fakes/signing.h"
#include "tests/support/manual_clock.h"

using namespace orch;
using namespace orch::testing;

namespace {

// A webhook receiver: records what arrives and answers 202.
class Receiver final : public FakeServer {
 public:
  Receiver() : FakeServer("receiver") {
    route("POST", "/hooks/.*", [](const httplib::Request&, httplib::Response& res) {
      res.status = 202;
      res.set_content(R"({"delivery":"x"})", "application/json");
    });
    start();
  }
  ~Receiver() override { stop(); }
  std::string url(const std::string& path) const { return base_url() + path; }
};

const std::regex kUuid4("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");

}  // namespace

TEST_CASE("HMAC helpers match the reference test vector") {
  CHECK(hmac_sha256_hex("s3cr3t", R"({"ref":"refs/heads/main"})") ==
        "8588fd50c04ac2c191575340c4c0fe284157898def8e4d10af822f05dd7c9bb5");
  CHECK(hmac_sha1_hex("s3cr3t", R"({"ref":"refs/heads/main"})") == "ca5d9a2b42732da6779a57fd80ac97cfdf0e7635");
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("python_json_dumps produces json.dumps' exact bytes") {
  nlohmann::ordered_json v;
  v["event"] = "issue";
  v["n"] = nlohmann::ordered_json::array({1, 2.5, 65535.0, nullptr, true});
  v["s"] = "\xC3\xA9\xE2\x80\xA8<>&\"\\\n\t\x01\xF0\x9F\x98\x80";
  v["e"] = nlohmann::ordered_json::object();
  v["l"] = nlohmann::ordered_json::array();
  // Expected output computed with CPython 3.11's json.dumps.
  CHECK(
      python_json_dumps(v) ==
      R"({"event": "issue", "n": [1, 2.5, 65535.0, null, true], "s": "\u00e9\u2028<>&\"\\\n\t\u0001\ud83d\ude00", "e": {}, "l": []})");
}

TEST_CASE("go_json_marshal_indent indents by two spaces and escapes HTML characters") {
  nlohmann::ordered_json v;
  v["ref"] = "refs/heads/a<b>&c";
  v["commits"] = nlohmann::ordered_json::array();
  v["n"] = nlohmann::ordered_json::array({1, 2});
  v["o"] = nlohmann::ordered_json{{"k", nullptr}};
  CHECK(go_json_marshal_indent(v) ==
        "{\n  \"ref\": \"refs/heads/a\\u003cb\\u003e\\u0026c\",\n  \"commits\": [],\n  \"n\": [\n    1,\n    2\n  ],\n"
        "  \"o\": {\n    \"k\": null\n  }\n}");
}

TEST_CASE("fake Plane sends issue webhooks with Plane's headers, key order, separators and signature") {
  Receiver receiver;
  FakePlane plane;
  plane.add_project("acme", "p1", "SHOP");
  std::string approved = plane.add_state("p1", "Approved", "completed");
  std::string id = plane.add_work_item("p1", {.name = "Fix \"login\" ü", .state_id = approved});

  DeliveryResult first = plane.send_issue_webhook(receiver.url("/hooks/plane"), "plane_wh_secret", id);
  DeliveryResult second = plane.send_issue_webhook(receiver.url("/hooks/plane"), "plane_wh_secret", id);
  CHECK(first.status == 202);
  auto reqs = receiver.requests();
  REQUIRE(reqs.size() == 2);
  const RecordedRequest& r = reqs[0];
  CHECK(r.header("Content-Type") == "application/json");
  CHECK(r.header("User-Agent") == "Autopilot");
  CHECK(r.header("X-Plane-Event") == "issue");
  CHECK(std::regex_match(r.header("X-Plane-Delivery"), kUuid4));
  CHECK(r.header("X-Plane-Delivery") == first.delivery_id);
  CHECK(r.header("X-Plane-Signature") == hmac_sha256_hex("plane_wh_secret", r.body));
  // A resend carries identical bytes and signature under a fresh delivery id.
  CHECK(reqs[1].body == r.body);
  CHECK(reqs[1].header("X-Plane-Signature") == r.header("X-Plane-Signature"));
  CHECK(second.delivery_id != first.delivery_id);

  CHECK(r.body.rfind(R"({"event": "issue", "action": "updated", "webhook_id": ")", 0) == 0);
  CHECK(r.body.find(R"("name": "Fix \"login\" \u00fc")") != std::string::npos);
  auto body = nlohmann::ordered_json::parse(r.body);
  std::vector<std::string> keys;
  for (auto it = body.begin(); it != body.end(); ++it) keys.push_back(it.key());
  CHECK(keys == std::vector<std::string>{"event", "action", "webhook_id", "workspace_id", "data", "activity"});
  CHECK(body["data"]["state"]["id"] == approved);  // an object in webhooks
  CHECK(body["data"]["state"]["name"] == "Approved");
  CHECK(body["activity"]["field"] == "state");
  CHECK(body["activity"]["new_value"] == approved);
  CHECK(body["data"]["sequence_id"] == 1);

  PlaneIssueWebhook ui;
  ui.field = "state_id";
  ui.old_value = "old-state";
  auto ui_body = nlohmann::json::parse(plane.issue_webhook_body(id, ui));
  CHECK(ui_body["activity"]["field"] == "state_id");
  CHECK(ui_body["activity"]["old_value"] == "old-state");
}

TEST_CASE("fake Plane pages like Plane: offset = page * per_page, next_cursor set even on the last page") {
  FakePlane plane;
  plane.add_project("acme", "p1", "SHOP");
  for (int i = 0; i < 5; ++i) plane.add_work_item("p1");
  httplib::Client client(plane.base_url());
  auto last = client.Get("/api/v1/workspaces/acme/projects/p1/work-items/?per_page=2&cursor=2:2:0");
  REQUIRE(last);
  auto j = nlohmann::json::parse(last->body);
  CHECK(j["count"] == 1);
  CHECK(j["next_page_results"] == false);
  CHECK(j["next_cursor"] == "2:3:0");
  CHECK(j["total_pages"] == 3);
  auto no_per_page = client.Get("/api/v1/workspaces/acme/projects/p1/work-items/?cursor=2:1:0");
  CHECK(nlohmann::json::parse(no_per_page->body)["results"].empty());  // offset 1000
  CHECK(client.Get("/api/v1/workspaces/acme/projects/p1/work-items/?per_page=1001")->status == 400);
  CHECK(client.Get("/api/v1/workspaces/acme/projects/p1/work-items")->status == 301);
}

TEST_CASE("fake Gitea sends webhooks with Gitea's headers, MarshalIndent body and both signatures") {
  Receiver receiver;
  FakeGitea gitea;
  gitea.set_branch("acme/shop", "orch/shop-42", "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d");
  std::int64_t n = gitea.add_pull("acme/shop", {.head_ref = "orch/shop-42"});

  DeliveryResult d = gitea.send_webhook(receiver.url("/hooks/gitea"), "s3cr3t", "pull_request_review_approved",
                                        gitea.review_payload("acme/shop", n, true, "bob"));
  CHECK(d.status == 202);
  const RecordedRequest r = receiver.requests().at(0);
  CHECK(r.header("X-Gitea-Event") == "pull_request_approved");
  CHECK(r.header("X-Gitea-Event-Type") == "pull_request_review_approved");
  CHECK(std::regex_match(r.header("X-Gitea-Delivery"), kUuid4));
  CHECK(r.header("X-GitHub-Delivery") == r.header("X-Gitea-Delivery"));
  CHECK(r.header("X-Gitea-Signature") == hmac_sha256_hex("s3cr3t", r.body));
  CHECK(r.header("X-Hub-Signature-256") == "sha256=" + r.header("X-Gitea-Signature"));
  CHECK(r.header("X-Hub-Signature") == "sha1=" + hmac_sha1_hex("s3cr3t", r.body));
  CHECK(r.body.rfind("{\n  \"action\": \"reviewed\",\n  \"number\": ", 0) == 0);
  auto body = nlohmann::json::parse(r.body);
  CHECK(body["review"]["type"] == "pull_request_review_approved");
  CHECK(body["sender"]["login"] == "bob");
  CHECK(body["pull_request"]["head"]["ref"] == "orch/shop-42");

  CHECK(FakeGitea::coarse_event("pull_request_sync") == "pull_request");
  CHECK(FakeGitea::coarse_event("pull_request_review_rejected") == "pull_request_rejected");
  CHECK(FakeGitea::coarse_event("status") == "status");
  auto push = FakeGitea::push_payload("acme/shop", "orch/shop-42", "", "abc");
  CHECK(push["ref"] == "refs/heads/orch/shop-42");
  CHECK(push["before"] == std::string(40, '0'));
  auto status = FakeGitea::status_payload("acme/shop", "abc", "ci/build", "success");
  CHECK_FALSE(status.contains("branches"));
  auto sync = gitea.pull_request_payload("acme/shop", n, "synchronized", "old");
  CHECK(sync["before"] == "old");
  CHECK(sync["after"] == "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d");
}

TEST_CASE("a fake's slow answer is cut short when the fake stops") {
  auto started = std::chrono::steady_clock::now();
  {
    FakeGitea gitea;
    gitea.add_repo("acme/shop");
    gitea.delay_next(1, std::chrono::seconds(60));
    std::thread client([&] {
      httplib::Client c(gitea.base_url());
      c.set_read_timeout(1, 0);
      c.Get("/api/v1/repos/acme/shop/pulls");
    });
    client.join();  // the client gives up after 1 s; the handler is still waiting
  }
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(10));
}

TEST_CASE("fake Plane: users/me answers the API user, and the echo of an API PATCH names it as the actor") {
  FakePlane plane;
  plane.add_project("acme", "p1", "SHOP");
  const std::string todo = plane.state_id("p1", "Todo"), done = plane.state_id("p1", "Done");
  const std::string id = plane.add_work_item("p1", {.state_id = todo});
  httplib::Client client(plane.base_url());
  auto me = client.Get("/api/v1/users/me/");
  REQUIRE(me);
  CHECK(me->status == 200);
  auto user = nlohmann::json::parse(me->body);
  CHECK(user["id"] == FakePlane::kApiUserId);
  for (const char* key : {"first_name", "last_name", "email", "avatar", "avatar_url", "display_name"})
    CHECK(user.contains(key));  // UserLiteSerializer, the same object as a webhook's activity.actor
  plane.set_api_user_id("0b7c2f1e-9a3d-4c5b-8e6f-112233445566");
  CHECK(plane.api_user_id() == "0b7c2f1e-9a3d-4c5b-8e6f-112233445566");

  const std::string path = "/api/v1/workspaces/acme/projects/p1/work-items/" + id + "/";
  REQUIRE(client.Patch(path.c_str(), R"({"state": ")" + done + R"("})", "application/json")->status == 200);
  REQUIRE(client.Patch(path.c_str(), R"({"state": ")" + done + R"("})", "application/json")->status == 200);
  REQUIRE(client.Patch(path.c_str(), R"({"name": "renamed"})", "application/json")->status == 200);
  plane.set_work_item_state(id, todo);  // a person in the web UI: not an API state change
  CHECK(plane.state_history(id) == std::vector<std::string>{"Done"});
  CHECK(plane.work_item(id).value()["updated_by"] == "0b7c2f1e-9a3d-4c5b-8e6f-112233445566");

  auto echo = nlohmann::json::parse(plane.echo_webhook_body(id));
  CHECK(echo["action"] == "updated");
  CHECK(echo["activity"]["field"] == "state");
  CHECK(echo["activity"]["old_value"] == todo);
  CHECK(echo["activity"]["new_value"] == done);
  CHECK(echo["activity"]["actor"]["id"] == "0b7c2f1e-9a3d-4c5b-8e6f-112233445566");
  CHECK(echo["data"]["updated_by"] == "0b7c2f1e-9a3d-4c5b-8e6f-112233445566");
  // Webhooks built by hand keep their default, human actor.
  auto human = nlohmann::json::parse(plane.issue_webhook_body(id));
  CHECK(human["activity"]["actor"]["id"] == PlaneActor{}.id);
}

TEST_CASE("fake Plane: fail_until answers every API request with the error until the time on its clock") {
  ManualClock clock;
  FakePlane plane;
  plane.set_clock(&clock);
  plane.add_project("acme", "p1", "SHOP");
  plane.fail_until(clock.now() + std::chrono::seconds(30), 503);
  httplib::Client client(plane.base_url());
  auto down = client.Get("/api/v1/users/me/");
  REQUIRE(down);
  CHECK(down->status == 503);
  CHECK(down->body == R"({"error":"Something went wrong please try again later"})");
  CHECK(client.Get("/api/v1/workspaces/acme/projects/p1/states/")->status == 503);
  clock.advance(std::chrono::seconds(30));
  CHECK(client.Get("/api/v1/workspaces/acme/projects/p1/states/")->status == 200);
  CHECK(plane.request_times().size() == 3);
}

TEST_CASE("fake Plane: store_then_drop_next_comments stores the comment and gives the client no answer") {
  FakePlane plane;
  plane.add_project("acme", "p1", "SHOP");
  const std::string id = plane.add_work_item("p1");
  plane.store_then_drop_next_comments(1);
  httplib::Client client(plane.base_url());
  const std::string path = "/api/v1/workspaces/acme/projects/p1/work-items/" + id + "/comments/";
  const std::string body = R"({"comment_html": "<p>hi</p>", "external_source": "orch", "external_id": "e1"})";
  auto lost = client.Post(path.c_str(), body, "application/json");
  CHECK_FALSE(lost);  // no complete answer
  CHECK(plane.comments(id).size() == 1);
  auto again = client.Post(path.c_str(), body, "application/json");
  REQUIRE(again);
  CHECK(again->status == 409);  // the retry meets Plane's external-id uniqueness
  CHECK(client.Post(path.c_str(), R"({"comment_html": "<p>2</p>"})", "application/json")->status == 201);
  CHECK(plane.comments(id).size() == 2);
}

TEST_CASE("fake Plane: request_times logs every answered API request on its clock, 429s included") {
  ManualClock clock;
  FakePlane plane;
  plane.set_clock(&clock);
  plane.set_rate_limit(3, std::chrono::minutes(1));
  httplib::Client client(plane.base_url());
  for (int i = 0; i < 4; ++i) {
    client.Get("/api/v1/users/me/", httplib::Headers{{"X-API-Key", "k"}});
    clock.advance(std::chrono::seconds(10));
  }
  CHECK(plane.throttled() == 1);
  clock.advance(std::chrono::seconds(30));  // 70 s after the first
  client.Get("/api/v1/users/me/", httplib::Headers{{"X-API-Key", "k"}});
  auto times = plane.request_times();
  REQUIRE(times.size() == 5);
  CHECK(times[3] - times[0] == std::chrono::seconds(30));
  CHECK(plane.max_requests_in_window(std::chrono::minutes(1)) == 4);
  CHECK(plane.max_requests_in_window(std::chrono::seconds(10)) == 1);
  CHECK(plane.max_requests_in_window(std::chrono::seconds(11)) == 2);
}
