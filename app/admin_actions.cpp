#include "app/admin_actions.h"

#include <algorithm>

#include "engine/budget.h"
#include "engine/setting_keys.h"

namespace orch {

Status set_reconcile_switch(SettingsStore& settings, bool enable, bool plane_only) {
  const char* key = plane_only ? kSettingReconcilePlaneEnabled : kSettingReconcileEnabled;
  return settings.set_setting(key, enable ? "1" : "0");
}

Result<TaskRow> rerun_stage(StageEngine& engine, TaskStore& tasks, const Pipeline& pipeline, TaskId id,
                            const std::optional<std::string>& stage) {
  auto task = tasks.find_task(id);
  if (!task.ok()) return task.status();
  if (!task.value()) return Status{Code::kNotFound, "no task " + std::to_string(id)};
  const TaskRow& t = *task.value();
  if (pipeline.is_terminal(t.stage)) return Status{Code::kConflict, t.work_item_key + " is done: nothing to re-run"};
  const std::string to = stage.value_or(t.stage);
  const StageSpec* spec = pipeline.stage(to);
  if (!spec) return Status{Code::kInvalid, "'" + to + "' is not a working stage of the pipeline"};
  if (Status s = rerunnable(*spec); !s.ok()) return s;
  AdvanceRequest request;
  request.cause = Cause::kManual;
  request.to = to;
  request.expected_from = t.stage;
  request.rerun = true;
  request.detail = "re-run by a person";
  return engine.advance_stage(id, request);
}

Status rerunnable(const StageSpec& stage) {
  if (is_human_stage(stage))
    return Status{Code::kInvalid,
                  "stage " + stage.name + " is a human stage: a person moves it in Plane, there is no agent to re-run"};
  if (stage.agent.empty()) return Status{Code::kInvalid, "stage " + stage.name + " has no agent to re-run"};
  return {};
}

Result<JobRow> retry_blocked_task(Store& store, const Pipeline& pipeline, TaskId id, TimePoint now) {
  auto task = store.find_task(id);
  if (!task.ok()) return task.status();
  if (!task.value()) return Status{Code::kNotFound, "no task " + std::to_string(id)};
  const TaskRow& t = *task.value();
  if (!t.blocked) return Status{Code::kConflict, "task " + t.work_item_key + " is not blocked"};
  const StageSpec* stage = pipeline.stage(t.stage);
  if (!stage || stage->agent.empty())
    return Status{Code::kInvalid, "stage '" + t.stage + "' of " + t.work_item_key + " has no agent to retry"};
  auto jobs = store.jobs_for_task(id);
  if (!jobs.ok()) return jobs.status();
  int attempt = 0;
  for (const JobRow& j : jobs.value())
    if (j.visit == t.visit) attempt = std::max(attempt, j.attempt);
  NewJob job{.task_id = id,
             .visit = t.visit,
             .stage = t.stage,
             .agent = stage->agent,
             .attempt = attempt + 1,
             .run_after = now};
  // Unblock first: a worker that claims the new job at once must not find the task still blocked.
  if (Status s = store.set_blocked(id, false, "", now); !s.ok()) return s;
  auto enqueued = store.enqueue_job(job, now);
  if (!enqueued.ok()) {
    (void)store.set_blocked(id, true, t.blocked_reason, now);  // best effort: back to what the operator saw
    return enqueued.status();
  }
  if (!enqueued.value()) return Status{Code::kConflict, "attempt " + std::to_string(attempt + 1) + " already exists"};
  return *enqueued.value();
}

Result<TaskRow> resume_held_task(Store& store, const Config& config, TaskId id, MicroUsd raise, TimePoint now) {
  if (raise < 0) return Status{Code::kInvalid, "a budget raise cannot be negative"};
  auto task = store.find_task(id);
  if (!task.ok()) return task.status();
  if (!task.value()) return Status{Code::kNotFound, "no task " + std::to_string(id)};
  TaskRow t = *task.value();
  if (t.budget_hold.empty() && raise == 0)
    return Status{Code::kConflict, t.work_item_key + " is not held for its budget (--raise-budget N raises it anyway)"};
  // The limits of the agent that would run next: its current stage's.
  const Pipeline pipeline(config);  // it owns the stages: alive while `stage` is read
  const StageSpec* stage = pipeline.stage(t.stage);
  const std::string agent = stage ? stage->agent : std::string();
  auto spend = store.spend_of(id, agent);
  if (!spend.ok()) return spend.status();
  t.budget_raise += raise;
  for (const BudgetLimit& l : budget_limits(config, t, agent, spend.value()))
    if (l.exhausted())
      return Status{Code::kInvalid, t.work_item_key + " has spent " + format_usd(l.spent) + " USD of " + l.name + " (" +
                                        format_usd(l.limit) + " USD with the raise): raise it by more than " +
                                        format_usd(l.spent - l.limit) + " USD"};
  const std::string detail =
      raise > 0 ? "budget raised by " + format_usd(raise) + " USD and resumed by a person" : "resumed by a person";
  return store.resume_task(id, raise, detail, now);
}

Status retry_outbox_message(OutboxStore& outbox, NotificationId id, TimePoint now) {
  return outbox.retry_failed_message(id, now);
}

Result<JobRow> cancel_job(JobStore& jobs, AttemptPolicy& attempts, JobId id, const std::string& why, TimePoint now) {
  auto row = jobs.request_cancel(id, why, now);
  if (!row.ok()) return row.status();
  // Queued: failed already; block its task now (the attempt policy reads the intent and never retries).
  if (row.value().status == JobStatus::kFailed) attempts.attempt_failed(row.value(), why, AttemptPolicy::Retry::kNo);
  return row;
}

}  // namespace orch
