// reconciler/sweeper.h: Sweeper fails jobs that can no longer finish on their own, so their tasks become idle and
// visible to the reconciler again: running jobs whose heartbeat stopped ("orphaned"), running jobs past their
// agent's timeout plus a buffer ("timed out"), queued jobs older than the queued TTL ("expired"). And it sends back
// to the queue, without failing them, the jobs a runner claimed but whose agent it never started within
// dispatch_timeout ("undispatched": a runner alive but stuck in git; docs/adr/0023).
// Each rule fails at most `sweep_batch` jobs per pass, so a large backlog never holds a long transaction.
// A failed job then goes through the same retry-or-block rule as a failure its worker saw (AttemptPolicy,
// engine/attempt_policy.h): an orphan's next attempt is queued at once (a dead host is not the agent's fault), a
// timed-out one's after the backoff, and an expired one blocks its task (no worker took it for queued_ttl: queueing
// it again would only wait as long again). Without that, the task would sit idle with a red gate, silently.
// Stateless over the store, so any thread may call it; in practice the reconciler thread or `orch sweep --once`.
#pragma once

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/pipeline.h"
#include "engine/store.h"
#include "engine/attempt_policy.h"
#include "engine/job_scheduler.h"

namespace orch {

struct SweepReport {
  int orphaned = 0;   // running, heartbeat older than heartbeat_stale
  int timed_out = 0;  // running, past the agent's timeout + buffer
  int expired = 0;    // queued longer than queued_ttl
  int requeued = 0;   // claimed by a runner, agent not started within dispatch_timeout: queued again, same attempt
  int errors = 0;     // rules or jobs that could not be swept this pass (logged; the next pass tries again)
  int retried = 0;    // of the failed ones: their next attempt is queued
  int blocked = 0;    // of the failed ones: their task is blocked (last attempt, or expired)
  int changed() const { return orphaned + timed_out + expired + requeued; }
};

class Sweeper {
 public:
  // The running-past-timeout buffer is jobs.dispatch_timeout: time for a worker to notice its agent's timeout,
  // kill the process group (SIGTERM, grace, SIGKILL) and report, before the sweeper overrules it.
  // `attempts` decides what becomes of each failed job's task. `waker` is told once after a pass that queued a job
  // again (an undispatched claim, or a failed job's next attempt), so that an idle worker or a runner's long poll
  // claims it now rather than at its next poll: the server's RunnerDispatch, which wakes its pool too.
  Sweeper(JobStore& jobs, AttemptPolicy& attempts, const Pipeline& pipeline, const JobsSpec& spec, const Clock& clock,
          spdlog::logger& log, JobWaker& waker = no_waker())
      : jobs_(jobs), pipeline_(pipeline), spec_(spec), clock_(clock), log_(log), attempts_(attempts), waker_(waker) {}

  // One pass over the four rules. Logs one info line with the counts when it failed any job, nothing otherwise
  // (a warning per rule that could not run).
  SweepReport run_once();

 private:
  int sweep_timed_out(TimePoint now, SweepReport& report);
  void follow_up(const JobRow& job, const std::string& reason, AttemptPolicy::Retry retry, SweepReport& report);

  JobStore& jobs_;
  const Pipeline& pipeline_;
  const JobsSpec& spec_;
  const Clock& clock_;
  spdlog::logger& log_;
  AttemptPolicy& attempts_;
  JobWaker& waker_;
};

}  // namespace orch
