// The agent is data-driven from the outside world, so it gets nothing of ours: a fresh environment (the ORCH_*
// variables of docs/contracts.md, its agent's `env` table, a minimal PATH, HOME = the worktree), no file descriptors
// (the process runner closes them), its own process group (a timeout kills everything it started), and the task's
// attacker-controlled text (title, description) only inside the JSON file named by ORCH_TASK_JSON.
// What it may leave for us goes into ORCH_OUTPUT_DIR, emptied before each run.
//
// Output goes through a pipe that the process runner drains into the job's log (integrations/job_log.h) while it
// waits for the agent, so the agent never blocks on a full log and the log never grows past its cap.
#include "integrations/agent_launch.h"

#include <errno.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "integrations/job_log.h"

namespace orch {
namespace fs = std::filesystem;

Result<int> AgentLauncher::run(const JobRow& job, const TaskRow& task, const AgentSpec& agent,
                               const std::string& worktree, const LaunchHooks& hooks) const {
  if (Status s = write_task_json(job, task, worktree); !s.ok()) return s;
  if (Status s = prepare_output_dir(job.id); !s.ok()) return s;
  const std::string header = "[orch] job " + std::to_string(job.id) + ": " + agent.name + " for " + task.work_item_key +
                             " in " + job.stage + ", attempt " + std::to_string(job.attempt) + ", started " +
                             format_rfc3339(clock_.now()) + "\n";
  auto log = JobLog::open(layout_.job_log(job.id), options_.log_cap_bytes, header);
  if (!log.ok()) return unavailable(log.status().message);
  JobLog& job_log = *log.value();

  ProcessSpec spec;
  spec.argv = agent.argv;
  spec.cwd = worktree;
  spec.env = environment(job, task, agent, worktree);
  spec.on_output = [&job_log, &hooks](std::string_view output) {
    job_log.write(output);
    if (hooks.on_output) hooks.on_output(output);
  };
  spec.timeout = agent.timeout;
  spec.kill_grace = hooks.kill_grace.value_or(options_.kill_grace);
  spec.heartbeat_interval = options_.heartbeat_interval;
  spec.heartbeat = hooks.heartbeat;
  pid_t group = 0;
  spec.on_start = [&group, &hooks](pid_t pid) {
    group = pid;
    if (hooks.on_start) hooks.on_start(pid);
  };
  spec.stop = hooks.stop;
  Result<int> code = processes_.run(spec);
  // The process runner kills the whole group once the agent is gone; check that nothing of it was left (a process
  // that ignored SIGTERM and outlived the reap), and kill again what was.
  const bool gone = group <= 0 || process_group_gone(group, std::chrono::seconds(5));
  if (!gone) job_log.write("[orch] a process of the agent's group " + std::to_string(group) + " outlived SIGKILL\n");
  if (hooks.group_gone) *hooks.group_gone = gone;
  job_log.finish("[orch] " + (code.ok() ? "exit " + std::to_string(code.value()) : code.status().message) + "\n");
  return code;
}

bool process_group_gone(pid_t group, Millis within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  for (;;) {
    if (::kill(-group, 0) != 0 && errno == ESRCH) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    ::kill(-group, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a SIGKILLed process is gone within a tick
  }
}

fs::path AgentLauncher::output_dir(JobId job) const {
  std::error_code ec;
  fs::path dir = fs::absolute(layout_.job_output(job), ec);
  return ec ? layout_.job_output(job) : dir.lexically_normal();
}

Status AgentLauncher::prepare_output_dir(JobId job) const {
  const fs::path dir = output_dir(job);
  std::error_code ec;
  // remove_all removes symlinks, never what they point to: whatever an earlier attempt left there goes, nothing else.
  fs::remove_all(dir, ec);
  if (ec) return unavailable("cannot empty the output directory " + dir.string() + ": " + ec.message());
  fs::create_directories(dir, ec);
  if (ec) return unavailable("cannot create the output directory " + dir.string() + ": " + ec.message());
  return {};
}

Status AgentLauncher::write_task_json(const JobRow& job, const TaskRow& task, const std::string& worktree) const {
  nlohmann::json j = {
      {"task_id", task.id},
      {"job_id", job.id},
      {"project", task.project},
      {"work_item_id", task.work_item_id},
      {"work_item_key", task.work_item_key},
      {"title", task.title},
      {"description", task.description},
      {"stage", job.stage},
      {"visit", job.visit},
      {"agent", job.agent},
      {"branch", task.branch},
      {"worktree", worktree},
      {"attempt", job.attempt},
      {"rejection_reason", task.rejection_reason},
      {"pr_number", task.pr_number ? nlohmann::json(*task.pr_number) : nlohmann::json(nullptr)},
      {"head_sha", task.head_sha.empty() ? nlohmann::json(nullptr) : nlohmann::json(task.head_sha)},
  };
  // Tracker text is not guaranteed to be valid UTF-8: replace bad bytes rather than fail the job.
  const std::string text = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  const fs::path path = layout_.task_json(job.id);
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  const std::string tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) return unavailable("cannot write " + tmp + ": " + std::strerror(errno));
  }
  fs::rename(tmp, path, ec);  // the agent never reads a half-written file
  if (ec) return unavailable("cannot write " + path.string() + ": " + ec.message());
  return {};
}

std::vector<std::string> AgentLauncher::environment(const JobRow& job, const TaskRow& task, const AgentSpec& agent,
                                                    const std::string& worktree) const {
  std::map<std::string, std::string> env = {
      {"PATH", "/usr/local/bin:/usr/bin:/bin"},
      {"HOME", worktree},
  };
  for (const auto& [k, v] : agent.env) env[k] = v;  // may set PATH or HOME, never an ORCH_* below
  env["ORCH_TASK_ID"] = std::to_string(task.id);
  env["ORCH_WORK_ITEM_ID"] = task.work_item_id;
  env["ORCH_WORK_ITEM_KEY"] = task.work_item_key;
  env["ORCH_PROJECT"] = task.project;
  env["ORCH_STAGE"] = job.stage;
  env["ORCH_BRANCH"] = task.branch;
  env["ORCH_WORKTREE"] = worktree;
  env["ORCH_ATTEMPT"] = std::to_string(job.attempt);
  env["ORCH_REJECTION_REASON"] = task.rejection_reason;
  std::error_code ec;
  const fs::path task_json = fs::absolute(layout_.task_json(job.id), ec);
  env["ORCH_TASK_JSON"] = (ec ? layout_.task_json(job.id) : task_json.lexically_normal()).string();
  env["ORCH_OUTPUT_DIR"] = output_dir(job.id).string();
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env) {
    std::string value = v;
    value.erase(std::remove(value.begin(), value.end(), '\0'), value.end());
    out.push_back(k + "=" + value);
  }
  return out;
}

}  // namespace orch
