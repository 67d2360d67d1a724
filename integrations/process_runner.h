// integrations/process_runner.h: runs a command with posix_spawn (an argv array, never a shell) in its own process
// group, waits for it with a timeout, and returns its exit code. On timeout (or a stop request) the whole group gets
// SIGTERM, then SIGKILL after a grace; processes the command leaves behind in its group are killed too.
// Thread-safe: run() may be called from several threads at once; each call owns its child.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "engine/clock.h"
#include "engine/facts.h"

namespace orch {

struct ProcessSpec {
  std::vector<std::string> argv;                // argv[0] without a '/' is looked up on PATH
  std::string cwd;                              // "" = orch's own working directory
  std::optional<std::vector<std::string>> env;  // "K=V" entries, exactly these; nullopt = inherit orch's
  std::string log_path;                         // stdout and stderr appended here; "" = /dev/null
  // Set: stdout and stderr go through a pipe to this function instead of log_path. It is called on the thread that
  // runs the command, while it waits (no thread of its own). After the group is gone, what the pipe still holds is
  // read for at most output_drain: a process that left the group (setsid) and kept the pipe open cannot hold us.
  std::function<void(std::string_view)> on_output;
  Millis output_drain{2000};
  Millis timeout{0};                    // 0 = no timeout
  Millis kill_grace{2000};              // between SIGTERM and SIGKILL
  Millis heartbeat_interval{0};         // 0 = no heartbeat
  std::function<void()> heartbeat;      // called every heartbeat_interval while the command runs
  std::function<void(pid_t)> on_start;  // the child's pid, which is also its process group id
  std::stop_token stop;                 // a stop request ends the command as a timeout does
};

class ProcessRunner final : public CommandRunner {
 public:
  // The exit code (0-255). Killed by a signal, timed out or stopped: kUnavailable naming why.
  // Could not start (no such program or directory): kInvalid.
  Result<int> run(const ProcessSpec& spec);
  Result<int> run(const std::vector<std::string>& argv, const std::string& cwd, std::chrono::seconds timeout) override;

  // Makes this process adopt the orphans of its descendants (prctl PR_SET_CHILD_SUBREAPER), so that the
  // killed leftovers of a command's group are reaped here rather than left as zombies under a PID 1 that
  // may never reap them (a container's init). Process-wide: app/ calls it once at start-up; tests too.
  static bool become_child_subreaper();
};

}  // namespace orch
