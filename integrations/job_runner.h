// integrations/job_runner.h: JobRunner runs one claimed job to its end, on the calling thread: the task's worktree,
// the task JSON file, the agent as its own process group with a clean environment (docs/contracts.md "The agent's
// environment"), heartbeats, the timeout, the job's log (integrations/job_log.h), then on exit 0 (or a post_review
// stage's exit 3) the JobReporter with the run's summary and the follow-up steps push, open_pr and gate
// (advance_if_gate_passed), each persisted and retried on its own (docs/adr/0010). A failed attempt goes to the
// AttemptPolicy (engine/attempt_policy.h), the rule the sweeper uses too. Who claims the job and on which thread is
// not its business: the local WorkerPool (integrations/worker_pool.h) is one caller. Thread-safe: one run() per
// claimed job, from any thread. Before the agent starts and after it ran, the spend budgets (engine/budget.h): a spent
// budget holds the task and leaves the job queued, its agent not started.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <variant>
#include <stop_token>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "engine/attempt_policy.h"
#include "engine/budget.h"
#include "engine/clock.h"
#include "engine/config.h"
#include "engine/facts.h"
#include "engine/layout.h"
#include "engine/stage_engine.h"
#include "engine/store.h"
#include "engine/telemetry.h"
#include "engine/write_back.h"
#include "integrations/agent_launch.h"
#include "integrations/git.h"
#include "integrations/process_runner.h"

namespace orch {

// What an agent's successful run produced, for those who report it (write-back, docs/adr/0013).
struct AgentResult {
  int exit_code = 0;
  std::string summary;
  std::optional<std::string> verdict;
};  // verdict:
//   "APPROVED" (exit 0) / "REQUEST_CHANGES" (exit 3) on a post_review stage, nullopt elsewhere
struct JobReporter {
  virtual ~JobReporter() = default;
  // Called once per successful agent run, after the agent exited and BEFORE the job records its first follow-up
  // step (so a crash in between runs the agent again and the reporter again: its writes must be idempotent).
  // A non-ok status fails the attempt like a failed step would (kUnavailable: retried).
  virtual Status agent_succeeded(const JobRow& job, const TaskRow& task, const AgentResult& result) = 0;
};
// The null object: nobody is told.
struct NoReporter final : JobReporter {
  Status agent_succeeded(const JobRow&, const TaskRow&, const AgentResult&) override { return {}; }
};
inline JobReporter& no_reporter() {
  static NoReporter none;
  return none;
}

struct WorkerOptions {
  int workers = 2;   // JobsSpec::workers
  JobLimits limits;  // the max_running limits every claim respects (job_limits(config)); none by default
  ClaimScope scope;  // the jobs this pool claims (server_claim_scope(config)); every job by default
  // Heartbeats must come well inside JobsSpec::heartbeat_stale (150 s by default), or the sweeper fails the job.
  Millis heartbeat_interval{std::chrono::seconds(10)};
  // An idle worker claims again this often without a poke: jobs enqueued by other processes, backoffs coming due.
  Millis poll_interval{std::chrono::seconds(5)};
  Millis kill_grace{std::chrono::seconds(10)};  // between SIGTERM and SIGKILL to the agent's group
  // The per-job log keeps the first (cap - 64 KiB) and the last 64 KiB of each run's output (integrations/job_log.h).
  std::size_t log_cap_bytes = 1024 * 1024;
  AttemptOptions attempts{};  // the agent's retries (engine/attempt_policy.h)
  // The follow-up steps after the agent exited 0 (push, open_pr, gate; ADR 0010) are retried on their own, never by
  // running the agent again: a step's try n+1 waits step_backoff * 2^(n-1), at most step_backoff_max, and after
  // step_max_attempts failed tries the job fails with the step's error.
  int step_max_attempts = 8;  // JobsSpec::step_attempts
  Seconds step_backoff{15};
  Seconds step_backoff_max{std::chrono::minutes(5)};
  Telemetry* telemetry = &no_telemetry();  // told how long each agent ran and how it ended; never null
  // Worker ids are "<replica_id>/<pid>/<n>" ("<pid>/<n>" when empty): start-up recovery judges only its own
  // replica's workers by their pid.
  std::string replica_id;
  WriteBack* write_back = &WriteBack::off();  // says in Plane and on the PR that a PR was opened; never null
  JobReporter* reporter = &no_reporter();     // told of each successful agent run with its summary; never null
};

// The config's [jobs] table as worker options: its worker count, and a heartbeat a tenth of the stale threshold
// (between 1 s and 10 s) so that a few lost heartbeats never look like a dead worker to the sweeper.
WorkerOptions worker_options_from(const JobsSpec& jobs);

// What a run needs, by role: the task side (the store, the engine that moves the task, the rule for failures) and
// the outside world (git, processes, the code host). All outlive the runner.
struct JobRunnerDeps {
  Store& store;
  StageEngine& engine;
  AttemptPolicy& attempts;
  GitWorkspaces& git;
  ProcessRunner& processes;
  CodeHost& code_host;
  const Config& config;
  const DataLayout& layout;
  const Clock& clock;
  spdlog::logger& log;
};

class JobRunner {
 public:
  JobRunner(JobRunnerDeps deps, WorkerOptions options = {});

  // Runs a job claimed by the caller (status running) to its end and records the outcome. Never throws.
  // A stop request (pool shutdown) stops the agent and requeues the job. `alive` is called at each heartbeat.
  JobResult run(const JobRow& job, std::stop_token stop = {}, const std::function<void()>& alive = {});

  // A runner's report of the agent it ran for `job` (docs/adr/0023), taken over from its claim by the caller (the
  // job is running for this process). What it left (summary.md, usage.json) is already in the job's output directory
  // here, its log in the job's log. The same rules as a local run: a failure is an attempt that failed; a success is
  // reported, its pushed `head_sha` recorded, and the job goes back to the queue at its step open_pr, which only the
  // server's pool claims (ClaimScope::steps). Never throws.
  struct RemoteRun {
    Result<int> code = 0;  // the agent's exit code, or why it did not run or was stopped (as AgentLauncher::run)
    std::string head_sha;  // the head of the task's branch the runner pushed ("" when it pushed nothing)
    double seconds = 0;    // how long the agent ran
  };
  JobResult finish_remote(const JobRow& job, const RemoteRun& run);
  // What run() checks before it launches, for a job a runner has just claimed: the task still waits for it, its agent
  // and project are configured, no spend budget is spent. A JobResult: the job was settled here (failed, abandoned,
  // or back in the queue for a held task) and the runner is told there is nothing to run.
  struct Ready {
    TaskRow task;
    const StageSpec* stage;
    const AgentSpec* agent;
    const ProjectSpec* project;
  };
  std::variant<Ready, JobResult> before_remote_start(const JobRow& job);

  const AgentLauncher& launcher() const { return launcher_; }
  AttemptPolicy& attempts() { return deps_.attempts; }
  const WorkerOptions& options() const { return options_; }

 private:
  using Retry = AttemptPolicy::Retry;
  JobResult run_claimed(const JobRow& job, std::stop_token stop, const std::function<void()>& alive);
  std::variant<Ready, JobResult> prepare(const JobRow& job);
  // The job's stage, agent and project as configured; a JobResult (blocked: retrying cannot help) when one is missing.
  std::variant<Ready, JobResult> configured(const JobRow& job, const TaskRow& task);
  std::optional<JobResult> hold_if_over_budget(const JobRow& job, const TaskRow& task);
  // An exception escaped an adapter while handling `job`: this job only fails ("internal: ..."), and is abandoned.
  JobResult failed_unexpectedly(const JobRow& job, const std::exception& e);
  JobResult attempt_failed(const JobRow& job, const std::string& reason, Retry retry) {
    return deps_.attempts.attempt_failed(job, reason, retry);
  }
  // The task is gone or has moved on (another visit or stage): the job is failed with why, and abandoned.
  std::optional<JobResult> abandon_if_moved_on(const JobRow& job, const std::optional<TaskRow>& task);
  // The follow-up steps from the job's current one on (job.step; "" right after the agent exited 0).
  JobResult run_steps(const JobRow& job, const ProjectSpec& project, const AgentSpec& agent, const StageSpec& stage);
  // A failed try of `step`, whose earlier failed tries were `tries`: queued again after the step's backoff, or, out of
  // budget (or kInvalid), the job fails with the step's error.
  JobResult step_failed(const JobRow& job, const TaskRow& task, const std::string& step, int tries, const Status& s);
  // The agent ran successfully (exit 0, or the verdict exit on a post_review stage): the reporter is told.
  // A failure to report fails the attempt; nullopt goes on to the follow-up steps.
  std::optional<JobResult> report_success(const JobRow& job, const StageSpec& stage, int exit_code);
  Seconds step_backoff(int tries) const;
  // The head of the task's branch after a push: the sha -> branch map and the task's head_sha.
  void record_pushed_head(const ProjectSpec& project, const TaskRow& task, const std::string& sha);
  // What the agent's run spent, and the budgets checked with it while the task still waits for it.
  void account_run(const JobRow& job, const TaskRow& task, bool succeeded, bool counts);
  // The run's usage.json added to the job, its task and its project (nullopt: none reported, or it could not be).
  std::optional<Spend> record_usage(const JobRow& job);

  const JobRunnerDeps deps_;
  const WorkerOptions options_;
  const AgentLauncher launcher_;
  BudgetGuard budget_;  // spend budgets: checked before the agent starts and after it ran (docs/adr/0021)
};

}  // namespace orch
