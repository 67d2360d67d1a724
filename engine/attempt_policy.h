// engine/attempt_policy.h: what becomes of a job attempt that failed, wherever the failure was seen: by the worker
// that ran it (integrations/job_runner.h) or by the sweeper that found it dead (reconciler/sweeper.h). One rule, so
// that a job orphaned by a dead host and a job whose agent exited 1 end the same way.
//
// The run counts as an attempt; the next one is queued (at once, or after an exponential backoff), or, past the
// agent's max_attempts or when retrying cannot help, the task is blocked and what says so (a Telegram notification,
// and with write-back a Plane comment and a failed pipeline status) is stored in the same transaction. Nothing happens
// to a task that moved to another stage or visit meanwhile. The job's row may already say `failed` (the sweeper wrote
// it): it is not written twice. Thread-safe: stateless over the store.
#pragma once

#include <string>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/pipeline.h"
#include "engine/store.h"
#include "engine/write_back.h"

namespace orch {

enum class JobOutcome {
  kSucceeded,     // exit 0, pushed (and PR opened); the gate was evaluated (red is fine)
  kRetrying,      // failed; the next attempt is queued with a backoff
  kBlocked,       // failed its last attempt (or cannot run at all): the task is blocked, a notification enqueued
  kRequeued,      // the pool is stopping: the agent was stopped and the job put back in the queue
  kAbandoned,     // nothing to do: the task is gone or has moved on, or the job was finished elsewhere
  kStepRetrying,  // the agent succeeded, a follow-up step failed: the job is queued to retry that step after a backoff
  kHeld,          // its budget is spent: the task is held and the job back in the queue, its agent not started
};
const char* job_outcome_name(JobOutcome o);

struct JobResult {
  JobOutcome outcome = JobOutcome::kAbandoned;
  std::string detail;  // the failure reason, or why it was abandoned
};

struct AttemptOptions {
  Seconds retry_backoff{30};  // attempt n+1 waits retry_backoff * 2^(n-1), at most retry_backoff_max
  Seconds retry_backoff_max{std::chrono::minutes(30)};
};

class AttemptPolicy {
 public:
  enum class Retry { kNo, kAfterBackoff, kNow };  // kNo: retrying cannot help (configuration, cannot start)

  AttemptPolicy(Store& store, const Pipeline& pipeline, WriteBack& write_back, const Clock& clock, spdlog::logger& log,
                AttemptOptions options = {})
      : store_(store), pipeline_(pipeline), write_back_(write_back), clock_(clock), log_(log), options_(options) {}

  // The job failed for `reason`: finishes it (unless already failed), then retries or blocks as above.
  JobResult attempt_failed(const JobRow& job, const std::string& reason, Retry retry);
  // Blocks the job's task now, with its notification and write-back in one transaction.
  JobResult block(const JobRow& job, const TaskRow& task, const std::string& reason);
  // kInvalid says retrying will not help (status.h): block at once instead of burning the attempts.
  static Retry retry_unless_invalid(const Status& s) {
    return s.code == Code::kInvalid ? Retry::kNo : Retry::kAfterBackoff;
  }
  Seconds backoff(int attempt) const;

 private:
  Store& store_;
  const Pipeline& pipeline_;
  WriteBack& write_back_;
  const Clock& clock_;
  spdlog::logger& log_;
  const AttemptOptions options_;
};

}  // namespace orch
