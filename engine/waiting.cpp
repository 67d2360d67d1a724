#include "engine/waiting.h"

#include <algorithm>
#include <cstdio>

namespace orch {
namespace {

using namespace waiting_reason;

std::string two_digits(long long n) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%02lld", n);
  return buf;
}

// The limit that holds a due queued job, counted as the claim counts it; "" when none does.
std::string holding_limit(const JobRow& job, const std::string& project, const JobQueueView& queue,
                          const JobLimits& limits) {
  if (limits.max_running > 0 && queue.running_total() >= limits.max_running)
    return "[jobs] max_running = " + std::to_string(limits.max_running) + " (" + std::to_string(queue.running_total()) +
           " running)";
  if (auto it = limits.per_project.find(project);
      it != limits.per_project.end() && queue.running_in_project(project) >= it->second)
    return "project " + project + "'s max_running = " + std::to_string(it->second) + " (" +
           std::to_string(queue.running_in_project(project)) + " running)";
  if (auto it = limits.per_agent.find(job.agent);
      it != limits.per_agent.end() && queue.running_of_agent(job.agent) >= it->second)
    return "agent " + job.agent + "'s max_running = " + std::to_string(it->second) + " (" +
           std::to_string(queue.running_of_agent(job.agent)) + " running)";
  return "";
}

Waiting job_waiting(const TaskRow& task, const JobRow& job, const JobQueueView& queue, const WaitingRules& rules,
                    TimePoint now) {
  const std::string attempt = "attempt " + std::to_string(job.attempt);
  if (job.status == JobStatus::kRunning) {
    const TimePoint started = job.started_at.value_or(job.created_at);
    std::string text = "agent " + job.agent + " running for " + describe_duration(now - started) + " (" + attempt;
    if (!job.step.empty()) text += ", at step " + job.step;
    text += ")";
    if (job.heartbeat_at) text += ", last heartbeat " + describe_duration(now - *job.heartbeat_at) + " ago";
    return {kJobRunning, text, started};
  }
  const auto [position, queued] = queue.position(job, task.project);
  std::string text = "agent " + job.agent + " queued (" + attempt + ")";
  if (position > 0)
    text +=
        ", " + std::to_string(position) + " of " + std::to_string(queued) + " in project " + task.project + "'s queue";
  if (queue.task_running(task.id)) {  // a re-run's job: the claim keeps one running job per task
    text += ", after the task's job of an earlier visit, still running, finishes";
  } else if (job.run_after > now) {
    text += ", not before its retry at " + format_rfc3339(job.run_after);
  } else if (std::string limit = holding_limit(job, task.project, queue, rules.limits); !limit.empty()) {
    text += ", held by " + limit;
  } else {
    text += ", waiting for a free worker";
  }
  return {kJobQueued, text, job.created_at};
}

}  // namespace

JobQueueView::JobQueueView(const std::vector<JobRow>& running, const std::vector<JobRow>& queued,
                           const std::function<std::string(TaskId)>& project_of) {
  for (const JobRow& j : running) {
    ++running_total_;
    ++by_project_[project_of(j.task_id)];
    ++by_agent_[j.agent];
    running_tasks_.insert(j.task_id);
  }
  std::vector<const JobRow*> order;
  for (const JobRow& j : queued) order.push_back(&j);
  std::sort(order.begin(), order.end(), [](const JobRow* a, const JobRow* b) {
    return a->run_after != b->run_after ? a->run_after < b->run_after : a->id < b->id;
  });
  for (const JobRow* j : order) queued_by_project_[project_of(j->task_id)].push_back(j->id);
}

int JobQueueView::running_in_project(const std::string& project) const {
  auto it = by_project_.find(project);
  return it == by_project_.end() ? 0 : it->second;
}

int JobQueueView::running_of_agent(const std::string& agent) const {
  auto it = by_agent_.find(agent);
  return it == by_agent_.end() ? 0 : it->second;
}

std::pair<int, int> JobQueueView::position(const JobRow& job, const std::string& project) const {
  auto it = queued_by_project_.find(project);
  if (it == queued_by_project_.end()) return {0, 0};
  const auto& ids = it->second;
  auto at = std::find(ids.begin(), ids.end(), job.id);
  const int n = static_cast<int>(ids.size());
  return {at == ids.end() ? 0 : static_cast<int>(at - ids.begin()) + 1, n};
}

std::optional<Waiting> explain_waiting(const TaskRow& task, const std::vector<JobRow>& jobs, const GateEvaluation* gate,
                                       const JobQueueView& queue, const WaitingRules& rules, TimePoint now) {
  if (rules.pipeline.is_terminal(task.stage)) return std::nullopt;
  if (task.blocked) {
    int attempts = 0;
    for (const JobRow& j : jobs)
      if (j.visit == task.visit) attempts = std::max(attempts, j.attempt);
    std::string text = "blocked in " + task.stage;
    if (attempts > 0) text += " after " + std::to_string(attempts) + (attempts == 1 ? " attempt" : " attempts");
    text += ": " + task.blocked_reason + "; POST /admin/tasks/" + std::to_string(task.id) +
            "/retry gives it one more attempt";
    return Waiting{kBlocked, text, task.updated_at};
  }
  if (!task.budget_hold.empty())
    return Waiting{kBudgetExhausted,
                   "held for its budget in " + task.stage + ": " + task.budget_hold + "; POST /admin/tasks/" +
                       std::to_string(task.id) + "/resume lifts the hold",
                   task.budget_hold_at.value_or(task.updated_at)};
  // The job of the current visit that is still to finish (the newest attempt, if a retry was queued).
  const JobRow* active = nullptr;
  TimePoint idle_since = task.updated_at;
  for (const JobRow& j : jobs) {
    if (j.status == JobStatus::kQueued || j.status == JobStatus::kRunning) {
      if (!active || j.id > active->id) active = &j;
    } else if (j.finished_at && *j.finished_at > idle_since) {
      idle_since = *j.finished_at;
    }
  }
  if (active) return job_waiting(task, *active, queue, rules, now);

  const StageSpec* spec = rules.pipeline.stage(task.stage);
  if (!spec)  // `created`: a start that was stored but not made; the tracker side replays it
    return Waiting{kWithinGrace,
                   "created but not yet in " + rules.pipeline.first_working_stage() +
                       ": the reconciler's tracker side replays the start on its next pass",
                   task.created_at};
  if (is_human_stage(*spec)) {
    auto names = rules.plane_states.find(task.project);
    const PlaneStateNames states = names == rules.plane_states.end() ? PlaneStateNames{} : names->second;
    return Waiting{kAwaitingHuman,
                   "waiting for a person to move " + task.work_item_key + " to " + states.approved + " or " +
                       states.rejected + " in Plane, since " + format_rfc3339(task.entered_stage_at),
                   task.entered_stage_at};
  }
  if (!spec->gate)
    return Waiting{kWithinGrace,
                   "stage " + task.stage + " has no gate: it moves when its agent's run succeeds or an event moves it",
                   idle_since};
  const Seconds grace = rules.grace(task.stage);
  const TimePoint look_at = idle_since + grace;
  if (now <= look_at)
    return Waiting{kWithinGrace,
                   "inside stage " + task.stage + "'s grace of " + describe_duration(grace) +
                       " after its last change (a webhook may still come); the reconciler looks again after " +
                       format_rfc3339(look_at),
                   idle_since};
  if (gate && !gate->green)
    return Waiting{kGateRed,
                   "gate red: " + gate->why + " (the reconciler's verdict since " + format_rfc3339(gate->since) + ")",
                   gate->since};
  return Waiting{kWithinGrace,
                 "past stage " + task.stage + "'s grace: the reconciler evaluates its gate on its next pass", look_at};
}

std::string describe_duration(std::chrono::nanoseconds d) {
  long long s = std::max<long long>(0, std::chrono::duration_cast<Seconds>(d).count());
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m " + two_digits(s % 60) + "s";
  if (s < 86400) return std::to_string(s / 3600) + "h " + two_digits(s / 60 % 60) + "m";
  return std::to_string(s / 86400) + "d " + std::to_string(s / 3600 % 24) + "h";
}

}  // namespace orch
