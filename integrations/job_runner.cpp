// Why it is built this way: a claimed job is the worker's until it writes the job's final status; everything that can
// go wrong in between becomes an attempt that failed (retried with exponential backoff up to the agent's max_attempts,
// then the task is blocked and a notification enqueued), except what retrying cannot fix (no agent or project
// configured, the program cannot start), which blocks at once. The task row decides whether the job still matters: a
// task that moved to another stage or visit meanwhile abandons the job without a retry. Once the agent has exited 0,
// though, its success stands: the calls that follow (push, open_pr, gate) are the job's steps (ADR 0010), persisted on
// the job row before each is done, retried on their own backoff through the queue (the job keeps its attempt, so the
// claim that takes it up again resumes the step instead of running the agent), and resumed after a restart.
//
// The agent itself is launched by the AgentLauncher (integrations/agent_launch.h): its clean environment, its process
// group, its log. What it leaves in ORCH_OUTPUT_DIR (summary.md) is read by job_summary, which trusts nothing about
// it (symlinks, fifos, size), and handed with the exit code to the JobReporter before the follow-up steps.
#include "integrations/job_runner.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <variant>

#include <nlohmann/json.hpp>

#include "integrations/agent_usage.h"
#include "integrations/job_summary.h"

namespace orch {
namespace {

namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

constexpr std::size_t kMaxPrTitle = 200;
// The follow-up steps after the agent exited 0, in order (ADR 0010). A job records the step it is at before doing it
// (begin_job_step), so that a failed try or a restart resumes there, and each is safe to do twice: pushing pushed
// commits changes nothing, the branch's open PR is adopted rather than a second one created, the gate is read again.
const std::string kSteps[] = {"push", "open_pr", "gate"};

// Why a job no longer matters to its task ("" when it still does): the task left the job's stage, or came back to
// it on a later visit, which has jobs of its own.
std::string superseded(const JobRow& job, const TaskRow& task) {
  if (task.stage == job.stage && task.visit == job.visit) return "";
  return "superseded: task is in " + task.stage + " (visit " + std::to_string(task.visit) + ")";
}

}  // namespace

WorkerOptions worker_options_from(const JobsSpec& jobs) {
  WorkerOptions o;
  o.workers = std::max(1, jobs.workers);
  o.heartbeat_interval = std::clamp<Millis>(std::chrono::duration_cast<Millis>(jobs.heartbeat_stale) / 10,
                                            std::chrono::seconds(1), std::chrono::seconds(10));
  o.step_max_attempts = std::max(1, jobs.step_attempts);
  o.kill_grace = jobs.cancel_grace;
  return o;
}

JobRunner::JobRunner(JobRunnerDeps deps, WorkerOptions options)
    : deps_(deps),
      options_(options),
      launcher_(deps.processes, deps.layout, deps.clock,
                LaunchOptions{options.heartbeat_interval, options.kill_grace, options.log_cap_bytes}),
      budget_(deps.store, deps.config, deps.clock, deps.log) {}

Seconds JobRunner::step_backoff(int tries) const {
  Seconds wait = options_.step_backoff;
  for (int i = 1; i < tries && wait < options_.step_backoff_max; ++i) wait *= 2;
  return std::min(wait, options_.step_backoff_max);
}

JobResult JobRunner::run(const JobRow& job, std::stop_token stop, const std::function<void()>& alive) {
  try {
    return run_claimed(job, stop, alive);
  } catch (const std::exception& e) {  // escaped an adapter: this job only
    return failed_unexpectedly(job, e);
  }
}

JobResult JobRunner::failed_unexpectedly(const JobRow& job, const std::exception& e) {
  deps_.log.error("jobs: job {} failed unexpectedly: {}", job.id, e.what());
  (void)deps_.store.finish_job(job.id, JobStatus::kFailed, std::string("internal: ") + e.what(), deps_.clock.now());
  return {JobOutcome::kAbandoned, e.what()};
}

std::optional<JobResult> JobRunner::abandon_if_moved_on(const JobRow& job, const std::optional<TaskRow>& task) {
  std::string why = task ? superseded(job, *task) : "task not found";
  if (why.empty()) return std::nullopt;
  (void)deps_.store.finish_job(job.id, JobStatus::kFailed, why, deps_.clock.now());
  return JobResult{JobOutcome::kAbandoned, why};
}

std::variant<JobRunner::Ready, JobResult> JobRunner::prepare(const JobRow& job) {
  auto found = deps_.store.find_task(job.task_id);
  if (!found.ok()) {
    // The store is failing: leave the job running; its heartbeat stops and the sweeper fails it as orphaned.
    deps_.log.warn("jobs: job {} cannot read its task: {}", job.id, found.status().to_string());
    return JobResult{JobOutcome::kAbandoned, found.status().message};
  }
  if (auto gone = abandon_if_moved_on(job, found.value())) return *gone;
  return configured(job, *found.value());
}

std::variant<JobRunner::Ready, JobResult> JobRunner::configured(const JobRow& job, const TaskRow& task) {
  Ready ready{task, nullptr, nullptr, nullptr};
  const Pipeline& pipeline = deps_.engine.pipeline();
  ready.stage = pipeline.stage(job.stage);
  ready.agent = pipeline.agent_of(job.stage);
  if (!ready.stage || !ready.agent || ready.agent->name != job.agent)
    return attempt_failed(job, "agent " + job.agent + " is not configured for stage " + job.stage, Retry::kNo);
  ready.project = deps_.config.find_project(ready.task.project);
  if (!ready.project) return attempt_failed(job, "project " + ready.task.project + " is not configured", Retry::kNo);
  return ready;
}

std::optional<JobResult> JobRunner::hold_if_over_budget(const JobRow& job, const TaskRow& task) {
  // A spent budget: the agent is not started. The task is held until a person lifts it, and the job goes back to the
  // queue, where the claim skips it until then (docs/adr/0021).
  auto held = budget_.before_start(job, task);
  if (!held.ok()) return attempt_failed(job, "budget: " + held.status().message, Retry::kAfterBackoff);
  if (!held.value()) return std::nullopt;
  if (Status s = deps_.store.requeue_job(job.id, deps_.clock.now()); !s.ok())
    deps_.log.warn("jobs: cannot put job {} of held {} back in the queue: {}", job.id, task.work_item_key,
                   s.to_string());
  return JobResult{JobOutcome::kHeld, "held for its budget"};
}

std::variant<JobRunner::Ready, JobResult> JobRunner::before_remote_start(const JobRow& job) {
  try {
    auto ready = prepare(job);
    if (auto* r = std::get_if<Ready>(&ready))
      if (auto stopped = hold_if_over_budget(job, r->task)) return *stopped;
    return ready;
  } catch (const std::exception& e) {
    return failed_unexpectedly(job, e);
  }
}

JobResult JobRunner::run_claimed(const JobRow& job, std::stop_token stop, const std::function<void()>& alive) {
  auto prepared = prepare(job);
  if (auto* result = std::get_if<JobResult>(&prepared)) return *result;
  const Ready& ready = std::get<Ready>(prepared);
  const TaskRow& task = ready.task;
  const StageSpec* stage = ready.stage;
  const AgentSpec* agent = ready.agent;
  const ProjectSpec* project = ready.project;
  // The agent exited 0 on an earlier claim of this job: resume its step. The agent never runs twice for one success.
  if (!job.step.empty()) return run_steps(job, *project, *agent, *stage);
  if (auto held = hold_if_over_budget(job, task)) return *held;

  auto worktree = deps_.git.ensure_worktree(*project, task);
  if (!worktree.ok())
    return attempt_failed(job, "worktree: " + worktree.status().message,
                          AttemptPolicy::retry_unless_invalid(worktree.status()));
  // The previous stage may have run on another replica (or a human pushed): start from the remote's branch.
  if (Status s = deps_.git.catch_up_worktree(*project, task); !s.ok())
    return attempt_failed(job, "worktree: " + s.message,
                          s.code == Code::kConflict ? Retry::kNo : AttemptPolicy::retry_unless_invalid(s));
  const std::string dir = worktree.value().path.string();

  std::stop_source halt;  // stops the agent: the pool is stopping, or the job was finished elsewhere
  std::stop_callback forward(stop, [&halt] { halt.request_stop(); });
  std::atomic<bool> lost{false};
  std::string moved_on;  // the task left the job's stage or visit while the agent ran: its work no longer counts
  LaunchHooks hooks;
  hooks.heartbeat = [&] {
    if (alive) alive();
    Status s = deps_.store.heartbeat_job(job.id, deps_.clock.now());
    if (s.code == Code::kConflict || s.code == Code::kNotFound) {
      lost = true;  // the sweeper (or an operator) finished it: our result would be refused
      halt.request_stop();
      return;
    }
    if (!s.ok()) {
      deps_.log.warn("jobs: heartbeat of job {} failed: {}", job.id, s.to_string());
      return;
    }
    // A human (or a replayed webhook) moved the task on: stop the agent now rather than let it hold this worker
    // until its timeout for a result nobody would use. A failing read decides nothing; the next heartbeat asks again.
    auto now_task = deps_.store.find_task(job.task_id);
    if (!now_task.ok()) return;
    // Back in the same stage on a later visit (a person's re-run, or a rollback into it): the agent is never killed.
    // It finishes, its result no longer counts (abandoned below), and the new visit's job starts after it: the claim
    // keeps one running job per task (docs/adr/0019).
    if (now_task.value() && now_task.value()->stage == job.stage) return;
    moved_on = now_task.value() ? superseded(job, *now_task.value()) : "superseded: the task is gone";
    if (!moved_on.empty()) halt.request_stop();
  };
  hooks.stop = halt.get_token();
  const auto agent_started = Steady::now();
  Result<int> code = launcher_.run(job, task, *agent, dir, hooks);
  // A reviewing agent requesting changes did its job: its verdict is a success like an approval.
  const bool succeeded = agent_run_succeeded(code, stage->post_review);
  {
    const AgentOutcome outcome = stop.stop_requested() || !moved_on.empty() ? AgentOutcome::kStopped
                                 : !code.ok()                               ? AgentOutcome::kError
                                 : succeeded                                ? AgentOutcome::kSucceeded
                                                                            : AgentOutcome::kFailed;
    options_.telemetry->agent_run(agent->name, job.stage, outcome,
                                  std::chrono::duration<double>(Steady::now() - agent_started).count());
  }

  account_run(job, task, succeeded, moved_on.empty() && !stop.stop_requested());
  if (!moved_on.empty()) {
    deps_.log.info("jobs: {} for {} stopped: {}", agent->name, task.work_item_key, moved_on);
    (void)deps_.store.finish_job(job.id, JobStatus::kFailed, moved_on, deps_.clock.now());
    return {JobOutcome::kAbandoned, moved_on};
  }
  if (stop.stop_requested()) {
    Status s = deps_.store.requeue_job(job.id, deps_.clock.now());
    if (!s.ok()) deps_.log.warn("jobs: cannot requeue job {} at shutdown: {}", job.id, s.to_string());
    return {JobOutcome::kRequeued, "stopped at shutdown"};
  }
  if (lost) return attempt_failed(job, "stopped: the job was finished elsewhere", Retry::kAfterBackoff);
  if (!code.ok()) return attempt_failed(job, code.status().message, AttemptPolicy::retry_unless_invalid(code.status()));
  if (!succeeded) return attempt_failed(job, "agent exited " + std::to_string(code.value()), Retry::kAfterBackoff);
  if (auto failed = report_success(job, *stage, code.value())) return *failed;
  // From here on the agent's success stands: what follows are the job's steps, retried on their own (ADR 0010).
  return run_steps(job, *project, *agent, *stage);
}

void JobRunner::account_run(const JobRow& job, const TaskRow& task, bool succeeded, bool counts) {
  // What the run spent counts whatever became of it; the budgets are checked when the task still waits for it.
  if (const std::optional<Spend> spend = record_usage(job); spend && counts) {
    auto after = budget_.after_run(job, task, *spend, !succeeded);
    if (!after.ok())
      deps_.log.warn("jobs: cannot check the budgets of {}: {}", task.work_item_key, after.status().to_string());
  }
}

JobResult JobRunner::finish_remote(const JobRow& job, const RemoteRun& run) {
  try {
    auto found = deps_.store.find_task(job.task_id);
    if (!found.ok()) return attempt_failed(job, "report: " + found.status().message, Retry::kAfterBackoff);
    const Pipeline& pipeline = deps_.engine.pipeline();
    const StageSpec* stage = pipeline.stage(job.stage);
    const AgentSpec* agent = pipeline.agent_of(job.stage);
    const bool succeeded = agent_run_succeeded(run.code, stage && stage->post_review);
    if (agent) {
      const AgentOutcome outcome = !run.code.ok() ? AgentOutcome::kError
                                   : succeeded    ? AgentOutcome::kSucceeded
                                                  : AgentOutcome::kFailed;
      options_.telemetry->agent_run(agent->name, job.stage, outcome, run.seconds);
    }
    if (found.value()) account_run(job, *found.value(), succeeded, superseded(job, *found.value()).empty());
    if (auto gone = abandon_if_moved_on(job, found.value())) return *gone;
    auto ready = configured(job, *found.value());
    if (auto* result = std::get_if<JobResult>(&ready)) return *result;
    const TaskRow& task = std::get<Ready>(ready).task;
    const ProjectSpec* project = std::get<Ready>(ready).project;
    if (!run.code.ok())
      return attempt_failed(job, run.code.status().message, AttemptPolicy::retry_unless_invalid(run.code.status()));
    if (!succeeded)
      return attempt_failed(job, "agent exited " + std::to_string(run.code.value()), Retry::kAfterBackoff);
    if (run.head_sha.empty())
      return attempt_failed(job, "push: the runner pushed no branch head", Retry::kAfterBackoff);
    if (auto failed = report_success(job, *stage, run.code.value())) return *failed;
    // The runner pushed: step push is done here with the head it reported; open_pr and gate run on the server.
    Status s = deps_.store.begin_job_step(job.id, "push", deps_.clock.now());
    if (s.code == Code::kConflict || s.code == Code::kNotFound)
      return {JobOutcome::kAbandoned, "the job was finished elsewhere: " + s.message};
    record_pushed_head(*project, task, run.head_sha);
    if (s = deps_.store.begin_job_step(job.id, "open_pr", deps_.clock.now()); s.ok())
      s = deps_.store.requeue_job(job.id, deps_.clock.now());
    if (!s.ok()) {
      // The job stays running for this process: the sweeper's heartbeat rule, or start-up recovery, takes it on.
      deps_.log.warn("jobs: cannot queue the steps of job {}: {}", job.id, s.to_string());
      return {JobOutcome::kAbandoned, s.message};
    }
    return {JobOutcome::kRequeued, "the agent succeeded on a runner; open_pr and gate follow here"};
  } catch (const std::exception& e) {
    return failed_unexpectedly(job, e);
  }
}

void JobRunner::record_pushed_head(const ProjectSpec& project, const TaskRow& task, const std::string& sha) {
  // The sha -> branch map lets a CI status event (which names no branch) find this task.
  if (Status s = deps_.store.record_branch_head(project.gitea_repo, task.branch, sha, deps_.clock.now()); !s.ok())
    deps_.log.warn("jobs: cannot record the head of {}: {}", task.branch, s.to_string());
  TaskFacts facts;
  facts.head_sha = sha;
  if (Status s = deps_.store.record_facts(task.id, facts, deps_.clock.now()); !s.ok())
    deps_.log.warn("jobs: cannot record facts of {}: {}", task.work_item_key, s.to_string());
}

std::optional<JobResult> JobRunner::report_success(const JobRow& job, const StageSpec& stage, int exit_code) {
  if (!options_.reporter) return std::nullopt;
  // A fresh row: the run may have taken long, and a job whose task moved on meanwhile has nothing to report.
  auto found = deps_.store.find_task(job.task_id);
  if (!found.ok()) return attempt_failed(job, "report: " + found.status().message, Retry::kAfterBackoff);
  if (auto gone = abandon_if_moved_on(job, found.value())) return gone;
  AgentResult result;
  result.exit_code = exit_code;
  result.summary = job_summary(launcher_.output_dir(job.id), deps_.layout.job_log(job.id));
  if (stage.post_review) result.verdict = exit_code == kExitRequestChanges ? "REQUEST_CHANGES" : "APPROVED";
  Status s = options_.reporter->agent_succeeded(job, *found.value(), result);
  if (s.ok()) return std::nullopt;
  deps_.log.warn("jobs: job {} cannot report its agent's success: {}", job.id, s.to_string());
  return attempt_failed(job, "report: " + s.message, AttemptPolicy::retry_unless_invalid(s));
}

std::optional<Spend> JobRunner::record_usage(const JobRow& job) {
  auto usage = read_agent_usage(launcher_.output_dir(job.id));
  if (!usage.ok()) {
    deps_.log.warn("jobs: job {} ({}): {}; no usage recorded", job.id, job.agent, usage.status().message);
    return std::nullopt;
  }
  if (!usage.value()) return std::nullopt;
  auto spend = deps_.store.record_usage(job.id, *usage.value());
  if (!spend.ok()) {
    deps_.log.warn("jobs: cannot record the usage of job {}: {}", job.id, spend.status().to_string());
    return std::nullopt;
  }
  return spend.value();
}

JobResult JobRunner::run_steps(const JobRow& job, const ProjectSpec& project, const AgentSpec& agent,
                               const StageSpec& stage) {
  const auto first = std::find(std::begin(kSteps), std::end(kSteps), job.step);
  for (auto at = first == std::end(kSteps) ? std::begin(kSteps) : first; at != std::end(kSteps); ++at) {
    const std::string step = *at;
    // A step resumed from the queue keeps its failed tries (the budget); a new one starts from none.
    const bool resumed = step == job.step;
    const int tries = resumed ? job.step_attempts : 0;
    if (!resumed) {
      Status s = deps_.store.begin_job_step(job.id, step, deps_.clock.now());
      if (s.code == Code::kConflict || s.code == Code::kNotFound)
        return {JobOutcome::kAbandoned, "the job was finished elsewhere: " + s.message};
      // Not fatal: the step is still done; a restart resumes at the last step recorded, and each is safe to redo.
      if (!s.ok()) deps_.log.warn("jobs: cannot record step {} of job {}: {}", step, job.id, s.to_string());
    }
    // The supersession check, with a fresh row: a human may have moved the task on, or the PR may be known by now.
    auto found = deps_.store.find_task(job.task_id);
    if (!found.ok()) return step_failed(job, TaskRow{}, step, tries, found.status());
    if (auto gone = abandon_if_moved_on(job, found.value())) return *gone;
    const TaskRow task = *found.value();

    if (step == "push") {
      if (Status s = deps_.git.push_branch(project, task); !s.ok()) return step_failed(job, task, step, tries, s);
      if (auto head = deps_.git.branch_head(project, task.branch); head.ok())
        record_pushed_head(project, task, head.value());
    } else if (step == "open_pr") {
      if (!stage.open_pr) continue;
      if (task.pr_number) {  // recorded (by this step before a crash, or by the PR's webhook): said once, by key
        if (Status s = options_.write_back->pull_request_opened(task, *task.pr_number); !s.ok())
          return step_failed(job, task, step, tries, s);
        continue;
      }
      // An earlier try may have created the PR and died before recording it (or its answer was lost): adopt the
      // branch's open PR before creating one, so that retries never open a second.
      auto existing = deps_.code_host.pull_request_for_branch(project.gitea_repo, task.branch);
      if (!existing.ok()) return step_failed(job, task, step, tries, existing.status());
      std::optional<PullRequestInfo> pr;
      if (existing.value() && existing.value()->open) pr = existing.value();
      if (!pr) {
        std::string title = task.work_item_key + ": " + task.title;
        if (title.size() > kMaxPrTitle) title.resize(kMaxPrTitle);
        auto created = deps_.code_host.create_pull_request(project.gitea_repo, task.branch, project.default_branch,
                                                           title, "Opened by orch for " + task.work_item_key + ".");
        if (!created.ok()) return step_failed(job, task, step, tries, created.status());
        pr = created.value();
      }
      // Stored before the PR is recorded, so that a crash in between says it on the retry.
      if (Status s = options_.write_back->pull_request_opened(task, pr->number); !s.ok())
        return step_failed(job, task, step, tries, s);
      TaskFacts facts;
      facts.pr_number = pr->number;
      facts.pr_state = pr->merged ? PrState::kMerged : pr->open ? PrState::kOpen : PrState::kClosed;
      // The gate reads the PR from the task row: without it recorded this step is not done.
      if (Status s = deps_.store.record_facts(task.id, facts, deps_.clock.now()); !s.ok())
        return step_failed(job, task, step, tries, s);
      deps_.log.info("jobs: pull request #{} for {}", pr->number, task.work_item_key);
    } else {  // gate
      auto advanced = deps_.engine.advance_if_gate_passed(task.id, Cause::kAgent, agent.name);
      // Only a transient failure is worth another try; kConflict means someone else moved the task meanwhile.
      if (!advanced.ok() && advanced.status().code == Code::kUnavailable)
        return step_failed(job, task, step, tries, advanced.status());
      if (Status s = deps_.store.finish_job(job.id, JobStatus::kSucceeded, "", deps_.clock.now()); !s.ok())
        deps_.log.warn("jobs: job {} succeeded but was already finished: {}", job.id, s.to_string());
      if (!advanced.ok()) {
        // Not a failure of the job: the reconciler evaluates the gate again once the task is idle.
        if (advanced.status().code != Code::kConflict)
          deps_.log.warn("jobs: {} succeeded for {}, gate not evaluated: {}", agent.name, task.work_item_key,
                         advanced.status().to_string());
        return {JobOutcome::kSucceeded, advanced.status().message};
      }
      if (!advanced.value().advanced)
        deps_.log.info("jobs: {} succeeded for {} in {}; waiting: {}", agent.name, task.work_item_key, job.stage,
                       advanced.value().gate.why);
      return {JobOutcome::kSucceeded, advanced.value().gate.why};
    }
  }
  return {JobOutcome::kAbandoned, "no follow-up step after " + job.step};  // unreachable: gate always returns
}

JobResult JobRunner::step_failed(const JobRow& job, const TaskRow& task, const std::string& step, int tries,
                                 const Status& s) {
  const TimePoint now = deps_.clock.now();
  const std::string error = step + ": " + s.message;
  const int failed = tries + 1;
  const int budget = std::max(1, options_.step_max_attempts);
  if (s.code != Code::kInvalid && failed < budget) {
    const Seconds wait = step_backoff(failed);
    Status w = deps_.store.fail_job_step(job.id, error, now + wait, now);
    if (w.code == Code::kConflict || w.code == Code::kNotFound)
      return {JobOutcome::kAbandoned, "the job was finished elsewhere: " + w.message};
    // The job stays running with its step recorded: the sweeper's heartbeat rule fails it in the end.
    if (!w.ok()) deps_.log.warn("jobs: cannot queue step {} of job {} again: {}", step, job.id, w.to_string());
    deps_.log.info("jobs: step {} of job {} failed (try {} of {}): {}; again in {}s", step, job.id, failed, budget,
                   s.message, wait.count());
    return {JobOutcome::kStepRetrying, error};
  }
  if (Status w = deps_.store.fail_job_step(job.id, error, std::nullopt, now); !w.ok() && w.code != Code::kConflict)
    deps_.log.warn("jobs: cannot fail job {} in step {}: {}", job.id, step, w.to_string());
  // Out of budget on the gate, the agent's work is still pushed (and its PR open): the reconciler's gate side reads
  // the gate again once the task is idle, as for any task. Out of budget on push or open_pr, a human must look.
  if (step == "gate" || task.id == 0) {
    deps_.log.warn("jobs: job {} failed in step {} after {} tries: {}", job.id, step, failed, s.message);
    return {JobOutcome::kAbandoned, error};
  }
  return deps_.attempts.block(job, task,
                              "step " + step + " failed " + std::to_string(failed) + " time(s): " + s.message);
}

}  // namespace orch
