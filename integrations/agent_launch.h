// integrations/agent_launch.h: AgentLauncher runs one agent for one job, and nothing else: the task JSON file, the
// emptied output directory, the job's log with its header, the agent as its own process group with exactly the
// agent environment of docs/contracts.md, the timeout and the heartbeats. It knows no store: the server's JobRunner
// (integrations/job_runner.h) and a remote runner (app/runner_agent.h) both launch through it and decide themselves
// what the exit code means. Thread-safe: one run() per job, from any thread.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/layout.h"
#include "engine/model.h"
#include "engine/status.h"
#include "integrations/process_runner.h"

namespace orch {

struct LaunchOptions {
  Millis heartbeat_interval{std::chrono::seconds(10)};
  Millis kill_grace{std::chrono::seconds(10)};  // between SIGTERM and SIGKILL to the agent's group
  // The per-job log keeps the first (cap - 64 KiB) and the last 64 KiB of each run's output (integrations/job_log.h).
  std::size_t log_cap_bytes = 1024 * 1024;
};

// What one launch is told while the agent runs (all optional).
struct LaunchHooks {
  std::stop_token stop;                             // stops the agent (SIGTERM, grace, SIGKILL) as a timeout does
  std::function<void()> heartbeat;                  // every heartbeat_interval while it runs
  std::function<void(std::string_view)> on_output;  // every byte it prints, after the log has it
  std::function<void(pid_t)> on_start;              // its pid, which is also its process group id
  // Set after the run: whether no process of the agent's group was left (checked, and SIGKILLed again if one was).
  bool* group_gone = nullptr;
  std::optional<Millis> kill_grace;  // instead of LaunchOptions::kill_grace (a runner: the server's cancel_grace)
};

// On a post_review stage the agent's exit code is its verdict: 0 approves, this one requests changes; both are a
// successful run. Elsewhere it is a failure like any other non-zero exit.
inline constexpr int kExitRequestChanges = 3;
// Whether a launch that ended with `code` is a successful run (for the server's JobRunner and a remote runner alike).
inline bool agent_run_succeeded(const Result<int>& code, bool post_review) {
  return code.ok() && (code.value() == 0 || (post_review && code.value() == kExitRequestChanges));
}

// Whether no process of `group` is left, SIGKILLing what is, for at most `within`.
bool process_group_gone(pid_t group, Millis within);

class AgentLauncher {
 public:
  // The files go where `layout` says (task_json, job_output, job_log of the job's id).
  AgentLauncher(ProcessRunner& processes, const DataLayout& layout, const Clock& clock, LaunchOptions options)
      : processes_(processes), layout_(layout), clock_(clock), options_(options) {}

  // Runs `agent` for `job` in `worktree` until it exits: its exit code (0-255). kUnavailable: it could not be
  // prepared (the task file, the output directory, the log), or it was killed, timed out or stopped; kInvalid: it
  // could not start. The log ends with a line saying how it ended.
  Result<int> run(const JobRow& job, const TaskRow& task, const AgentSpec& agent, const std::string& worktree,
                  const LaunchHooks& hooks) const;

  // ORCH_OUTPUT_DIR of the job, absolute (the agent runs in the worktree, not where orch was started).
  std::filesystem::path output_dir(JobId job) const;
  const DataLayout& layout() const { return layout_; }
  const LaunchOptions& options() const { return options_; }

 private:
  Status write_task_json(const JobRow& job, const TaskRow& task, const std::string& worktree) const;
  Status prepare_output_dir(JobId job) const;  // exists and is empty: an earlier attempt's files are gone
  std::vector<std::string> environment(const JobRow& job, const TaskRow& task, const AgentSpec& agent,
                                       const std::string& worktree) const;

  ProcessRunner& processes_;
  const DataLayout& layout_;
  const Clock& clock_;
  const LaunchOptions options_;
};

}  // namespace orch
