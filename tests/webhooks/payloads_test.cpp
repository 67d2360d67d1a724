#include <doctest/doctest.h>

#include "tests/webhooks/webhook_harness.h"
#include "webhooks/payloads.h"

using namespace orch;
using namespace orch::testing;

TEST_CASE("a Plane issue webhook yields the work item, its state object and the changed field") {
  PlaneHook h;
  auto e = parse_plane_issue(plane_issue_body(h));
  REQUIRE(e.ok());
  CHECK(e->action == PlaneAction::kUpdated);
  CHECK(e->item.id == h.work_item_id);
  CHECK(e->item.project_id == kPlaneProjectId);
  CHECK(e->item.sequence_id == 42);
  CHECK(e->item.name == "Approve vendor contract");
  CHECK(e->item.description == "Needs legal sign-off.");
  CHECK(e->item.state_id == "In Progress");
  CHECK(e->state_name == "In Progress");
  CHECK(e->item.updated_at.has_value());
  CHECK(e->field == "state");
  CHECK(e->actor_id == h.actor_id);
  CHECK(e->may_change_state());
}

TEST_CASE("Plane's two field names, created issues and legacy payloads may change the state, other fields do not") {
  PlaneHook ui;
  ui.field = "state_id";  // the web UI
  CHECK(parse_plane_issue(plane_issue_body(ui)).value().may_change_state());
  PlaneHook priority;
  priority.field = "priority";
  auto p = parse_plane_issue(plane_issue_body(priority));
  REQUIRE(p.ok());
  CHECK_FALSE(p->may_change_state());
  PlaneHook created;
  created.action = "created";
  created.field = std::nullopt;
  auto c = parse_plane_issue(plane_issue_body(created));
  REQUIRE(c.ok());
  CHECK(c->action == PlaneAction::kCreated);
  CHECK(c->field.empty());
  CHECK(c->may_change_state());
  PlaneHook legacy;
  legacy.action = "update";
  legacy.with_activity = false;
  auto l = parse_plane_issue(plane_issue_body(legacy));
  REQUIRE(l.ok());
  CHECK(l->action == PlaneAction::kUpdated);
  CHECK(l->may_change_state());
  CHECK(parse_plane_action("delete") == PlaneAction::kDeleted);
  CHECK(parse_plane_action("archived") == PlaneAction::kOther);
}

TEST_CASE("a Plane payload missing a field it needs is kInvalid naming that field") {
  auto without = [](const std::string& pointer) {
    auto j = nlohmann::json::parse(plane_issue_body(PlaneHook{}));
    nlohmann::json::json_pointer ptr(pointer);
    j[ptr.parent_pointer()].erase(ptr.back());
    return j.dump();
  };
  for (const auto& [pointer, field] :
       std::vector<std::pair<std::string, std::string>>{{"/data/state/id", "data.state.id"},
                                                        {"/data/project", "data.project"},
                                                        {"/data/sequence_id", "data.sequence_id"},
                                                        {"/data/id", "data.id"},
                                                        {"/action", "action"},
                                                        {"/data", "data"}}) {
    CAPTURE(pointer);
    auto e = parse_plane_issue(without(pointer));
    REQUIRE_FALSE(e.ok());
    CHECK(e.status().code == Code::kInvalid);
    CHECK(e.status().message.find(field) != std::string::npos);
  }
  CHECK(parse_plane_issue("[1, 2]").status().code == Code::kInvalid);
  CHECK(parse_plane_issue("{").status().code == Code::kInvalid);
  // A bare state id (REST shape) is accepted too.
  auto j = nlohmann::json::parse(plane_issue_body(PlaneHook{}));
  j["data"]["state"] = "6f1c2b7e-1a0b-4d1e-9a55-2f0c9e7d3a10";
  CHECK(parse_plane_issue(j.dump()).value().item.state_id == "6f1c2b7e-1a0b-4d1e-9a55-2f0c9e7d3a10");
}

TEST_CASE("Gitea events are classified by X-Gitea-Event-Type, the coarse X-Gitea-Event understood too") {
  CHECK(classify_gitea_event("push") == GiteaEvent::kPush);
  CHECK(classify_gitea_event("pull_request") == GiteaEvent::kPullRequest);
  CHECK(classify_gitea_event("pull_request_sync") == GiteaEvent::kPullRequest);
  CHECK(classify_gitea_event("pull_request_review_approved") == GiteaEvent::kReviewApproved);
  CHECK(classify_gitea_event("pull_request_approved") == GiteaEvent::kReviewApproved);
  CHECK(classify_gitea_event("pull_request_review_rejected") == GiteaEvent::kReviewRejected);
  CHECK(classify_gitea_event("pull_request_rejected") == GiteaEvent::kReviewRejected);
  CHECK(classify_gitea_event("status") == GiteaEvent::kStatus);
  CHECK(classify_gitea_event("pull_request_comment") == GiteaEvent::kOther);  // either meaning: not ours
  CHECK(classify_gitea_event("issue_comment") == GiteaEvent::kOther);
  CHECK(classify_gitea_event("") == GiteaEvent::kOther);
}

TEST_CASE("Gitea push, pull request, review and status payloads yield what the handlers need") {
  auto push = parse_gitea_push(gitea_push_body("orch/shop-42", "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"));
  REQUIRE(push.ok());
  CHECK(push->repo == kRepo);
  CHECK(push->branch == "orch/shop-42");
  CHECK(push->after == "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d");
  CHECK_FALSE(push->deleted());
  auto deleted = parse_gitea_push(gitea_push_body("x", std::string(40, '0')));
  CHECK(deleted.value().deleted());

  GiteaPr merged;
  merged.action = "closed";
  merged.state = "closed";
  merged.merged = true;
  auto pr = parse_gitea_pull_request(gitea_pull_request_body(merged));
  REQUIRE(pr.ok());
  CHECK(pr->action == "closed");
  CHECK(pr->pr.number == 12);
  CHECK_FALSE(pr->pr.open);
  CHECK(pr->pr.merged);
  CHECK(pr->pr.head_ref == "orch/shop-42");
  CHECK(pr->pr.head_sha == merged.head_sha);
  CHECK(pr->pr.base_ref == "main");
  CHECK(pr->pr.html_url == "https://git.example.com/acme/shop/pulls/12");

  GiteaPr review;
  review.review_type = "pull_request_review_approved";
  auto r = parse_gitea_pull_request(gitea_pull_request_body(review));
  REQUIRE(r.ok());
  CHECK(r->action == "reviewed");
  CHECK(r->pr.open);

  auto status = parse_gitea_status(gitea_status_body("9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d", "success"));
  REQUIRE(status.ok());
  CHECK(status->repo == kRepo);
  CHECK(status->sha == "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d");
  CHECK(status->state == "success");
  CHECK(status->context == "ci/build");

  auto j = nlohmann::json::parse(gitea_pull_request_body(GiteaPr{}));
  j["pull_request"]["head"].erase("sha");
  auto missing = parse_gitea_pull_request(j.dump());
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().message.find("pull_request.head.sha") != std::string::npos);
  auto s = nlohmann::json::parse(gitea_status_body("abc", "success"));
  s.erase("sha");
  CHECK(parse_gitea_status(s.dump()).status().message.find("sha") != std::string::npos);
  auto norepo = nlohmann::json::parse(gitea_push_body("b", "abc"));
  norepo.erase("repository");
  CHECK(parse_gitea_push(norepo.dump()).status().message.find("repository") != std::string::npos);
}
