#include "integrations/write_back_sender.h"

#include <nlohmann/json.hpp>

#include "engine/write_back.h"
#include "integrations/plane_html.h"

namespace orch {
namespace {

// The stored write as an object, or a permanent failure: a row no sender can read will not become readable later.
Result<nlohmann::json> payload_of(const NotificationRow& row) {
  nlohmann::json j = nlohmann::json::parse(row.text, nullptr, false);
  if (!j.is_object() || !j.contains("kind") || !j["kind"].is_string())
    return invalid("outbox row " + std::to_string(row.id) + " is not a write-back message");
  return j;
}

std::string field(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

SendResult send_result_of(const Status& s) { return {s, std::nullopt}; }

Status WriteBackReporter::agent_succeeded(const JobRow&, const TaskRow& task, const AgentResult& result) {
  const std::string summary = result.summary.empty() ? "(the agent left no summary and no output)" : result.summary;
  return write_back_.agent_succeeded(task, summary, result.verdict);
}

std::string review_marker(const std::string& dedup_key) { return "<!-- orch:" + dedup_key + " -->"; }

PlaneWriteSender::PlaneWriteSender(PlaneClient& plane, const Config& config,
                                   std::function<void(const std::string&)> learned_user, spdlog::logger& log)
    : plane_(plane), config_(config), learned_user_(std::move(learned_user)), log_(log) {}

SendResult PlaneWriteSender::send(const std::string&) {
  return send_result_of(invalid("a Plane write is sent from its outbox row"));
}

Result<std::string> PlaneWriteSender::learn_user() {
  {
    std::lock_guard lock(mu_);
    if (user_id_) return *user_id_;
  }
  auto id = plane_.current_user_id();
  if (!id.ok()) return id.status();
  {
    std::lock_guard lock(mu_);
    if (user_id_) return *user_id_;
    user_id_ = id.value();
  }
  log_.info("write-back: orch writes to Plane as user {}; its changes coming back are ignored as our own", id.value());
  if (learned_user_) learned_user_(id.value());
  return id;
}

SendResult PlaneWriteSender::send_row(const NotificationRow& row) {
  auto j = payload_of(row);
  if (!j.ok()) return send_result_of(j.status());
  // Before the first write: without the echo filter, the webhook of our own state move would look like a person's.
  if (auto user = learn_user(); !user.ok())
    return send_result_of(Status{user.status().code == Code::kUnavailable ? Code::kUnavailable : user.status().code,
                                 "cannot learn orch's Plane user: " + user.status().message});
  const std::string kind = field(j.value(), "kind");
  const ProjectSpec* project = config_.find_project(field(j.value(), "project"));
  if (!project) return send_result_of(invalid("project " + field(j.value(), "project") + " is not configured"));
  const std::string item = field(j.value(), "work_item_id");
  if (kind == write_kind::kComment)
    return send_result_of(
        plane_.add_comment(*project, item, text_to_comment_html(field(j.value(), "text")), row.dedup_key));
  if (kind == write_kind::kState)
    return send_result_of(plane_.move_work_item_to_state(*project, item, field(j.value(), "state")));
  return send_result_of(invalid("unknown Plane write '" + kind + "'"));
}

SendResult GiteaWriteSender::send(const std::string&) {
  return send_result_of(invalid("a Gitea write is sent from its outbox row"));
}

SendResult GiteaWriteSender::send_row(const NotificationRow& row) {
  auto j = payload_of(row);
  if (!j.ok()) return send_result_of(j.status());
  const std::string kind = field(j.value(), "kind");
  const std::string repo = field(j.value(), "repo");
  if (kind == write_kind::kReview) {
    const std::int64_t pr = j.value().value("pr", std::int64_t{0});
    const std::string marker = review_marker(row.dedup_key);
    // A review is not idempotent on Gitea's side: look for our marker first, so that a retry after a lost answer
    // does not post it twice.
    auto posted = reviewer_.has_review_containing(repo, pr, marker);
    if (!posted.ok()) return send_result_of(posted.status());
    if (posted.value()) return {};
    const std::string event = field(j.value(), "event");
    const std::string body = html_escape(field(j.value(), "body"));
    Status s = reviewer_.create_review(repo, pr, event, body + "\n\n" + marker);
    // Gitea refuses a verdict on one's own pull request (422), and orch opened it with the same token: the review
    // is still worth reading, so it goes as a comment that says why it carries no verdict.
    if (s.code == Code::kInvalid && event != "COMMENT") {
      log_.warn("write-back: Gitea refused the {} review on {}#{} ({}); posting it as a comment", event, repo, pr,
                s.message);
      s = reviewer_.create_review(repo, pr, "COMMENT",
                                  body + "\n\n(orch's verdict was " + event +
                                      "; Gitea refused it: " + html_escape(s.message) + ")\n\n" + marker);
    }
    return send_result_of(s);
  }
  if (kind == write_kind::kStatus) {
    // The head now, not when the message was stored: the status belongs on what a reviewer looks at.
    std::string sha;
    auto head = gitea_.branch_head(repo, field(j.value(), "branch"));
    if (head.ok()) {
      sha = head.value();
    } else if (head.status().code == Code::kNotFound) {
      sha = field(j.value(), "sha");  // the branch is gone (merged and deleted): the head it last had
    } else {
      return send_result_of(head.status());
    }
    if (sha.empty()) {
      log_.info("write-back: no commit to put {} on for {}; skipped", kPipelineStatusContext, row.dedup_key);
      return {};
    }
    return send_result_of(gitea_.set_commit_status(repo, sha, field(j.value(), "state"), kPipelineStatusContext,
                                                   field(j.value(), "description"), field(j.value(), "target_url")));
  }
  return send_result_of(invalid("unknown Gitea write '" + kind + "'"));
}

}  // namespace orch
