// integrations/worker_pool.h: WorkerPool owns N threads that claim jobs atomically (claim_job: never one job twice,
// even across processes) and hand each to the JobRunner (integrations/job_runner.h); between claims they remove the
// worktrees of finished tasks (remove_worktree_later), so git never runs on the thread that handles webhooks. The
// pool is a JobWaker: the job scheduler wakes it after each enqueue. start()/stop() are for its owner only; poke()
// and remove_worktree_later() for any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/logger.h>

#include "engine/attempt_policy.h"
#include "engine/clock.h"
#include "engine/job_scheduler.h"
#include "engine/store.h"
#include "integrations/job_runner.h"

namespace orch {

struct RecoveryReport {
  int requeued = 0;  // interrupted jobs whose next attempt was queued
  int blocked = 0;   // interrupted on their last attempt: the task is blocked
  int skipped = 0;   // claimed by a process that is still alive on this host: not ours to touch
};

// Start-up, before any pool of this process starts: jobs left `running` by a process of this replica that is gone
// (its worker id names a dead pid, or ours from a previous incarnation) count their interrupted run as an attempt:
// the next attempt is queued at once, or, past max_attempts, the task is blocked with a notification. A job that
// was in a follow-up step (its agent had exited 0) is queued again at once to resume that step.
// Jobs of live processes are left alone; the sweeper's heartbeat rule covers other hosts.
RecoveryReport recover_interrupted_jobs(JobStore& jobs, AttemptPolicy& attempts, const std::string& replica_id,
                                        const Clock& clock, spdlog::logger& log);

class WorkerPool final : public JobWaker {
 public:
  // `remove_worktree` is what remove_worktree_later runs on a worker thread (GitWorkspaces::remove_worktree).
  using WorktreeRemover = std::function<Status(const TaskRow&)>;
  WorkerPool(JobRunner& runner, JobStore& jobs, const Clock& clock, spdlog::logger& log,
             WorktreeRemover remove_worktree = {})
      : runner_(runner), jobs_(jobs), clock_(clock), log_(log), remove_worktree_(std::move(remove_worktree)) {}
  ~WorkerPool() override { stop(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Starts options().workers threads, with worker ids "<replica>/<pid>/0" ... "<replica>/<pid>/<n-1>".
  void start();
  // Stops promptly: running agents are stopped (SIGTERM, grace, SIGKILL) and their jobs requeued. Idempotent, joins.
  // Worktree removals not yet done are dropped: the start-up replay asks for them again.
  void stop();
  // A job may be claimable now (after an enqueue): idle workers try a claim at once.
  void poke();
  void jobs_enqueued() override { poke(); }
  // The task is done: a worker removes its worktree before its next claim.
  void remove_worktree_later(const TaskRow& task);
  // Each worker thread and the steady-clock time it last showed life (a claim attempt, a wait, a job heartbeat):
  // readiness reports a worker stuck outside an agent run (git, the store) or whose agent stopped heartbeating.
  struct WorkerLiveness {
    std::string worker;
    std::chrono::steady_clock::time_point last_alive;
  };
  std::vector<WorkerLiveness> liveness() const;
  bool running() const;  // from any thread (readiness), while the owner may be in start() or stop()

 private:
  void run(std::stop_token stop, const std::string& worker, std::atomic<std::chrono::steady_clock::time_point>& alive);
  void remove_pending_worktrees();

  JobRunner& runner_;
  JobStore& jobs_;
  const Clock& clock_;
  spdlog::logger& log_;
  const WorktreeRemover remove_worktree_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  unsigned long pokes_ = 0;                  // guarded by mu_: a generation, so one poke wakes every idle worker
  std::deque<TaskRow> worktrees_to_remove_;  // guarded by mu_
  // Guards the vectors below against running() and liveness() on other threads (the HTTP ones of /readyz) while
  // the owner starts or stops the pool. Not held by the workers, nor while joining them.
  mutable std::mutex state_mu_;
  // One slot per thread, made in start() before the threads and never resized while they run.
  std::vector<std::string> worker_ids_;
  std::unique_ptr<std::atomic<std::chrono::steady_clock::time_point>[]> alive_;
  std::vector<std::jthread> threads_;  // last member, so they are stopped before the others are destroyed
};

}  // namespace orch
