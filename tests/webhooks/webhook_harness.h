// tests/webhooks/webhook_harness.h: what the webhook tests share: payloads shaped as docs/wire-formats.md describes
// and serialised the way each sender does (Python json.dumps / Go MarshalIndent), signed headers, and a whole
// receiving side (EngineFixture + Handlers + Dispatcher + InboxProcessor + WebhookRoutes on a real HttpServer on
// loopback). The processor's thread is not started: tests call run_once() and see every effect synchronously.
#pragma once

#include <doctest/doctest.h>
#include <httplib.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/http_server.h"
#include "tests/fakes/fake_server.h"
#include "tests/fakes/signing.h"
#include "tests/support/engine_fixture.h"
#include "webhooks/handlers/dispatcher.h"
#include "webhooks/handlers/handlers.h"
#include "webhooks/inbox_processor.h"
#include "webhooks/webhook_routes.h"

namespace orch::testing {

inline const std::string kPlaneProjectId = "22b6fc9c-1849-45da-b103-52a3e3a6b4c1";
inline const std::string kPlaneSecret = "plane_wh_5f0d1c2b3a4e5f60718293a4b5c6d7e8";
inline const std::string kGiteaSecret = "s3cr3t";
inline const std::string kRepo = "acme/shop";

// ---- Plane (plane.md §2): TableTracker's state ids are the state names ----

struct PlaneHook {
  std::string work_item_id = "9a28bd00-ed9c-4f5d-8be9-fc05cbb1fc57";
  std::int64_t sequence_id = 42;
  std::string state = "In Progress";  // id and name
  std::string action = "updated";
  std::optional<std::string> field = "state";  // nullopt: null (created)
  bool with_activity = true;                   // false: a legacy payload
  std::string project = kPlaneProjectId;
  std::string name = "Approve vendor contract";
  std::string priority = "high";  // harmless to the handlers: tests vary it to make distinct bodies
  std::string actor_id = "7d1e0b9a-55aa-4c3e-8f0e-1b2c3d4e5f60";
  std::string updated_at = "2026-05-19T10:15:42.118233Z";
};

inline std::string state_group(const std::string& state) {
  if (state == "In Progress") return "started";
  if (state == "Approved") return "completed";
  if (state == "Rejected") return "cancelled";
  return "unstarted";
}

inline std::string plane_issue_body(const PlaneHook& h) {
  using oj = nlohmann::ordered_json;
  oj data = oj::object();
  data["id"] = h.work_item_id;
  data["labels"] =
      oj::array({oj{{"id", "0ec6cfa4-e906-4aad-9390-2df0303a41ce"}, {"name", "backend"}, {"color", "#4f46e5"}}});
  data["assignees"] = oj::array();
  data["state"] = oj{{"id", h.state}, {"name", h.state}, {"color", "#F59E0B"}, {"group", state_group(h.state)}};
  data["description"] = oj::object();
  data["created_at"] = "2026-05-18T09:12:03.412907Z";
  data["updated_at"] = h.updated_at;
  data["deleted_at"] = nullptr;
  data["point"] = nullptr;
  data["name"] = h.name;
  data["description_json"] = oj::object();
  data["description_html"] = "<p>Needs legal sign-off.</p>";
  data["description_stripped"] = "Needs legal sign-off.";
  data["description_binary"] = nullptr;
  data["priority"] = h.priority;
  data["start_date"] = nullptr;
  data["target_date"] = "2026-05-30";
  data["sequence_id"] = h.sequence_id;
  data["sort_order"] = 75535.0;
  data["completed_at"] = nullptr;
  data["archived_at"] = nullptr;
  data["is_draft"] = false;
  data["external_source"] = nullptr;
  data["external_id"] = nullptr;
  data["created_by"] = "13fe5f3c-642d-474f-8c6e-c70a5f8c5f40";
  data["updated_by"] = h.actor_id;
  data["project"] = h.project;
  data["workspace"] = "d2d97c94-a6ad-4012-b526-5577c0d7c769";
  data["parent"] = nullptr;
  data["estimate_point"] = nullptr;
  data["type"] = nullptr;
  oj body = oj::object();
  body["event"] = "issue";
  body["action"] = h.action;
  body["webhook_id"] = "3c2c32ac-82df-48b3-be2a-a3e21dbe8692";
  body["workspace_id"] = "d2d97c94-a6ad-4012-b526-5577c0d7c769";
  body["data"] = data;
  if (h.with_activity) {
    oj activity = oj::object();
    if (h.field) {
      activity["field"] = *h.field;
      activity["new_value"] = h.state;
      activity["old_value"] = "b1e24c5d-0f3a-4e6b-8c7d-9a0b1c2d3e4f";
    } else {
      activity["field"] = nullptr;
      activity["new_value"] = nullptr;
      activity["old_value"] = nullptr;
    }
    activity["actor"] = oj{{"id", h.actor_id},
                           {"first_name", "Bot"},
                           {"last_name", ""},
                           {"email", "bot@example.com"},
                           {"avatar", ""},
                           {"avatar_url", nullptr},
                           {"display_name", "approvals-bot"}};
    activity["old_identifier"] = nullptr;
    activity["new_identifier"] = nullptr;
    body["activity"] = activity;
  }
  return python_json_dumps(body);
}

// ---- Gitea (gitea.md §2) ----

inline nlohmann::ordered_json gitea_repository() {
  return {{"id", 7},
          {"owner", {{"id", 3}, {"login", "acme"}, {"username", "acme"}}},
          {"name", "shop"},
          {"full_name", kRepo},
          {"html_url", "https://git.example.com/acme/shop"},
          {"default_branch", "main"},
          {"private", true}};
}

inline std::string gitea_push_body(const std::string& branch, const std::string& after,
                                   const std::string& before = "3a1f0c6e9d2b4e7f8a9b0c1d2e3f4a5b6c7d8e9f") {
  nlohmann::ordered_json commit = {{"id", after},
                                   {"message", "Fix parser\n"},
                                   {"url", "https://git.example.com/acme/shop/commit/" + after},
                                   {"author", {{"name", "Ann"}, {"email", "ann@example.com"}, {"username", "ann"}}},
                                   {"committer", {{"name", "Ann"}, {"email", "ann@example.com"}, {"username", "ann"}}},
                                   {"verification", nullptr},
                                   {"timestamp", "2026-08-20T10:15:30+02:00"},
                                   {"added", nlohmann::ordered_json::array()},
                                   {"removed", nlohmann::ordered_json::array()},
                                   {"modified", {"src/p.cc"}}};
  nlohmann::ordered_json body = {{"ref", "refs/heads/" + branch},
                                 {"before", before},
                                 {"after", after},
                                 {"compare_url", "https://git.example.com/acme/shop/compare/x...y"},
                                 {"commits", {commit}},
                                 {"total_commits", 1},
                                 {"head_commit", commit},
                                 {"repository", gitea_repository()},
                                 {"pusher", {{"id", 5}, {"login", "ann"}, {"username", "ann"}}},
                                 {"sender", {{"id", 5}, {"login", "ann"}, {"username", "ann"}}}};
  return go_json_marshal_indent(body);
}

struct GiteaPr {
  std::int64_t number = 12;
  std::string action = "opened";
  std::string state = "open";
  bool merged = false;
  std::string head_ref = "orch/shop-42";
  std::string head_sha = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";
  std::optional<std::string> review_type;  // pull_request_review_approved / _rejected
};

inline std::string gitea_pull_request_body(const GiteaPr& p) {
  nlohmann::ordered_json pr = {
      {"id", 311},
      {"number", p.number},
      {"url", "https://git.example.com/api/v1/repos/acme/shop/pulls/" + std::to_string(p.number)},
      {"html_url", "https://git.example.com/acme/shop/pulls/" + std::to_string(p.number)},
      {"title", "SHOP-42"},
      {"body", ""},
      {"user", {{"id", 5}, {"login", "orch"}}},
      {"state", p.state},
      {"draft", false},
      {"merged", p.merged},
      {"merged_at", nullptr},
      {"merge_commit_sha", nullptr},
      {"mergeable", true},
      {"base",
       {{"label", "main"}, {"ref", "main"}, {"sha", "1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e"}, {"repo_id", 7}}},
      {"head", {{"label", p.head_ref}, {"ref", p.head_ref}, {"sha", p.head_sha}, {"repo_id", 7}}},
      {"merge_base", "1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e"},
      {"requested_reviewers", nlohmann::ordered_json::array()}};
  nlohmann::ordered_json body = nlohmann::ordered_json::object();
  body["action"] = p.review_type ? "reviewed" : p.action;
  body["number"] = p.number;
  body["pull_request"] = pr;
  body["requested_reviewer"] = nullptr;
  body["repository"] = gitea_repository();
  body["sender"] = {{"id", 9}, {"login", "bob"}};
  body["commit_id"] = "";
  if (p.review_type)
    body["review"] = {{"type", *p.review_type}, {"content", "LGTM"}};
  else
    body["review"] = nullptr;
  return go_json_marshal_indent(body);
}

inline std::string gitea_status_body(const std::string& sha, const std::string& state,
                                     const std::string& context = "ci/build") {
  nlohmann::ordered_json body = {
      {"commit",
       {{"id", sha}, {"message", "Fix parser\n"}, {"url", "https://git.example.com/acme/shop/commit/" + sha}}},
      {"context", context},
      {"created_at", "2026-08-20T08:16:02Z"},
      {"description", "Build passed"},
      {"id", 1234},
      {"repository", gitea_repository()},
      {"sender", {{"id", 2}, {"login", "ci-bot"}}},
      {"sha", sha},
      {"state", state},
      {"target_url", "https://ci.example.com/b/77"},
      {"updated_at", "2026-08-20T08:16:02Z"}};
  return go_json_marshal_indent(body);
}

// ---- headers ----

using HeaderList = std::vector<std::pair<std::string, std::string>>;

inline HeaderList plane_headers(const std::string& body, const std::string& delivery_id,
                                const std::string& secret = kPlaneSecret) {
  return {{"User-Agent", "Autopilot"},
          {"X-Plane-Delivery", delivery_id},
          {"X-Plane-Event", "issue"},
          {"X-Plane-Signature", orch::testing::hmac_sha256_hex(secret, body)}};
}

// Gitea's coarse X-Gitea-Event for a precise event type (gitea.md §1.5).
inline std::string gitea_coarse_event(const std::string& type) {
  if (type == "pull_request_sync") return "pull_request";
  if (type == "pull_request_review_approved") return "pull_request_approved";
  if (type == "pull_request_review_rejected") return "pull_request_rejected";
  return type;
}

inline HeaderList gitea_headers(const std::string& body, const std::string& delivery_id, const std::string& event_type,
                                const std::string& secret = kGiteaSecret) {
  const std::string sig = orch::testing::hmac_sha256_hex(secret, body);
  return {{"X-Gitea-Delivery", delivery_id},        {"X-Gitea-Event", gitea_coarse_event(event_type)},
          {"X-Gitea-Event-Type", event_type},       {"X-Gitea-Signature", sig},
          {"X-Hub-Signature-256", "sha256=" + sig}, {"X-Gitea-Hook-Installation-Target-Type", "repository"}};
}

struct Reply {
  int status = -1;  // -1: no HTTP answer
  std::string body;
  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
};

inline Reply post_to(int port, const std::string& path, const HeaderList& headers, const std::string& body,
                     const std::string& content_type = "application/json") {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(10, 0);
  httplib::Headers h;
  for (const auto& [k, v] : headers) h.emplace(k, v);
  auto res = client.Post(path.c_str(), h, body, content_type.c_str());
  if (!res) return {-1, httplib::to_string(res.error())};
  return {res->status, res->body};
}

inline WebhookSecrets test_secrets() {
  WebhookSecrets s;
  s.plane = Secret(kPlaneSecret);
  s.gitea = Secret(kGiteaSecret);
  return s;
}

// The whole receiving side over the real engine, listening on an ephemeral loopback port.
struct WebhookStack {
  explicit WebhookStack(WebhookSecrets secrets = test_secrets(), WebhookRouteOptions options = {},
                        HttpLimits limits = {})
      : handlers(*f.store, f.engine, f.plane, f.gitea, f.config, f.clock, f.log),
        dispatcher(handlers, f.config),
        processor(*f.store, dispatcher, f.clock, f.log),
        routes(*f.store, f.clock, f.log, std::move(secrets), options),
        server(limits) {
    routes.register_routes(server.routes());
    routes.start();
    REQUIRE(server.start("127.0.0.1", 0).ok());
  }
  ~WebhookStack() {
    server.stop();
    routes.stop();
  }

  Reply plane(const std::string& body, const std::string& delivery_id) {
    return post_to(server.port(), "/webhooks/plane", plane_headers(body, delivery_id), body);
  }
  Reply gitea(const std::string& body, const std::string& delivery_id, const std::string& event_type) {
    return post_to(server.port(), "/webhooks/gitea", gitea_headers(body, delivery_id, event_type), body);
  }
  InboxCounts counts() { return f.store->inbox_counts().value(); }
  DeliveryRow delivery(const std::string& id) {
    auto row = f.store->find_delivery(id);
    REQUIRE(row.ok());
    REQUIRE(row.value().has_value());
    return *row.value();
  }
  std::optional<TaskRow> task_of(const std::string& work_item_id) {
    return f.store->find_task_by_work_item(work_item_id).value();
  }

  EngineFixture f;
  Handlers handlers;
  Dispatcher dispatcher;
  InboxProcessor processor;
  WebhookRoutes routes;
  HttpServer server;  // last: stopped first
};

}  // namespace orch::testing
