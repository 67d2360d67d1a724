// tests/support/orch_process.h: the real `orch` binary as a child process for end-to-end tests: a config file and
// an environment, `orch serve` spawned on a free loopback port, /healthz awaited, SIGTERM / SIGKILL, and
// `orch status --json` read back. Its stdout and stderr go to a log file the test can print on failure.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace orch::testing {

// A loopback port nobody listens on right now (bound once, then released).
int free_loopback_port();

// Runs argv (argv[0] a path) with exactly `env`, capturing stdout; returns the exit code (-1 on spawn failure).
int run_capture(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env, std::string* out,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

class OrchProcess {
 public:
  // `env` is the whole environment of the child (PATH and HOME are added when missing).
  OrchProcess(std::string config_path, std::map<std::string, std::string> env, std::string log_path);
  ~OrchProcess();  // SIGKILLs a child still running
  OrchProcess(const OrchProcess&) = delete;
  OrchProcess& operator=(const OrchProcess&) = delete;

  // Spawns `orch serve` (a new port each time unless ORCH_LISTEN is in env) and waits for /healthz.
  bool start(std::chrono::milliseconds deadline = std::chrono::seconds(20));
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string url(const std::string& path) const { return base_url() + path; }

  // SIGTERM, then waits; returns the exit code, or nullopt if it did not exit in time (it is then SIGKILLed),
  // or -signal if a signal ended it.
  std::optional<int> terminate(std::chrono::milliseconds deadline = std::chrono::seconds(10));
  void kill_hard();  // SIGKILL and reap

  // `orch status --json` against the same config and environment (works with or without a running server).
  nlohmann::json status_json() const;
  nlohmann::json explain_json(const std::string& work_item_key) const;  // `orch explain KEY --json`; null on failure
  std::string log_tail(std::size_t max_bytes = 8000) const;
  const std::map<std::string, std::string>& env() const { return env_; }

 private:
  std::optional<int> wait_exit(std::chrono::milliseconds deadline);

  std::string config_path_;
  std::map<std::string, std::string> env_;
  std::string log_path_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// `orch runner --server URL --token-file F --work-dir D [EXTRA...]` as a child process (issue 22), its output in a
// log file. No readiness probe: a runner has no port; tests wait for what it does.
class RunnerProcess {
 public:
  RunnerProcess(std::vector<std::string> args, std::map<std::string, std::string> env, std::string log_path);
  ~RunnerProcess();  // SIGKILLs a child still running
  RunnerProcess(const RunnerProcess&) = delete;
  RunnerProcess& operator=(const RunnerProcess&) = delete;

  bool start();
  pid_t pid() const { return pid_; }
  void signal(int sig) const;  // SIGSTOP, SIGCONT, ...
  // SIGTERM, then waits: the exit code, nullopt if it did not exit in time (then SIGKILLed), -signal if one ended it.
  std::optional<int> terminate(std::chrono::milliseconds deadline = std::chrono::seconds(15));
  void kill_hard();
  // Waits for the child to exit by itself: as terminate(), without the SIGTERM.
  std::optional<int> wait_exit(std::chrono::milliseconds deadline);
  std::string log() const;

 private:
  std::vector<std::string> args_;
  std::map<std::string, std::string> env_;
  std::string log_path_;
  pid_t pid_ = -1;
};

}  // namespace orch::testing
