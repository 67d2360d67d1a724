// Why it is built this way: the sweeper is the backstop for the worker. A worker that dies (crash, OOM kill, host
// reboot) leaves its job `running` forever; the task then looks busy and the reconciler skips it. Failing such jobs
// makes the task idle again, and the reconciler's gate side takes it from there. The rules are ordered: orphaned first
// (a dead worker is the common case), then timed out (a live worker that failed to kill its agent), then expired queue
// entries. A job finished by its worker between our read and our write is left alone (finish_job's kConflict).
#include "reconciler/sweeper.h"

#include <algorithm>
#include <exception>

namespace orch {
namespace {

// Running jobs are bounded by workers x processes, so one page covers them in practice; the cap keeps a runaway
// table from turning a pass into an unbounded read.
constexpr int kRunningScanLimit = 5000;

}  // namespace

SweepReport Sweeper::run_once() {
  SweepReport report;
  const TimePoint now = clock_.now();
  const int batch = std::max(1, spec_.sweep_batch);

  const std::string orphan_reason = "orphaned: no heartbeat";
  auto orphaned = jobs_.fail_stale_running(now - spec_.heartbeat_stale, batch, orphan_reason, now);
  if (orphaned.ok()) {
    report.orphaned = static_cast<int>(orphaned.value().size());
    for (const JobRow& job : orphaned.value()) follow_up(job, orphan_reason, AttemptPolicy::Retry::kNow, report);
  } else {
    ++report.errors;
    log_.warn("sweeper: cannot fail orphaned jobs: {}", orphaned.status().to_string());
  }

  // A runner that heartbeats but never starts the agent: another runner may do better. Not an attempt: the agent
  // never ran. A runner stuck this way on every claim is bounded by queued_ttl, which counts from the job's creation.
  auto undispatched = jobs_.requeue_undispatched(now - spec_.dispatch_timeout, batch, now);
  if (undispatched.ok()) {
    report.requeued = static_cast<int>(undispatched.value().size());
    for (const JobRow& job : undispatched.value())
      log_.warn(
          "sweeper: job {} ({} of task {}) was claimed by a runner that did not start its agent within {}s: "
          "queued again",
          job.id, job.stage, job.task_id, spec_.dispatch_timeout.count());
  } else {
    ++report.errors;
    log_.warn("sweeper: cannot requeue undispatched jobs: {}", undispatched.status().to_string());
  }

  try {
    report.timed_out = sweep_timed_out(now, report);
  } catch (const std::exception& e) {
    ++report.errors;
    log_.warn("sweeper: timed-out rule failed: {}", e.what());
  }

  const std::string expired_reason = "expired: queued too long";
  auto expired = jobs_.fail_expired_queued(now - spec_.queued_ttl, batch, expired_reason, now);
  if (expired.ok()) {
    report.expired = static_cast<int>(expired.value().size());
    for (const JobRow& job : expired.value()) follow_up(job, expired_reason, AttemptPolicy::Retry::kNo, report);
  } else {
    ++report.errors;
    log_.warn("sweeper: cannot fail expired jobs: {}", expired.status().to_string());
  }

  if (report.requeued + report.retried > 0) waker_.jobs_enqueued();
  if (report.changed() > 0)
    log_.info(
        "sweeper: failed {} orphaned, {} timed out, {} expired job(s); {} retried, {} blocked; {} undispatched "
        "queued again",
        report.orphaned, report.timed_out, report.expired, report.retried, report.blocked, report.requeued);
  return report;
}

void Sweeper::follow_up(const JobRow& job, const std::string& reason, AttemptPolicy::Retry retry, SweepReport& report) {
  try {
    const JobResult r = attempts_.attempt_failed(job, reason, retry);
    if (r.outcome == JobOutcome::kRetrying) ++report.retried;
    if (r.outcome == JobOutcome::kBlocked) ++report.blocked;
  } catch (const std::exception& e) {  // the job stays failed; its task is idle and the next pass sees it
    ++report.errors;
    log_.warn("sweeper: job {} failed, but its next attempt could not be decided: {}", job.id, e.what());
  }
}

int Sweeper::sweep_timed_out(TimePoint now, SweepReport& report) {
  auto running = jobs_.jobs_with_status(JobStatus::kRunning, kRunningScanLimit);
  if (!running.ok()) {
    ++report.errors;
    log_.warn("sweeper: cannot list running jobs: {}", running.status().to_string());
    return 0;
  }
  const int batch = std::max(1, spec_.sweep_batch);
  int failed = 0;
  for (const JobRow& job : running.value()) {
    if (failed >= batch) break;
    const AgentSpec* agent = pipeline_.agent_of(job.stage);
    // An agent renamed or removed from the config: no timeout to apply; the heartbeat rule still covers the job.
    if (!agent || agent->name != job.agent || !job.started_at) continue;
    if (now <= *job.started_at + agent->timeout + spec_.dispatch_timeout) continue;
    const std::string reason = "timed out: running longer than " + std::to_string(agent->timeout.count()) + "s";
    Status s = jobs_.finish_job(job.id, JobStatus::kFailed, reason, now);
    if (s.ok()) {
      ++failed;
      follow_up(job, reason, AttemptPolicy::Retry::kAfterBackoff, report);
    } else if (s.code != Code::kConflict) {  // kConflict: its worker finished it meanwhile
      ++report.errors;
      log_.warn("sweeper: cannot fail timed-out job {}: {}", job.id, s.to_string());
    }
  }
  return failed;
}

}  // namespace orch
