// End to end against the real binary (issue 4): the start race (one Plane In Progress event delivered 50 times at
// once under different delivery ids and bodies), a SIGTERM while an agent runs, and one while Plane throttles us.
#include <doctest/doctest.h>

#include <errno.h>
#include <signal.h>

#include <fstream>
#include <set>

#include "tests/e2e/e2e_world.h"

using namespace orch::testing;
using namespace orch::testing::e2e;
using namespace std::chrono_literals;

namespace {

long long inbox_pending(World& w) { return w.count("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'"); }

}  // namespace

TEST_CASE("e2e start race: 50 concurrent In Progress deliveries make one task / one branch / one first job") {
  World w;
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  constexpr int kCopies = 50;
  const std::vector<DeliveryResult> results = deliver_start_race(w, kCopies);
  int accepted = 0;
  for (const auto& r : results) accepted += r.status == 202 ? 1 : 0;
  CHECK(accepted == kCopies);

  check_one_start(w, kCopies);
  CHECK(w.orch->terminate() == std::optional<int>(0));
}

TEST_CASE("e2e ledger: Plane's retry of a start (a new delivery id, the same body) is a duplicate on the ledger") {
  World w;
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  const std::string item = w.add_item("Ledger me");
  w.plane.set_work_item_state(item, w.plane.state_id(kProjectId, "In Progress"));
  const std::string body = w.plane.issue_webhook_body(item);
  const DeliveryResult first = w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", body);
  const DeliveryResult retry = w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", body);
  CHECK(first.status == 202);
  CHECK(retry.status == 200);  // a duplicate: acknowledged, not stored again
  REQUIRE_MESSAGE(eventually([&] { return w.count("SELECT COUNT(*) FROM tasks") == 1 && inbox_pending(w) == 0; }, 30s),
                  w.orch->log_tail());

  auto status = w.orch->status_json();
  REQUIRE(status.is_object());
  // Newest first; later entries (the fake Plane's echoes of orch's own writes) may follow the analyst's job.
  auto entry = [](const nlohmann::json& entries, const std::string& id) -> nlohmann::json {
    for (const auto& e : entries)
      if (e["delivery_id"] == id) return e;
    return nullptr;
  };
  const nlohmann::json ledger = status["inbox"]["ledger"];
  const nlohmann::json dup = entry(ledger, retry.delivery_id), original = entry(ledger, first.delivery_id);
  REQUIRE(dup.is_object());
  REQUIRE(original.is_object());
  CHECK(dup["outcome"] == "duplicate");
  CHECK(dup["duplicate_of"] == first.delivery_id);
  CHECK(dup["work_item_key"] == "SHOP-1");
  CHECK(original["outcome"] == "handled");
  CHECK(original["work_item_key"] == "SHOP-1");
  CHECK(original["detail"].get<std::string>().find("SHOP-1") != std::string::npos);

  auto explained = w.orch->explain_json("SHOP-1");
  REQUIRE(explained.is_object());
  CHECK(entry(explained["deliveries"], retry.delivery_id)["outcome"] == "duplicate");
  CHECK(entry(explained["deliveries"], first.delivery_id)["outcome"] == "handled");
  CHECK(w.orch->terminate() == std::optional<int>(0));
}

TEST_CASE("e2e SIGTERM: orch serve exits 0 within seconds while an agent runs / and the agent process group is gone") {
  TempDir scratch;
  const std::string pid_file = scratch.file("agent.pid");
  WorldOptions options;
  options.analyst = "sleeper.sh";
  options.analyst_env = {{"E2E_PID_FILE", pid_file}};
  World w(options);
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  const std::string item = w.add_item("Sleep on it");
  w.plane.set_work_item_state(item, w.plane.state_id(kProjectId, "In Progress"));
  REQUIRE(w.plane.send_issue_webhook(w.plane_url(), kPlaneSecret, item).status == 202);

  pid_t agent = 0;
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        std::ifstream in(pid_file);
                        long p = 0;
                        if (!(in >> p) || p <= 0) return false;
                        agent = static_cast<pid_t>(p);
                        return true;
                      },
                      30s),
                  w.orch->log_tail());
  // The runner puts the agent in its own process group, led by the agent.
  REQUIRE(kill(-agent, 0) == 0);
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'running'") == 1);

  const auto t0 = std::chrono::steady_clock::now();
  std::optional<int> code = w.orch->terminate(15s);
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK_MESSAGE(code == std::optional<int>(0), w.orch->log_tail());
  CHECK(took < 5s);
  MESSAGE("orch serve stopped in " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
  // No process of the agent's group is left (the sleeping child included).
  CHECK(eventually([&] { return kill(-agent, 0) == -1 && errno == ESRCH; },
                   20s));  // a deadline, not a bound: ASan/TSan on 2 cores
  // The interrupted job went back to the queue, to be run again by the next start.
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'running'") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'queued'") == 1);
}

TEST_CASE(
    "e2e SIGTERM: orch serve exits 0 within seconds while Plane throttles it (Retry-After 30 s) / and the "
    "delivery stays pending for the next start") {
  World w;
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  const std::string item = w.add_item("Throttled");
  w.plane.set_work_item_state(item, w.plane.state_id(kProjectId, "In Progress"));
  w.plane.rate_limit_next(1000, 30);  // every call from now on: 429, come back in 30 s (within the retry budget)
  REQUIRE(w.plane.send_issue_webhook(w.plane_url(), kPlaneSecret, item).status == 202);
  // The inbox processor's lookup of the item was throttled and its client waits out the Retry-After.
  REQUIRE_MESSAGE(eventually([&] { return w.orch->log_tail().find("retrying in 30000 ms") != std::string::npos; }, 30s),
                  w.orch->log_tail());

  const auto t0 = std::chrono::steady_clock::now();
  std::optional<int> code = w.orch->terminate(20s);
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK_MESSAGE(code == std::optional<int>(0), w.orch->log_tail());
  CHECK(took < 5s);  // not the 30 s of the wait
  MESSAGE("orch serve stopped in " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
  CHECK(w.orch->log_tail().find("not retried: shutting down") != std::string::npos);
  // Nothing was lost: the delivery was not handled, and the next start finds it pending.
  CHECK(w.count("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'") == 1);
  CHECK(w.count("SELECT COUNT(*) FROM tasks") == 0);
}
