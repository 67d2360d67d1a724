// webhooks/handlers/ci_status.cpp: a Gitea commit status. It carries a sha and no branch, so the first job is to
// find the one task the sha belongs to; the status itself only says "look again": the ci gate reads the branch
// head and its combined status from Gitea.
//
// Gitea can send the status before any PR exists (CI runs on push), so a sha with no PR is normal: resolve it
// through the branch heads we recorded from push and PR events first, then through Gitea's open PRs, and last
// through the task row (the single task of the project in a CI-gated stage). Ambiguity is never guessed away.
#include <set>

#include "webhooks/handlers/handlers.h"

#include "engine/write_back.h"

namespace orch {
namespace {

std::string short_sha(const std::string& sha) { return sha.substr(0, 7); }

std::string keys_of(const std::vector<TaskRow>& tasks) {
  std::string out;
  for (const TaskRow& t : tasks) out += (out.empty() ? "" : ", ") + t.work_item_key;
  return out;
}

}  // namespace

Result<std::vector<TaskRow>> Handlers::tasks_for_sha(const ProjectSpec& project, const std::string& sha,
                                                     std::string& route) {
  const Pipeline& pipeline = engine_.pipeline();
  auto add_branch = [&](const std::string& branch, std::vector<TaskRow>& out, std::set<TaskId>& seen) -> Status {
    auto task = store_.find_task_by_branch(project.name, branch);
    if (!task.ok()) return task.status();
    if (task.value() && !pipeline.is_terminal(task.value()->stage) && seen.insert(task.value()->id).second)
      out.push_back(*task.value());
    return {};
  };

  // (1) Branch heads recorded from push and pull-request events.
  {
    route = "recorded branch heads";
    auto branches = heads_.branches_with_head(project.gitea_repo, sha);
    if (!branches.ok()) return branches.status();
    std::vector<TaskRow> out;
    std::set<TaskId> seen;
    for (const std::string& b : branches.value())
      if (Status s = add_branch(b, out, seen); !s.ok()) return s;
    if (!out.empty()) return out;
  }
  // (2) Gitea: the open pull requests whose head is this sha.
  {
    route = "open pull requests";
    auto prs = code_host_.open_pull_requests(project.gitea_repo);
    if (!prs.ok()) return prs.status();
    std::vector<TaskRow> out;
    std::set<TaskId> seen;
    for (const PullRequestInfo& pr : prs.value()) {
      if (pr.head_sha != sha || pr.head_ref.empty()) continue;
      if (Status s = add_branch(pr.head_ref, out, seen); !s.ok()) return s;
      // Learned from the source of truth: the next status for this sha resolves through route (1).
      if (Status s = heads_.record_branch_head(project.gitea_repo, pr.head_ref, sha, clock_.now()); !s.ok()) return s;
    }
    if (!out.empty()) return out;
  }
  // (3) The single task of the project waiting in a CI-gated stage.
  route = "tasks in a CI-gated stage";
  std::vector<TaskRow> out;
  for (const std::string& stage : ci_stages()) {
    auto tasks = store_.tasks_in_stage(project.name, stage);
    if (!tasks.ok()) return tasks.status();
    out.insert(out.end(), tasks.value().begin(), tasks.value().end());
  }
  return out;
}

Result<HandleOutcome> Handlers::handle_ci_status(const ProjectSpec& project, const std::string& sha,
                                                 const std::string& state, const std::string& context, Cause cause,
                                                 const std::string& target_url) {
  if (sha.empty()) return invalid("commit status without a sha");
  const std::string what = "ci " + state + (context.empty() ? "" : " (" + context + ")") + " on " + short_sha(sha);
  std::string route;
  auto tasks = tasks_for_sha(project, sha, route);
  if (!tasks.ok()) return tasks.status();
  if (tasks.value().size() != 1) {
    std::string why = tasks.value().empty()
                          ? what +
                                " resolves to no task: no recorded branch head, no open pull request with that "
                                "head, and no task waiting in a CI-gated stage of " +
                                project.name
                          : what + " is ambiguous: " + std::to_string(tasks.value().size()) + " tasks (" +
                                keys_of(tasks.value()) + ") through " + route;
    log_.info("ci status: {}", why);
    return HandleOutcome::ignored(why);
  }
  const TaskRow& task = tasks.value().front();
  // The fallback route is a guess about the task, not about its head: the sha may be an older commit.
  if (route != "tasks in a CI-gated stage" && task.head_sha != sha) {
    TaskFacts facts;
    facts.head_sha = sha;
    if (Status s = store_.record_facts(task.id, facts, clock_.now()); !s.ok()) return s;
  }
  // orch's own status (a blocked task's `failure`) is not CI: saying it again in Plane would be an echo.
  if ((state == "failure" || state == "error") && context != kPipelineStatusContext)
    if (Status s = write_back_.ci_failed(task, sha, context, state, target_url); !s.ok()) return s;
  return look_again(task, cause, what + " for " + task.work_item_key + " via " + route);
}

}  // namespace orch
