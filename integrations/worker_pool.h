// integrations/worker_pool.h: the job worker. JobRunner runs one claimed job to its end: the task's worktree, the
// task JSON file, the agent as its own process group with a clean environment (DESIGN.md "The agent's environment"),
// heartbeats, the timeout, then on exit 0 (or a post_review stage's exit 3) the JobReporter with the run's summary and
// the follow-up steps push, open_pr and gate (advance_if_gate_passed), each persisted and retried on its own
// (ADR 0010); on a failure a retry of the agent with backoff, then blocked.
// WorkerPool owns N threads that claim jobs atomically (claim_job: never one job twice, even across processes) and
// hand each to the JobRunner. JobRunner is thread-safe (one run() per claimed job, from any thread); WorkerPool's
// start()/stop() are for its owner only, poke() for any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/event_bus.h"
#include "engine/facts.h"
#include "engine/layout.h"
#include "engine/stage_engine.h"
#include "engine/store.h"
#include "engine/write_back.h"
#include "engine/telemetry.h"
#include "integrations/git.h"
#include "integrations/process_runner.h"

namespace orch {

// What an agent's successful run produced, for those who report it (write-back, issue 20).
struct AgentResult { int exit_code = 0; std::string summary; std::optional<std::string> verdict; };  // verdict:
//   "APPROVED" (exit 0) / "REQUEST_CHANGES" (exit 3) on a post_review stage, nullopt elsewhere
struct JobReporter {
  virtual ~JobReporter() = default;
  // Called once per successful agent run, after the agent exited and BEFORE the job records its first follow-up
  // step (so a crash in between runs the agent again and the reporter again: its writes must be idempotent).
  // A non-ok status fails the attempt like a failed step would (kUnavailable: retried).
  virtual Status agent_succeeded(const JobRow& job, const TaskRow& task, const AgentResult& result) = 0;
};
// On a post_review stage the agent's exit code is its verdict: 0 approves, this one requests changes; both are a
// successful run. Elsewhere it is a failure like any other non-zero exit.
inline constexpr int kExitRequestChanges = 3;

struct WorkerOptions {
  int workers = 2;  // JobsSpec::workers
  // Heartbeats must come well inside JobsSpec::heartbeat_stale (150 s by default), or the sweeper fails the job.
  Millis heartbeat_interval{std::chrono::seconds(10)};
  // An idle worker claims again this often without a poke: jobs enqueued by other processes, backoffs coming due.
  Millis poll_interval{std::chrono::seconds(5)};
  Millis kill_grace{std::chrono::seconds(10)};  // between SIGTERM and SIGKILL to the agent's group
  // The per-job log keeps the first (cap - 64 KiB) and the last 64 KiB of each run's output, with a marker line
  // saying how much was dropped between them; the agent is never blocked on its output.
  std::size_t log_cap_bytes = 1024 * 1024;
  Seconds retry_backoff{30};  // attempt n+1 waits retry_backoff * 2^(n-1), at most retry_backoff_max
  Seconds retry_backoff_max{std::chrono::minutes(30)};
  // The follow-up steps after the agent exited 0 (push, open_pr, gate; ADR 0010) are retried on their own, never by
  // running the agent again: a step's try n+1 waits step_backoff * 2^(n-1), at most step_backoff_max, and after
  // step_max_attempts failed tries the job fails with the step's error.
  int step_max_attempts = 8;  // JobsSpec::step_attempts
  Seconds step_backoff{15};
  Seconds step_backoff_max{std::chrono::minutes(5)};
  Telemetry* telemetry = nullptr;  // told how long each agent ran and how it ended; null: nobody
  // Worker ids are "<replica_id>/<pid>/<n>" ("<pid>/<n>" when empty): start-up recovery judges only its own
  // replica's workers by their pid.
  std::string replica_id;
  // Says in Plane and on the PR what a job came to (a PR opened, a block); null: nothing is written back.
  WriteBack* write_back = nullptr;
  // Told of each successful agent run with its summary (job_summary) before the follow-up steps; null: nobody.
  JobReporter* reporter = nullptr;
};

// The config's [jobs] table as worker options: its worker count, and a heartbeat a tenth of the stale threshold
// (between 1 s and 10 s) so that a few lost heartbeats never look like a dead worker to the sweeper.
WorkerOptions worker_options_from(const JobsSpec& jobs);

enum class JobOutcome {
  kSucceeded,  // exit 0, pushed (and PR opened); the gate was evaluated (red is fine)
  kRetrying,   // failed; the next attempt is queued with a backoff
  kBlocked,    // failed its last attempt (or cannot run at all): the task is blocked, a notification enqueued
  kRequeued,   // the pool is stopping: the agent was stopped and the job put back in the queue
  kAbandoned,  // nothing to do: the task is gone or has moved on, or the job was finished elsewhere
  kStepRetrying,  // the agent succeeded, a follow-up step failed: the job is queued to retry that step after a backoff
};
const char* job_outcome_name(JobOutcome o);

struct JobResult {
  JobOutcome outcome = JobOutcome::kAbandoned;
  std::string detail;  // the failure reason, or why it was abandoned
};

struct RecoveryReport {
  int requeued = 0;  // interrupted jobs whose next attempt was queued
  int blocked = 0;   // interrupted on their last attempt: the task is blocked
  int skipped = 0;   // claimed by a process that is still alive on this host: not ours to touch
};

// The rule for a failed attempt, also for failures no worker saw (the sweeper's, reconciler/sweeper.h): the run
// counts as an attempt; the next one is queued (at once, or after the backoff), or, past the agent's max_attempts or
// when retrying cannot help, the task is blocked and a notification enqueued. Nothing happens when the task has moved
// to another stage or visit meanwhile. The job's row may already say `failed` (the sweeper wrote it): it is not
// written twice.
class FailedAttempts {
 public:
  enum class Retry { kNo, kAfterBackoff, kNow };  // kNo: retrying cannot help (configuration, cannot start)
  virtual ~FailedAttempts() = default;
  virtual JobResult attempt_failed(const JobRow& job, const std::string& reason, Retry retry) = 0;
};

class JobRunner : public FailedAttempts {
 public:
  JobRunner(Store& store, StageEngine& engine, GitWorkspaces& git, ProcessRunner& processes, CodeHost& code_host,
            const Config& config, const DataLayout& layout, const Clock& clock, spdlog::logger& log,
            WorkerOptions options = {});

  // Runs a job claimed by the caller (status running) to its end and records the outcome. Never throws.
  // A stop request (pool shutdown) stops the agent and requeues the job. `alive` is called at each heartbeat.
  JobResult run(const JobRow& job, std::stop_token stop = {}, const std::function<void()>& alive = {});

  // Start-up, before any pool of this process starts: jobs left `running` by a process of this replica that is gone
  // (its worker id names a dead pid, or ours from a previous incarnation) count their interrupted run as an attempt:
  // the next attempt is queued at once, or, past max_attempts, the task is blocked with a notification. A job that
  // was in a follow-up step (its agent had exited 0) is queued again at once to resume that step.
  // Jobs of live processes are left alone; the sweeper's heartbeat rule covers other hosts.
  RecoveryReport recover_interrupted();

  JobResult attempt_failed(const JobRow& job, const std::string& reason, Retry retry) override;

  const WorkerOptions& options() const { return options_; }

 private:
  JobResult run_claimed(const JobRow& job, std::stop_token stop, const std::function<void()>& alive);
  // The task is gone or has moved on (another visit or stage): the job is failed with why, and abandoned.
  std::optional<JobResult> abandon_if_moved_on(const JobRow& job, const std::optional<TaskRow>& task);
  // The follow-up steps from the job's current one on (job.step; "" right after the agent exited 0).
  JobResult run_steps(const JobRow& job, const ProjectSpec& project, const AgentSpec& agent, const StageSpec& stage);
  // A failed try of `step`, whose earlier failed tries were `tries`: queued again after the step's backoff, or, out of
  // budget (or kInvalid), the job fails with the step's error.
  JobResult step_failed(const JobRow& job, const TaskRow& task, const std::string& step, int tries, const Status& s);
  // kInvalid says retrying will not help (status.h): block at once instead of burning the attempts.
  static Retry retry_unless_invalid(const Status& s) { return s.code == Code::kInvalid ? Retry::kNo : Retry::kAfterBackoff; }
  JobResult block(const JobRow& job, const TaskRow& task, const std::string& reason);
  // Stores the write-back of "PR #number is open" (dedup keyed: a retried step stores nothing new); ok without it.
  Status say_pull_request_opened(const TaskRow& task, std::int64_t number);
  Status write_task_json(const JobRow& job, const TaskRow& task, const std::string& worktree);
  std::vector<std::string> agent_environment(const JobRow& job, const TaskRow& task, const AgentSpec& agent,
                                             const std::string& worktree) const;
  // ORCH_OUTPUT_DIR of the job, absolute (the agent runs in the worktree, not where orch was started).
  std::filesystem::path output_dir(const JobRow& job) const;
  // Makes it exist and be empty (an earlier attempt's files are gone) before the agent starts.
  Status prepare_output_dir(const JobRow& job) const;
  // The agent ran successfully (exit 0, or the verdict exit on a post_review stage): the reporter, if any, is told.
  // A failure to report fails the attempt; nullopt goes on to the follow-up steps.
  std::optional<JobResult> report_success(const JobRow& job, const StageSpec& stage, int exit_code);
  Seconds backoff(int attempt) const;
  Seconds step_backoff(int tries) const;

  Store& store_;
  StageEngine& engine_;
  GitWorkspaces& git_;
  ProcessRunner& processes_;
  CodeHost& code_host_;
  const Config& config_;
  const DataLayout& layout_;
  const Clock& clock_;
  spdlog::logger& log_;
  const WorkerOptions options_;
};

class WorkerPool {
 public:
  WorkerPool(JobRunner& runner, JobStore& jobs, const Clock& clock, spdlog::logger& log)
      : runner_(runner), jobs_(jobs), clock_(clock), log_(log) {}
  ~WorkerPool() { stop(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Starts options().workers threads, with worker ids "<replica>/<pid>/0" ... "<replica>/<pid>/<n-1>".
  void start();
  // Stops promptly: running agents are stopped (SIGTERM, grace, SIGKILL) and their jobs requeued. Idempotent, joins.
  void stop();
  // A job may be claimable now (after an enqueue): idle workers try a claim at once.
  void poke();
  // Each worker thread and the steady-clock time it last showed life (a claim attempt, a wait, a job heartbeat):
  // readiness reports a worker stuck outside an agent run (git, the store) or whose agent stopped heartbeating.
  struct WorkerLiveness {
    std::string worker;
    std::chrono::steady_clock::time_point last_alive;
  };
  std::vector<WorkerLiveness> liveness() const;
  bool running() const;  // from any thread (readiness), while the owner may be in start() or stop()

  // Pokes on every transition: the job scheduler subscribed before us may just have enqueued the stage's agent.
  void subscribe_to(EventBus& bus) {
    bus.subscribe("worker pool", [this](const TransitionFired&) {
      poke();
      return Status{};
    });
  }

 private:
  void run(std::stop_token stop, const std::string& worker, std::atomic<std::chrono::steady_clock::time_point>& alive);

  JobRunner& runner_;
  JobStore& jobs_;
  const Clock& clock_;
  spdlog::logger& log_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  unsigned long pokes_ = 0;            // guarded by mu_: a generation, so one poke wakes every idle worker
  // Guards the vectors below against running() and liveness() on other threads (the HTTP ones of /readyz) while
  // the owner starts or stops the pool. Not held by the workers, nor while joining them.
  mutable std::mutex state_mu_;
  // One slot per thread, made in start() before the threads and never resized while they run.
  std::vector<std::string> worker_ids_;
  std::unique_ptr<std::atomic<std::chrono::steady_clock::time_point>[]> alive_;
  std::vector<std::jthread> threads_;  // last member, so they are stopped before the others are destroyed
};

}  // namespace orch
