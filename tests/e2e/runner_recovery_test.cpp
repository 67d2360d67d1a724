// End to end against the real binary (issue 22, items 3 and 5): what a runner does when the server is not there to
// take its result (the file outbox, replayed by its next start), and when the runner itself is stuck before its agent
// starts (the dispatch rule). Both with real processes: `orch serve` stopped and started again on the same data
// directory, `orch runner` SIGTERMed and started again on the same work directory, and a git remote that accepts a
// connection and never answers.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <mutex>
#include <thread>

#include "tests/e2e/runners_rig.h"

using namespace orch::testing;
using namespace orch::testing::e2e;
using namespace std::chrono_literals;

namespace {

// A git:// remote that accepts every connection and never answers: `git clone` from it waits, as a clone stuck on a
// dead network would. Its thread is its own; release() closes every connection (git then fails at once).
class SilentRemote {
 public:
  SilentRemote() {
    listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listen_, 16) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    accepter_ = std::thread([this] {
      for (;;) {
        const int c = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;  // shut down
        std::lock_guard lock(mu_);
        held_.push_back(c);
      }
    });
  }
  ~SilentRemote() {
    ::shutdown(listen_, SHUT_RDWR);
    accepter_.join();
    ::close(listen_);
    release();
  }
  std::string url() const { return "git://127.0.0.1:" + std::to_string(port_) + "/shop.git"; }
  std::size_t connections() {
    std::lock_guard lock(mu_);
    return held_.size() + released_;
  }
  void release() {
    std::lock_guard lock(mu_);
    for (int c : held_) ::close(c);
    released_ += held_.size();
    held_.clear();
  }

 private:
  int listen_ = -1;
  int port_ = 0;
  std::thread accepter_;
  std::mutex mu_;
  std::vector<int> held_;
  std::size_t released_ = 0;
};

}  // namespace

TEST_CASE("e2e runners: a result the server could not take stays in the runner's outbox / the next start delivers it") {
  TempDir scratch;
  AgentGate gate(scratch);
  WorldOptions o;
  o.runs_on = "agents";
  o.analyst = "gated.sh";
  o.analyst_env = {{"E2E_RELEASE_FIFO", gate.path()}};
  o.heartbeat_stale = "60s";  // the server is down for a few seconds: its sweeper must not take the job meanwhile
  World w(o);
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  Runners runners{w, {}, {}};
  runners.add("a");
  const std::string work = w.tmp.file("a-work");
  start_item(w, "Keep my result");
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        return w.count(
                                   "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND "
                                   "launched_at IS NOT NULL AND worker LIKE 'runner:a/%'") == 1;
                      },
                      30s),
                  w.log_tails() << runners.logs());
  const std::string job_id = w.rows("SELECT id FROM jobs")[0][0];
  const std::filesystem::path entry = std::filesystem::path(work) / "outbox" / (job_id + ".json");

  // The server goes away; the agent finishes meanwhile; the runner keeps the result on disk and is stopped too.
  REQUIRE(w.orch->terminate() == 0);
  REQUIRE(gate.release());
  REQUIRE_MESSAGE(eventually([&] { return std::filesystem::exists(entry); }, 30s), runners.logs());
  CHECK(read_file(entry).find("released: analysing") != std::string::npos);  // the log tail the server has not seen
  const std::string kept = read_file(entry);
  REQUIRE(runners.procs["a"]->terminate() == 0);
  CHECK(std::filesystem::exists(entry));
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'running'") == 1);

  // Both come back (the server on a new port): the runner's first act is to deliver what it kept.
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  const std::string token_file = w.tmp.file("a.token");
  auto restart = [&](const std::string& log) {
    auto p = std::make_unique<RunnerProcess>(
        std::vector<std::string>{"--server", w.orch->base_url(), "--token-file", token_file, "--work-dir", work},
        std::map<std::string, std::string>{}, w.tmp.file(log));
    REQUIRE(p->start());
    return p;
  };
  auto again = restart("a-again.log");
  REQUIRE_MESSAGE(
      eventually(
          [&] { return w.count("SELECT COUNT(*) FROM jobs WHERE stage = 'analysis' AND status = 'succeeded'") == 1; },
          30s),
      w.log_tails() << runners.logs() << again->log());
  CHECK(again->log().find("1 result(s) left in the outbox by an earlier run") != std::string::npos);
  CHECK(reported_successes(*again).at(std::stoll(job_id)) == 1);
  CHECK(!std::filesystem::exists(entry));
  auto jobs = w.rows("SELECT attempt, error FROM jobs");
  REQUIRE(jobs.size() == 1);  // the agent ran once: no second attempt
  CHECK(jobs[0][0] == "1");
  CHECK(jobs[0][1] == "");
  const std::string server_log = read_file(std::filesystem::path(w.data_dir) / "logs" / ("job-" + job_id + ".log"));
  CHECK_MESSAGE(server_log.find("released: analysing") != std::string::npos, server_log);
  REQUIRE(again->terminate() == 0);

  // The same report once more (a copy of the file put back): its claim was taken over, so it is refused and dropped.
  const auto before = w.rows("SELECT id, status, attempt, worker, step, error, finished_at FROM jobs");
  std::ofstream(entry, std::ios::binary) << kept;
  auto stale = restart("a-stale.log");
  REQUIRE_MESSAGE(eventually([&] { return !std::filesystem::exists(entry); }, 30s), stale->log());
  CHECK(stale->log().find("the server refused the result") != std::string::npos);
  CHECK(w.rows("SELECT id, status, attempt, worker, step, error, finished_at FROM jobs") == before);
  CHECK(stale->terminate() == 0);
}

TEST_CASE("e2e runners: a runner stuck in git past dispatch_timeout / its job is queued again, not failed") {
  SilentRemote remote;
  WorldOptions o;
  o.runs_on = "agents";
  o.clone_url = remote.url();
  o.dispatch_timeout = "3s";
  o.heartbeat_stale = "60s";  // the stuck runner heartbeats: only the dispatch rule can take its job
  World w(o);
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  Runners runners{w, {}, {}};
  RunnerProcess& a = runners.add("a");
  start_item(w, "Stuck in git");
  REQUIRE_MESSAGE(eventually([&] { return remote.connections() == 1; }, 30s), w.log_tails() << runners.logs());
  const std::string job_id = w.rows("SELECT id FROM jobs")[0][0];
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'running' AND worker LIKE 'runner:a/%'") == 1);

  REQUIRE_MESSAGE(
      eventually([&] { return a.log().find("job " + job_id + " was taken away by the server") != std::string::npos; },
                 30s),
      w.log_tails() << runners.logs());
  CHECK(w.orch->log_tail(20000).find("did not start its agent within 3s: queued again") != std::string::npos);
  // Not an attempt: the same job, attempt 1, no error; another runner takes it (and is stuck the same way).
  runners.add("b");
  REQUIRE_MESSAGE(
      eventually(
          [&] {
            return w.count("SELECT COUNT(*) FROM jobs WHERE status = 'running' AND worker LIKE 'runner:b/%'") == 1;
          },
          30s),
      w.log_tails() << runners.logs());
  auto jobs = w.rows("SELECT id, attempt, error, launched_at IS NULL FROM jobs");
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0][0] == job_id);
  CHECK(jobs[0][1] == "1");
  CHECK(jobs[0][2] == "");
  CHECK(jobs[0][3] == "1");
  CHECK(w.count("SELECT COUNT(*) FROM tasks WHERE blocked = 1") == 0);

  // The network comes back as a refusal: git fails at once, and runner a, told its job is gone, says nothing more.
  remote.release();
  CHECK(a.terminate() == 0);
  CHECK(a.log().find("job " + job_id + " reported") == std::string::npos);
}
