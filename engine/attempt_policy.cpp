#include "engine/attempt_policy.h"

#include <algorithm>

namespace orch {

const char* job_outcome_name(JobOutcome o) {
  switch (o) {
    case JobOutcome::kSucceeded: return "succeeded";
    case JobOutcome::kRetrying: return "retrying";
    case JobOutcome::kBlocked: return "blocked";
    case JobOutcome::kRequeued: return "requeued";
    case JobOutcome::kAbandoned: return "abandoned";
    case JobOutcome::kStepRetrying: return "step retrying";
    case JobOutcome::kHeld: return "held";
  }
  return "unknown";
}

Seconds AttemptPolicy::backoff(int attempt) const {
  Seconds wait = options_.retry_backoff;
  for (int i = 1; i < attempt && wait < options_.retry_backoff_max; ++i) wait *= 2;
  return std::min(wait, options_.retry_backoff_max);
}

JobResult AttemptPolicy::attempt_failed(const JobRow& job, const std::string& failure, Retry retry) {
  const TimePoint now = clock_.now();
  // A person cancelled it (`orch job cancel`): whatever else went wrong, it is not retried; the task is blocked for a
  // person to decide (retry or re-run). A fresh read: the intent may have come after the caller's row was read.
  std::string reason = failure;
  if (auto fresh = store_.find_job(job.id); fresh.ok() && fresh.value() && !fresh.value()->cancel_requested.empty()) {
    reason = "cancelled: " + fresh.value()->cancel_requested;
    retry = Retry::kNo;
  }
  if (Status s = store_.finish_job(job.id, JobStatus::kFailed, reason, now); !s.ok() && s.code != Code::kConflict)
    log_.warn("jobs: cannot finish job {}: {}", job.id, s.to_string());
  auto found = store_.find_task(job.task_id);
  if (!found.ok() || !found.value()) return {JobOutcome::kAbandoned, reason};
  const TaskRow& task = *found.value();
  if (task.stage != job.stage || task.visit != job.visit) return {JobOutcome::kAbandoned, reason};

  const AgentSpec* agent = pipeline_.agent_of(job.stage);
  const int max_attempts = agent ? std::max(1, agent->max_attempts) : 1;
  const bool retryable = retry != Retry::kNo;
  if (retryable && job.attempt < max_attempts) {
    const Seconds wait = retry == Retry::kNow ? Seconds(0) : backoff(job.attempt);
    NewJob next{job.task_id, job.visit, job.stage, job.agent, job.attempt + 1, now + wait};
    auto queued = store_.enqueue_job(next, now);
    if (!queued.ok()) {
      log_.warn("jobs: cannot queue attempt {} of {} for {}: {}", next.attempt, job.agent, task.work_item_key,
                queued.status().to_string());
      return {JobOutcome::kAbandoned, reason};
    }
    log_.info("jobs: {} failed for {} in {} (attempt {} of {}): {}; attempt {} in {}s", job.agent, task.work_item_key,
              job.stage, job.attempt, max_attempts, reason, next.attempt, wait.count());
    return {JobOutcome::kRetrying, reason};
  }
  std::string why = retryable ? job.agent + " failed attempt " + std::to_string(job.attempt) + " of " +
                                    std::to_string(max_attempts) + ": " + reason
                              : reason;
  return block(job, task, why);
}

JobResult AttemptPolicy::block(const JobRow& job, const TaskRow& task, const std::string& reason) {
  const TimePoint now = clock_.now();
  // The block and what says so, in one transaction: Telegram's notification and (write-back) Plane's comment and
  // the PR's failed pipeline status.
  std::vector<OutboxMessage> said = {OutboxMessage{
      std::string(kChannelTelegram), "blocked:" + std::to_string(task.id) + ":" + std::to_string(task.visit),
      task.work_item_key + " is blocked in " + job.stage + ": " + reason}};
  std::vector<OutboxMessage> more = write_back_.blocked(task, job.stage, reason);
  said.insert(said.end(), more.begin(), more.end());
  if (Status s = store_.block_task(task.id, reason, now, said); !s.ok())
    log_.warn("jobs: cannot block {}: {}", task.work_item_key, s.to_string());
  log_.warn("jobs: {} blocked in {}: {}", task.work_item_key, job.stage, reason);
  return {JobOutcome::kBlocked, reason};
}

}  // namespace orch
