#include "integrations/process_runner.h"

#include <doctest/doctest.h>
#include <errno.h>
#include <signal.h>

#include <atomic>

#include "tests/support/temp_dir.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

bool group_gone(pid_t pgid) { return kill(-pgid, 0) == -1 && errno == ESRCH; }

// Without a reaper, the killed grandchildren would stay zombies (still members of the group) under a PID 1 that
// does not reap; the test process adopts them as the app does.
const bool kSubreaper = ProcessRunner::become_child_subreaper();

}  // namespace

TEST_CASE("run returns the command's exit code") {
  ProcessRunner runner;
  CHECK(runner.run({"true"}, "", 10s).value() == 0);
  CHECK(runner.run({"sh", "-c", "exit 3"}, "", 10s).value() == 3);
  CHECK(runner.run({"false"}, "", 10s).value() == 1);
}

TEST_CASE("argv is passed as is, never through a shell") {
  TempDir dir;
  ProcessRunner runner;
  ProcessSpec spec;
  spec.argv = {"printf", "%s|", "a b", "$HOME", "; rm -rf /"};
  spec.log_path = dir.file("out.log");
  REQUIRE(runner.run(spec).value() == 0);
  CHECK(read_file(spec.log_path) == "a b|$HOME|; rm -rf /|");
}

TEST_CASE("the command runs in cwd with exactly the given environment, output to the log file") {
  TempDir dir;
  ProcessRunner runner;
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "pwd; echo \"FOO=$FOO HOME=${HOME:-unset}\"; echo oops >&2"};
  spec.cwd = dir.path().string();
  spec.env = std::vector<std::string>{"FOO=bar", "PATH=/usr/bin:/bin"};
  spec.log_path = dir.file("job.log");
  REQUIRE(runner.run(spec).value() == 0);
  std::string log = read_file(spec.log_path);
  CHECK(log.find(std::filesystem::canonical(dir.path()).string() + "\n") == 0);
  CHECK(log.find("FOO=bar HOME=unset") != std::string::npos);
  CHECK(log.find("oops") != std::string::npos);
}

TEST_CASE("a command that cannot start is kInvalid") {
  ProcessRunner runner;
  auto r = runner.run({"/nonexistent/orch-agent"}, "", 10s);
  CHECK(r.status().code == Code::kInvalid);
  CHECK(r.status().message.find("/nonexistent/orch-agent") != std::string::npos);
  auto in_missing_dir = runner.run({"true"}, "/nonexistent-dir", 10s);
  CHECK(in_missing_dir.status().code == Code::kInvalid);
  CHECK(runner.run({}, "", 10s).status().code == Code::kInvalid);
}

TEST_CASE("a command killed by a signal is kUnavailable naming the signal") {
  ProcessRunner runner;
  auto r = runner.run({"sh", "-c", "kill -KILL $$"}, "", 10s);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kUnavailable);
  CHECK(r.status().message.find("signal 9") != std::string::npos);
}

TEST_CASE("a timeout kills the whole process group, background children included") {
  REQUIRE(kSubreaper);
  TempDir dir;
  ProcessRunner runner;
  ProcessSpec spec;
  // The shell ignores SIGTERM, and so does its child (ignored signals survive exec): only SIGKILL ends them.
  spec.argv = {"sh", "-c", "trap '' TERM; sleep 100 & echo $! > child.pid; wait"};
  spec.cwd = dir.path().string();
  spec.timeout = 300ms;
  spec.kill_grace = 200ms;
  pid_t pgid = 0;
  spec.on_start = [&](pid_t pid) { pgid = pid; };
  auto started = std::chrono::steady_clock::now();
  auto r = runner.run(spec);
  auto took = std::chrono::steady_clock::now() - started;
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kUnavailable);
  CHECK(r.status().message.find("timed out") != std::string::npos);
  CHECK(took < 5s);
  REQUIRE(pgid > 0);
  CHECK(eventually([&] { return group_gone(pgid); }, 5s));
  pid_t child = std::stoi(read_file(dir.file("child.pid")));
  CHECK((kill(child, 0) == -1 && errno == ESRCH));
}

TEST_CASE("background processes left behind by a command that exited are killed too") {
  REQUIRE(kSubreaper);
  ProcessRunner runner;
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "sleep 100 & exit 0"};
  pid_t pgid = 0;
  spec.on_start = [&](pid_t pid) { pgid = pid; };
  CHECK(runner.run(spec).value() == 0);
  CHECK(eventually([&] { return group_gone(pgid); }, 5s));
}

TEST_CASE("the heartbeat is called while the command runs, and a stop request ends it") {
  ProcessRunner runner;
  std::stop_source stop;
  std::atomic<int> beats{0};
  ProcessSpec spec;
  spec.argv = {"sleep", "30"};
  spec.heartbeat_interval = 20ms;
  spec.heartbeat = [&] {
    if (++beats == 3) stop.request_stop();
  };
  spec.stop = stop.get_token();
  spec.kill_grace = 500ms;
  auto started = std::chrono::steady_clock::now();
  auto r = runner.run(spec);
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  CHECK(r.status().code == Code::kUnavailable);
  CHECK(r.status().message.find("stopped") != std::string::npos);
  CHECK(beats.load() >= 3);
}
