// DESIGN: the child is spawned as the leader of a new process group, so one kill(-pgid) reaches everything it
// started. We wait on a pidfd (and an eventfd for stop requests) with poll(), which wakes on exit, on the next
// heartbeat or at the deadline, whichever is first: no sleeping loop. With an output sink the same poll() drains the
// command's output pipe, so the thread that waits is the one that pumps its output. The leader is detected with the
// pidfd but reaped only after its group has been killed, so the group id cannot be reused by an unrelated process in
// between.
#include "integrations/process_runner.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "integrations/unique_fd.h"

extern char** environ;

namespace orch {

namespace {

using Steady = std::chrono::steady_clock;

std::string errno_text(int err) { return strerror(err); }

std::string signal_text(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return std::to_string(sig) + (abbrev ? std::string(" (SIG") + abbrev + ")" : "");
}

// Whether the leader has exited, without reaping it.
bool exited(pid_t pid) {
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return errno == ECHILD;
  return info.si_pid == pid;
}

// The read end of the command's output pipe and where its bytes go; fd -1 once the pipe reported end-of-file.
struct OutputPipe {
  int fd = -1;
  const std::function<void(std::string_view)>* sink = nullptr;

  // Reads what is there (the fd is non-blocking); closes at end-of-file or on an error.
  void read_available() {
    char buf[16 * 1024];
    while (fd >= 0) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n > 0) {
        (*sink)(std::string_view(buf, static_cast<std::size_t>(n)));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      close(fd);  // 0: every writer is gone; another error: nothing more will come
      fd = -1;
    }
  }
  ~OutputPipe() {
    if (fd >= 0) close(fd);
  }
};

// Waits until the leader exits, the deadline passes, or a stop is requested, and says which came first.
// `beat` is called every `interval` meanwhile; `out` (optional) is drained as it fills. Without pidfd support
// (Linux < 5.3) it polls every 10 ms.
enum class Woke { kExited, kDeadline, kStopped };
Woke wait_for_exit(pid_t pid, int pidfd, int stopfd, std::optional<Steady::time_point> deadline, Millis interval,
                   const std::function<void()>& beat, OutputPipe* out = nullptr) {
  auto next_beat = Steady::now() + interval;
  while (true) {
    auto now = Steady::now();
    if (deadline && now >= *deadline) return exited(pid) ? Woke::kExited : Woke::kDeadline;
    if (beat && interval.count() > 0 && now >= next_beat) {
      beat();
      next_beat = now + interval;
    }
    Steady::time_point until = Steady::time_point::max();
    if (deadline) until = *deadline;
    if (beat && interval.count() > 0) until = std::min(until, next_beat);
    int timeout_ms = -1;
    if (until != Steady::time_point::max())
      timeout_ms =
          static_cast<int>(std::clamp<long long>(std::chrono::ceil<Millis>(until - Steady::now()).count(), 0, 1 << 30));
    if (pidfd < 0) timeout_ms = timeout_ms < 0 ? 10 : std::min(timeout_ms, 10);
    pollfd fds[3] = {{pidfd, POLLIN, 0}, {stopfd, POLLIN, 0}, {out ? out->fd : -1, POLLIN, 0}};
    int n = poll(fds, 3, timeout_ms);
    if (n < 0 && errno != EINTR) return exited(pid) ? Woke::kExited : Woke::kDeadline;
    if (n > 0 && out && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) out->read_available();
    if (exited(pid)) return Woke::kExited;
    if (n > 0 && (fds[1].revents & POLLIN)) return Woke::kStopped;
  }
}

// After the group is gone: the rest of the output, until every writer closed the pipe or `limit` passed.
void drain(OutputPipe& out, Millis limit) {
  const auto until = Steady::now() + limit;
  while (out.fd >= 0) {
    const auto left = std::chrono::ceil<Millis>(until - Steady::now()).count();
    if (left <= 0) return;
    pollfd fd{out.fd, POLLIN, 0};
    int n = poll(&fd, 1, static_cast<int>(left));
    if (n < 0 && errno != EINTR) return;
    if (n > 0) out.read_available();
  }
}

// Reaps whatever of the (already SIGKILLed) group became our child, as a subreaper; bounded, since a process in
// uninterruptible sleep dies only when its I/O ends.
void reap_group(pid_t pgid) {
  auto until = Steady::now() + std::chrono::seconds(2);
  while (Steady::now() < until) {
    int st = 0;
    pid_t r = waitpid(-pgid, &st, WNOHANG);
    if (r < 0) return;  // ECHILD: none of the group is (any longer) our child
    if (r == 0) {
      if (kill(-pgid, 0) != 0 && errno == ESRCH) return;
      // Waiting for a killed process we do not get notified about: there is no fd to wait on.
      std::this_thread::sleep_for(Millis(2));
    }
  }
}

}  // namespace

bool ProcessRunner::become_child_subreaper() { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0; }

Result<int> ProcessRunner::run(const std::vector<std::string>& argv, const std::string& cwd,
                               std::chrono::seconds timeout) {
  ProcessSpec spec;
  spec.argv = argv;
  spec.cwd = cwd;
  spec.timeout = timeout;
  return run(spec);
}

Result<int> ProcessRunner::run(const ProcessSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) return invalid("process: empty argv");
  const std::string name = spec.argv[0];

  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  if (spec.env) {
    for (const auto& e : *spec.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  OutputPipe out;
  int write_end = -1;
  if (spec.on_output) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      posix_spawn_file_actions_destroy(&actions);
      return unavailable("process: cannot create the output pipe: " + errno_text(errno));
    }
    out.fd = fds[0];
    out.sink = &spec.on_output;
    fcntl(out.fd, F_SETFL, fcntl(out.fd, F_GETFL) | O_NONBLOCK);
    write_end = fds[1];
    posix_spawn_file_actions_adddup2(&actions, write_end, 1);  // dup2 clears O_CLOEXEC on the copy
  } else if (spec.log_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 1, spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);  // no socket or database handle leaks into the child
  if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, spec.cwd.c_str());

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  pid_t pid = -1;
  int err = posix_spawnp(&pid, name.c_str(), &actions, &attr, argv.data(), spec.env ? envp.data() : environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (write_end >= 0) close(write_end);  // the child has its copy; ours would keep the pipe from ever ending
  if (err != 0)
    return invalid("process: cannot start '" + name + "'" + (spec.cwd.empty() ? "" : " in '" + spec.cwd + "'") + ": " +
                   errno_text(err));
  if (spec.on_start) spec.on_start(pid);

  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  UniqueFd stopfd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  std::stop_callback on_stop(spec.stop, [&stopfd] {
    uint64_t one = 1;
    [[maybe_unused]] auto n = write(stopfd.get(), &one, sizeof one);
  });

  std::optional<Steady::time_point> deadline;
  if (spec.timeout.count() > 0) deadline = Steady::now() + spec.timeout;
  Woke woke = wait_for_exit(pid, pidfd.get(), stopfd.get(), deadline, spec.heartbeat_interval, spec.heartbeat,
                            spec.on_output ? &out : nullptr);

  std::string killed_why;
  if (woke != Woke::kExited) {
    killed_why = woke == Woke::kStopped ? "stopped" : "timed out after " + std::to_string(spec.timeout.count()) + " ms";
    kill(-pid, SIGTERM);
    wait_for_exit(pid, pidfd.get(), -1, Steady::now() + spec.kill_grace, Millis(0), nullptr,
                  spec.on_output ? &out : nullptr);
  }
  // The leader is gone (or about to be): nothing of its group outlives the command.
  kill(-pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  reap_group(pid);
  if (spec.on_output) drain(out, spec.output_drain);

  if (!killed_why.empty()) return unavailable("process '" + name + "' " + killed_why + "; its group was killed");
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return unavailable("process '" + name + "' killed by signal " + signal_text(WTERMSIG(status)));
  return internal("process '" + name + "': unexpected wait status " + std::to_string(status));
}

}  // namespace orch
