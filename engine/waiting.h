// engine/waiting.h: why a task that is not done does not move, as one machine-readable reason and one sentence
// (/queue.json's `waiting`, the /queue page, `orch status`, `orch explain`; docs/contracts.md). Derived from the
// store alone: the task, its jobs, the queue's running jobs and what the reconciler's gate side last concluded about
// its gate (GateEvaluation), never from a gate evaluation of its own, so the page and the reconciler cannot disagree.
// The precedence follows what would move the task first: blocked, held for its budget (engine/budget.h), then its job
// (running, queued), then a person (human stages), then the reconciler (inside the stage's grace, then the gate it
// found red). Pure; thread-safe.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/model.h"
#include "engine/pipeline.h"

namespace orch {

// The reasons, as /queue.json names them.
namespace waiting_reason {
inline constexpr const char* kGateRed = "gate_red";
inline constexpr const char* kJobQueued = "job_queued";
inline constexpr const char* kJobRunning = "job_running";
inline constexpr const char* kAwaitingHuman = "awaiting_human";
inline constexpr const char* kBlocked = "blocked";
inline constexpr const char* kBudgetExhausted = "budget_exhausted";
inline constexpr const char* kWithinGrace = "within_grace";
}  // namespace waiting_reason

struct Waiting {
  std::string reason;  // one of waiting_reason
  std::string text;    // one sentence for a person; holds tracker strings (render it as text, never as markup)
  TimePoint since{};   // since when this reason holds
};

// What the queue looks like to the claim: the running jobs (counted per project and agent, as the claim counts them)
// and the queued ones in each project's claim order (oldest run_after, id first: the claim keeps that order within
// a project, docs/adr/0018).
class JobQueueView {
 public:
  // `project_of` names each job's project (a job's task's project).
  JobQueueView(const std::vector<JobRow>& running, const std::vector<JobRow>& queued,
               const std::function<std::string(TaskId)>& project_of);

  int running_total() const { return running_total_; }
  int running_in_project(const std::string& project) const;
  int running_of_agent(const std::string& agent) const;
  bool task_running(TaskId task) const { return running_tasks_.count(task) > 0; }
  // 1-based position of `job` among its project's queued jobs, and how many that project has queued; {0, n} when
  // the job is not among them.
  std::pair<int, int> position(const JobRow& job, const std::string& project) const;

 private:
  int running_total_ = 0;
  std::map<std::string, int> by_project_, by_agent_;
  std::set<TaskId> running_tasks_;
  std::map<std::string, std::vector<JobId>> queued_by_project_;  // claim order
};

struct WaitingRules {
  const Pipeline& pipeline;
  std::function<Seconds(const std::string& stage)> grace;  // the reconciler's grace (Settings::grace_for)
  JobLimits limits;
  std::map<std::string, PlaneStateNames> plane_states;  // per project; a project not named: the defaults
};

// nullopt for a done task. `jobs` are the task's jobs (any visit, any status); `gate` its current GateEvaluation.
std::optional<Waiting> explain_waiting(const TaskRow& task, const std::vector<JobRow>& jobs, const GateEvaluation* gate,
                                       const JobQueueView& queue, const WaitingRules& rules, TimePoint now);

// "45s", "3m 05s", "2h 10m", "3d 4h": for the sentences above.
std::string describe_duration(std::chrono::nanoseconds d);

}  // namespace orch
