#include "engine/write_back.h"

#include <nlohmann/json.hpp>

namespace orch {
namespace {

std::string key_of(const TaskRow& task, const std::string& kind) {
  return std::to_string(task.id) + ":" + std::string(kTransitionPlaceholder) + ":" + kind;
}

}  // namespace

namespace {
WriteBackOptions without_trailing_slash(WriteBackOptions o) {
  while (!o.public_url.empty() && o.public_url.back() == '/') o.public_url.pop_back();
  while (!o.gitea_base_url.empty() && o.gitea_base_url.back() == '/') o.gitea_base_url.pop_back();
  return o;
}
}  // namespace

WriteBackPlan::WriteBackPlan(const Config& config, const Pipeline& pipeline, WriteBackOptions options)
    : config_(config), pipeline_(pipeline), options_(without_trailing_slash(std::move(options))) {}

OutboxMessage WriteBackPlan::comment(const TaskRow& task, const std::string& kind, const std::string& text) const {
  nlohmann::json j = {
      {"kind", write_kind::kComment}, {"project", task.project}, {"work_item_id", task.work_item_id}, {"text", text}};
  // Agent output may be any bytes: replace what is not UTF-8 rather than fail the transition.
  return OutboxMessage{std::string(kChannelPlane), key_of(task, kind),
                       j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "plane:" + task.work_item_id,
                       task.id};
}

OutboxMessage WriteBackPlan::state_move(const TaskRow& task, const std::string& state) const {
  nlohmann::json j = {
      {"kind", write_kind::kState}, {"project", task.project}, {"work_item_id", task.work_item_id}, {"state", state}};
  return OutboxMessage{std::string(kChannelPlane), key_of(task, "state"), j.dump(), "plane:" + task.work_item_id,
                       task.id};
}

std::optional<OutboxMessage> WriteBackPlan::pipeline_status(const TaskRow& task, const std::string& state,
                                                            const std::string& description) const {
  // "On the PR's head": before a pull request exists there is nothing a reviewer would look at.
  if (!task.pr_number || task.branch.empty()) return std::nullopt;
  const ProjectSpec* project = config_.find_project(task.project);
  if (!project) return std::nullopt;
  nlohmann::json j = {{"kind", write_kind::kStatus},
                      {"repo", project->gitea_repo},
                      {"branch", task.branch},
                      {"sha", task.head_sha},
                      {"state", state},
                      {"description", description},
                      {"target_url", options_.public_url.empty() ? "" : options_.public_url + "/queue"}};
  return OutboxMessage{std::string(kChannelGitea), key_of(task, "status:" + state), j.dump(),
                       "gitea:" + project->gitea_repo + "#" + task.branch, task.id};
}

std::string WriteBackPlan::pull_url(const TaskRow& task, std::int64_t number) const {
  const ProjectSpec* project = config_.find_project(task.project);
  const std::string& base = options_.gitea_base_url;
  if (!project || base.empty()) return "#" + std::to_string(number);
  return base + "/" + project->gitea_repo + "/pulls/" + std::to_string(number);
}

std::vector<OutboxMessage> WriteBackPlan::for_transition(const TaskRow& before, const TransitionRequest& t) const {
  std::vector<OutboxMessage> out;
  if (!options_.enabled) return out;
  const bool done = t.to == kStageDone;
  const bool rollback = t.rejection_reason && !t.rejection_reason->empty();
  if (t.cause == Cause::kReconciler)
    out.push_back(comment(before, "unblocked",
                          "orch's reconciler recovered an event that never arrived: " + t.detail + ". " +
                              before.work_item_key + " moved from " + t.from + " to " + t.to + "."));
  if (rollback)
    out.push_back(comment(
        before, "rolled_back",
        "orch moved " + before.work_item_key + " back from " + t.from + " to " + t.to + ": " + *t.rejection_reason));
  if (done)
    out.push_back(comment(before, "done",
                          before.pr_number
                              ? before.work_item_key + " is done: pull request #" + std::to_string(*before.pr_number) +
                                    (before.pr_state == PrState::kMerged ? " is merged, " : ", ") +
                                    pull_url(before, *before.pr_number)
                              : before.work_item_key + " is done."));
  if (done) {
    if (!config_.plane_done_state.empty()) out.push_back(state_move(before, config_.plane_done_state));
  } else if (const StageSpec* stage = pipeline_.stage(t.to); stage && !stage->plane_state.empty()) {
    out.push_back(state_move(before, stage->plane_state));
  }
  if (auto status =
          done ? pipeline_status(before, "success", "done") : pipeline_status(before, "pending", "in " + t.to))
    out.push_back(std::move(*status));
  return out;
}

std::vector<OutboxMessage> WriteBackPlan::agent_succeeded(const TaskRow& task, const std::string& summary,
                                                          const std::optional<std::string>& verdict) const {
  std::vector<OutboxMessage> out;
  if (!options_.enabled) return out;
  const StageSpec* stage = pipeline_.stage(task.stage);
  if (!stage) return out;
  if (stage->gate && gate_is_human(*stage->gate))
    out.push_back(comment(
        task, "analysis",
        "orch: the " + stage->agent + " agent finished " + task.stage + " of " + task.work_item_key + ".\n\n" +
            summary + "\n\nMove this work item to Approved to go on, or to Rejected to run " + task.stage + " again."));
  if (stage->post_review && verdict && task.pr_number) {
    if (const ProjectSpec* project = config_.find_project(task.project)) {
      nlohmann::json j = {{"kind", write_kind::kReview},
                          {"repo", project->gitea_repo},
                          {"pr", *task.pr_number},
                          {"event", *verdict},
                          {"body", summary}};
      out.push_back(OutboxMessage{std::string(kChannelGitea), key_of(task, "review"),
                                  j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                                  "gitea:" + project->gitea_repo + "#" + task.branch, task.id});
    }
  }
  return out;
}

std::vector<OutboxMessage> WriteBackPlan::pull_request_opened(const TaskRow& task, std::int64_t number) const {
  std::vector<OutboxMessage> out;
  if (!options_.enabled) return out;
  out.push_back(comment(task, "pr_opened",
                        "orch opened pull request #" + std::to_string(number) + " for " + task.work_item_key + ": " +
                            pull_url(task, number)));
  TaskRow with_pr = task;
  with_pr.pr_number = number;
  if (auto status = pipeline_status(with_pr, "pending", "in " + task.stage)) out.push_back(std::move(*status));
  return out;
}

std::vector<OutboxMessage> WriteBackPlan::ci_failed(const TaskRow& task, const std::string& sha,
                                                    const std::string& context, const std::string& state,
                                                    const std::string& target_url) const {
  std::vector<OutboxMessage> out;
  if (!options_.enabled) return out;
  std::string text = "CI is red on branch " + task.branch + " (" + sha.substr(0, 12) +
                     "): " + (context.empty() ? std::string("a status") : context) + " reported " + state + ".";
  if (!target_url.empty()) text += " Details: " + target_url;
  // One comment per failing head in a visit: a second red context on the same commit says nothing new.
  out.push_back(comment(task, "ci_red:" + sha.substr(0, 12), text));
  return out;
}

std::vector<OutboxMessage> WriteBackPlan::review_verdict(const TaskRow& task, std::int64_t pr, bool approved,
                                                         const std::string& reviewer) const {
  std::vector<OutboxMessage> out;
  if (!options_.enabled) return out;
  out.push_back(comment(task, approved ? "review_approved" : "review_changes",
                        (reviewer.empty() ? std::string("A reviewer") : reviewer) +
                            (approved ? " approved" : " requested changes on") + " pull request #" +
                            std::to_string(pr) + ": " + pull_url(task, pr)));
  return out;
}

std::vector<OutboxMessage> WriteBackPlan::blocked(const TaskRow& task, const std::string& stage,
                                                  const std::string& reason) const {
  std::vector<OutboxMessage> out;
  if (!options_.enabled) return out;
  std::string text = "orch stopped " + task.work_item_key + " in " + stage + ": " + reason +
                     ". It stays blocked until someone re-runs it or moves the work item.";
  if (!options_.public_url.empty()) text += " Status: " + options_.public_url + "/queue";
  out.push_back(comment(task, "blocked", text));
  if (auto status = pipeline_status(task, "failure", "blocked in " + stage)) out.push_back(std::move(*status));
  return out;
}

WriteBack& WriteBack::off() {
  static WriteBack none;
  return none;
}

Status WriteBack::agent_succeeded(const TaskRow& task, const std::string& summary,
                                  const std::optional<std::string>& verdict) {
  return plan_ ? store(plan_->agent_succeeded(task, summary, verdict)) : Status{};
}

Status WriteBack::pull_request_opened(const TaskRow& task, std::int64_t number) {
  return plan_ ? store(plan_->pull_request_opened(task, number)) : Status{};
}

Status WriteBack::ci_failed(const TaskRow& task, const std::string& sha, const std::string& context,
                            const std::string& state, const std::string& target_url) {
  return plan_ ? store(plan_->ci_failed(task, sha, context, state, target_url)) : Status{};
}

Status WriteBack::review_verdict(const TaskRow& task, std::int64_t pr, bool approved, const std::string& reviewer) {
  return plan_ ? store(plan_->review_verdict(task, pr, approved, reviewer)) : Status{};
}

std::vector<OutboxMessage> WriteBack::blocked(const TaskRow& task, const std::string& stage,
                                              const std::string& reason) const {
  return plan_ ? plan_->blocked(task, stage, reason) : std::vector<OutboxMessage>{};
}

Status WriteBack::store(const std::vector<OutboxMessage>& messages) {
  if (messages.empty()) return {};
  auto added = outbox_->enqueue_messages(messages, clock_->now());
  return added.ok() ? Status{} : added.status();
}

}  // namespace orch
