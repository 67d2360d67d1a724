// app/runner_agent.h: `orch runner --server URL`, the process that runs agents on another host (docs/adr/0023). It
// holds `capacity` slots; each long-polls the server for a job of its labels, makes the task's worktree in its own
// clone (integrations/git.h), launches the agent through the same AgentLauncher as the server's pool (the agent
// environment contract of docs/contracts.md), heartbeats and streams the log while the agent runs, pushes the branch
// after a successful run, and reports the result through its file outbox (app/runner_outbox.h): kept on disk until
// the server answers it, and replayed by the next start if this one could not deliver it. A heartbeat answered
// "cancelled" (the job was taken away: the sweeper failed it, or a person moved the task on) stops the agent's process
// group and drops the result. On stop() (SIGTERM) the running agents are stopped and their jobs handed back. The Runner
// owns its slot threads: start() and stop() are for its owner (cmd_runner) only.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "app/runner_outbox.h"
#include "engine/clock.h"
#include "engine/layout.h"
#include "engine/secret.h"
#include "integrations/agent_launch.h"
#include "integrations/git.h"
#include "integrations/http_client.h"
#include "integrations/process_runner.h"

namespace orch {

struct RunnerSettings {
  std::string server;                                // the orch server's base URL
  Secret token;                                      // the runner's token (`orch runner register`)
  std::vector<std::string> labels;                   // advertised; the server grants at most the registered ones
  int capacity = 1;                                  // jobs at once
  std::filesystem::path work_dir = "./runner-data";  // clones, worktrees, task files, logs
  Secret gitea_token;                                // ORCH_GITEA_TOKEN, for clones and pushes over http(s)
  std::chrono::seconds poll_wait{25};                // one long poll
};

class Runner {
 public:
  Runner(RunnerSettings settings, spdlog::logger& log);
  ~Runner() { stop(); }
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  void start();
  // Stops the agents (SIGTERM, grace, SIGKILL), hands their jobs back, joins. Idempotent.
  void stop();
  // Set when the server refused the token (401): the owner exits 1.
  bool refused() const { return refused_.load(); }

 private:
  void slot(std::stop_token stop, int n);
  void run_job(std::stop_token stop, const nlohmann::json& offer);
  // POSTs `body` to `target`; any answer as a value (never retried here). The long polls go through `poll_http_`,
  // whose transfers stop() aborts; the reports through `http_`, which still works while the slots hand jobs back.
  Result<HttpResponse> post(HttpClient& client, const std::string& target, const nlohmann::json& body);
  // A job's last word (its log tail, then its finish report), retried with backoff until the server answers it:
  // accepted (200) or refused for good (409/404); then it leaves the outbox. On stop it stays there for the next start.
  void deliver(std::stop_token stop, OutboxEntry entry);
  // What an earlier run of this runner left in the outbox: delivered at start, beside the slots.
  void replay(std::stop_token stop);

  const RunnerSettings settings_;
  spdlog::logger& log_;
  SystemClock clock_;
  RealSleeper poll_sleeper_;    // interrupted by stop(): an open long poll ends at once
  RealSleeper report_sleeper_;  // never interrupted
  DataLayout layout_;
  ProcessRunner processes_;
  GitWorkspaces git_;
  AgentLauncher launcher_;
  HttpClient poll_http_;
  HttpClient http_;
  RunnerOutbox outbox_;
  std::atomic<bool> refused_{false};
  std::jthread replay_;              // stopped (and joined) before the rest is destroyed, as the slots
  std::vector<std::jthread> slots_;  // last: stopped before the rest is destroyed
};

}  // namespace orch
