// tests/engine/pg/pg_leader_test.cpp: PgLeaderElector, two (or three) electors on one fresh database of the test
// PostgreSQL server, with intervals of tens of milliseconds. The electors' threads are real; the test waits on what
// they report with eventually(), and never sleeps.
#include "engine/store/pg_leader.h"

#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "tests/support/pg_server.h"
#include "tests/support/temp_dir.h"

namespace orch {
namespace {

using testing::eventually;
using testing::PgSql;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

constexpr auto kBound = 3s;  // takeover_within in these tests

// Counts the replicas that believe they lead, from their on_change callbacks: it must never exceed one.
struct LeaderCount {
  std::atomic<int> now{0};
  std::atomic<int> max{0};
  void change(bool leading) {
    const int n = leading ? ++now : --now;
    int seen = max.load();
    while (n > seen && !max.compare_exchange_weak(seen, n)) {
    }
  }
};

// One elector's on_change calls, in order.
class Changes {
 public:
  void add(bool leading) {
    std::lock_guard lock(mu_);
    changes_.push_back(leading);
  }
  std::vector<bool> get() const {
    std::lock_guard lock(mu_);
    return changes_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<bool> changes_;  // guarded by mu_
};

PgLeaderOptions fast(LeaderCount& count, Changes& changes) {
  PgLeaderOptions o;
  o.takeover_within = kBound;
  o.retry_interval = 20ms;
  o.health_interval = 20ms;
  o.health_timeout = 2s;  // generous: a sanitizer build on a busy machine is slow
  o.rejoin_holdoff = 2s;  // a deposed leader gives the others this long to take over
  o.on_change = [&count, &changes](bool leading) {
    count.change(leading);
    changes.add(leading);
  };
  return o;
}

TEST_CASE("pg leader: of two electors on one database exactly one leads, and both name it") {
  const std::string url = testing::fresh_pg_database();
  LeaderCount count;
  Changes changes_a, changes_b;
  PgLeaderElector a(url, "replica-a", fast(count, changes_a));
  PgLeaderElector b(url, "replica-b", fast(count, changes_b));
  CHECK_FALSE(a.is_leader());
  CHECK(a.leader_id().empty());
  CHECK(a.replica_id() == "replica-a");
  a.start();
  b.start();
  REQUIRE(eventually(
      [&] { return a.is_leader() != b.is_leader() && !a.leader_id().empty() && a.leader_id() == b.leader_id(); }));
  PgLeaderElector& leader = a.is_leader() ? a : b;
  CHECK(leader.leader_id() == leader.replica_id());
  CHECK(count.now.load() == 1);
  CHECK(count.max.load() == 1);
  CHECK((changes_a.get().size() + changes_b.get().size()) == 1);  // one on_change(true), nothing else

  PgSql monitor(url);
  CHECK(monitor.value("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name IN ('orch:replica-a', 'orch:replica-b')") == "2");
  b.stop();
  a.stop();
  CHECK_FALSE(a.is_leader());
  CHECK_FALSE(b.is_leader());
  CHECK(count.now.load() == 0);
  CHECK(count.max.load() == 1);
}

TEST_CASE(
    "pg leader: read_pg_leader names the replica that leads, \"\" when none does, and an error without a server") {
  const std::string url = testing::fresh_pg_database();
  auto none = read_pg_leader(url);
  REQUIRE_MESSAGE(none.ok(), none.status().message);
  CHECK(none.value().empty());
  LeaderCount count;
  Changes changes;
  PgLeaderElector a(url, "replica-a", fast(count, changes));
  a.start();
  REQUIRE(eventually([&] { return a.is_leader(); }));
  auto leader = read_pg_leader(url);
  REQUIRE_MESSAGE(leader.ok(), leader.status().message);
  CHECK(leader.value() == "replica-a");
  a.stop();
  auto after = read_pg_leader(url);
  REQUIRE(after.ok());
  CHECK(after.value().empty());
  // Nothing listens on port 1: a clear error, not a hang and not a leader.
  auto down = read_pg_leader("postgresql://orch@127.0.0.1:1/orch", PgLeaderOptions{}.lock_key, 2000ms);
  REQUIRE_FALSE(down.ok());
  CHECK(down.status().message.find("cannot connect to read the leader") != std::string::npos);
}

TEST_CASE("pg leader: when the leader stops, the other takes over within the bound") {
  const std::string url = testing::fresh_pg_database();
  LeaderCount count;
  Changes changes_a, changes_b;
  PgLeaderElector a(url, "replica-a", fast(count, changes_a));
  a.start();
  REQUIRE(eventually([&] { return a.is_leader(); }));
  PgLeaderElector b(url, "replica-b", fast(count, changes_b));
  b.start();
  REQUIRE(eventually([&] { return b.leader_id() == "replica-a"; }));
  CHECK_FALSE(b.is_leader());

  const auto stopped = SteadyClock::now();
  a.stop();
  CHECK_FALSE(a.is_leader());
  REQUIRE(eventually([&] { return b.is_leader(); }, kBound));
  INFO("took over after " << std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - stopped).count()
                          << " ms");
  CHECK(SteadyClock::now() - stopped < kBound);
  CHECK(b.leader_id() == "replica-b");
  CHECK(changes_a.get() == std::vector<bool>{true, false});
  CHECK(changes_b.get() == std::vector<bool>{true});
  CHECK(count.max.load() == 1);
}

TEST_CASE("pg leader: a leader whose session is terminated steps down at once, and the other takes over") {
  const std::string url = testing::fresh_pg_database();
  LeaderCount count;
  Changes changes_a, changes_b;
  PgLeaderOptions options_a = fast(count, changes_a);
  options_a.health_interval = 1h;  // no health check in time: only the socket can tell the leader it lost the lock
  PgLeaderElector a(url, "replica-a", options_a);
  a.start();
  REQUIRE(eventually([&] { return a.is_leader(); }));
  PgLeaderElector b(url, "replica-b", fast(count, changes_b));
  b.start();
  REQUIRE(eventually([&] { return b.leader_id() == "replica-a"; }));

  PgSql monitor(url);
  const std::string pid = monitor.value(
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'orch:replica-a'");
  REQUIRE_FALSE(pid.empty());
  REQUIRE(monitor.value("SELECT pg_terminate_backend($1::integer)", {pid}) == "t");
  REQUIRE(eventually([&] { return !a.is_leader(); }, 2s));
  CHECK(changes_a.get() == std::vector<bool>{true, false});
  REQUIRE(eventually([&] { return b.is_leader(); }, kBound));
  // The deposed replica reconnects, follows, and names the new leader.
  REQUIRE(eventually([&] { return a.leader_id() == "replica-b"; }));
  CHECK_FALSE(a.is_leader());
  CHECK(count.max.load() == 1);
}

TEST_CASE("pg leader: stop() is prompt whether leading, following or waiting to reconnect, and start() again works") {
  const std::string url = testing::fresh_pg_database();
  LeaderCount count;
  Changes changes_a, changes_b, changes_c;
  auto slow = [&](Changes& changes) {
    PgLeaderOptions o = fast(count, changes);
    o.retry_interval = 1h;  // every wait is an hour long unless stop() cuts it short
    o.health_interval = 1h;
    return o;
  };
  PgLeaderElector a(url, "replica-a", slow(changes_a));
  PgLeaderElector b(url, "replica-b", slow(changes_b));
  PgLeaderElector c("postgresql:///nowhere?host=/nonexistent/orch-pg&user=postgres", "replica-c", slow(changes_c));
  a.start();
  REQUIRE(eventually([&] { return a.is_leader(); }));
  b.start();
  REQUIRE(eventually([&] { return b.leader_id() == "replica-a"; }));  // b now waits an hour for its next try
  c.start();  // c cannot connect, and waits an hour before trying again

  for (PgLeaderElector* e : {&b, &a, &c}) {
    const auto t0 = SteadyClock::now();
    e->stop();
    INFO(e->replica_id() << " stopped in "
                         << std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0).count()
                         << " ms");
    CHECK(SteadyClock::now() - t0 < 30s);  // not the hour; wide enough for TSan on 2 busy cores
    CHECK_FALSE(e->is_leader());
    e->stop();  // idempotent
  }
  CHECK(changes_a.get() == std::vector<bool>{true, false});
  CHECK(changes_b.get().empty());
  CHECK(changes_c.get().empty());

  b.start();  // the lock is free: b's first try takes it
  REQUIRE(eventually([&] { return b.is_leader(); }));
  CHECK(b.leader_id() == "replica-b");
  b.stop();
  CHECK(count.max.load() == 1);
}

}  // namespace
}  // namespace orch
