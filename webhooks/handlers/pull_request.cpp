// webhooks/handlers/pull_request.cpp: pull request, review and push events from Gitea. Each records what it
// learned (PR number, head sha, PR and review state, the branch head for sha -> branch resolution), then asks the
// gate to look again; a requested change takes the stage's declared rollback edge.
#include "webhooks/handlers/handlers.h"

#include "engine/write_back.h"

namespace orch {
namespace {

constexpr std::string_view kPullRefPrefix = "refs/pull/";

bool is_branch_name(const std::string& ref) {
  return !ref.empty() && ref.compare(0, kPullRefPrefix.size(), kPullRefPrefix) != 0;
}

bool is_zero_sha(const std::string& sha) { return sha.find_first_not_of('0') == std::string::npos; }

PrState pr_state_of(const PullRequestInfo& pr) {
  if (pr.merged) return PrState::kMerged;
  return pr.open ? PrState::kOpen : PrState::kClosed;
}

}  // namespace

Result<std::optional<TaskRow>> Handlers::task_for_branch(const ProjectSpec& project, const PullRequestInfo& pr) {
  if (is_branch_name(pr.head_ref)) return store_.find_task_by_branch(project.name, pr.head_ref);
  // Once its head branch is deleted, Gitea names a PR's head "refs/pull/<n>/head": find the branch by its sha.
  auto branches = heads_.branches_with_head(project.gitea_repo, pr.head_sha);
  if (!branches.ok()) return branches.status();
  std::optional<TaskRow> only;
  for (const std::string& b : branches.value()) {
    auto task = store_.find_task_by_branch(project.name, b);
    if (!task.ok()) return task.status();
    if (!task.value()) continue;
    if (only && only->id != task.value()->id) return std::optional<TaskRow>();  // ambiguous: resolve nothing
    only = task.value();
  }
  return only;
}

Result<HandleOutcome> Handlers::handle_pull_request(const ProjectSpec& project, const std::string& action,
                                                    const PullRequestInfo& pr, Cause cause) {
  if (action != "opened" && action != "synchronized" && action != "closed" && action != "reopened")
    return HandleOutcome::ignored("pull request action '" + action + "' changes nothing orch tracks");
  if (is_branch_name(pr.head_ref) && !pr.head_sha.empty())
    if (Status s = heads_.record_branch_head(project.gitea_repo, pr.head_ref, pr.head_sha, clock_.now()); !s.ok())
      return s;
  auto task = task_for_branch(project, pr);
  if (!task.ok()) return task.status();
  const std::string what = "pr #" + std::to_string(pr.number) + " " + action;
  if (!task.value()) return HandleOutcome::ignored(what + ": no task for branch " + pr.head_ref);
  TaskFacts facts;
  facts.pr_number = pr.number;
  facts.pr_state = pr_state_of(pr);
  if (!pr.head_sha.empty()) facts.head_sha = pr.head_sha;
  if (Status s = store_.record_facts(task.value()->id, facts, clock_.now()); !s.ok()) return s;
  return look_again(*task.value(), cause, what);
}

Result<HandleOutcome> Handlers::handle_review(const ProjectSpec& project, const PullRequestInfo& pr, bool approved,
                                              Cause cause, const std::string& reviewer) {
  auto task = task_for_branch(project, pr);
  if (!task.ok()) return task.status();
  const std::string what =
      std::string(approved ? "approving" : "changes-requested") + " review of pr #" + std::to_string(pr.number);
  if (!task.value()) return HandleOutcome::ignored(what + ": no task for branch " + pr.head_ref);
  const TaskRow& t = *task.value();
  TaskFacts facts;
  facts.pr_number = pr.number;
  facts.pr_state = pr_state_of(pr);
  facts.review_state = approved ? ReviewState::kApproved : ReviewState::kChangesRequested;
  if (!pr.head_sha.empty()) facts.head_sha = pr.head_sha;
  if (Status s = store_.record_facts(t.id, facts, clock_.now()); !s.ok()) return s;
  if (is_branch_name(pr.head_ref) && !pr.head_sha.empty())
    if (Status s = heads_.record_branch_head(project.gitea_repo, pr.head_ref, pr.head_sha, clock_.now()); !s.ok())
      return s;
  // Before the rollback: the verdict belongs to the visit it was given in.
  if (Status s = write_back_.review_verdict(t, pr.number, approved, reviewer); !s.ok()) return s;
  if (!approved && engine_.pipeline().rollback_target(t.stage, Rollback::kChangesRequested)) {
    // The reviewer's text stays on Gitea (the agent can read it there): the reason names only the PR.
    auto back = engine_.rollback(t.id, Rollback::kChangesRequested, cause,
                                 "changes requested in review of pr #" + std::to_string(pr.number), t.stage);
    if (!back.ok()) {
      if (back.status().code == Code::kConflict)
        return HandleOutcome::noop(t.id, t.work_item_key + " moved meanwhile: " + back.status().message);
      return back.status();
    }
    return HandleOutcome::changed(t.id, what + ": " + t.work_item_key + " " + t.stage + " -> " + back.value().stage);
  }
  return look_again(t, cause, what);
}

Result<HandleOutcome> Handlers::handle_push(const ProjectSpec& project, const std::string& branch,
                                            const std::string& sha, Cause /*cause*/) {
  if (branch.empty()) return HandleOutcome::ignored("push to a ref that is not a branch");
  if (sha.empty() || is_zero_sha(sha)) return HandleOutcome::ignored("push deleted branch " + branch);
  if (Status s = heads_.record_branch_head(project.gitea_repo, branch, sha, clock_.now()); !s.ok()) return s;
  auto task = store_.find_task_by_branch(project.name, branch);
  if (!task.ok()) return task.status();
  if (!task.value()) return HandleOutcome::noop(0, "branch " + branch + " at " + sha.substr(0, 7));
  if (task.value()->head_sha != sha) {
    TaskFacts facts;
    facts.head_sha = sha;
    if (Status s = store_.record_facts(task.value()->id, facts, clock_.now()); !s.ok()) return s;
  }
  return HandleOutcome::noop(task.value()->id,
                             task.value()->work_item_key + " branch " + branch + " at " + sha.substr(0, 7));
}

}  // namespace orch
