// End to end against the real binary (issue 4): `orch serve` is SIGKILLed while a client posts signed deliveries;
// restarted on the same data directory, it handles every delivery it acknowledged (202) exactly once: no missing
// and no duplicate task or job. The reconciler is off, so a task can only come from a delivery.
#include <doctest/doctest.h>

#include <mutex>
#include <set>

#include "tests/e2e/e2e_world.h"

using namespace orch::testing;
using namespace orch::testing::e2e;
using namespace std::chrono_literals;

TEST_CASE("e2e crash: SIGKILL while deliveries are acknowledged - after restart each acked one is handled once") {
  WorldOptions options;
  options.reconcile = false;
  options.workers = 2;
  World w(options);
  // A fixed port, so that the client keeps posting to the same address across the restart.
  const int port = free_loopback_port();
  auto env = w.orch->env();
  env["ORCH_LISTEN"] = "127.0.0.1:" + std::to_string(port);
  w.orch = std::make_unique<OrchProcess>(w.config_path, env, w.log_path);
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());

  constexpr int kItems = 40;
  constexpr int kClients = 2;
  const std::string in_progress = w.plane.state_id(kProjectId, "In Progress");
  std::vector<std::string> items;
  for (int i = 0; i < kItems; ++i) {
    items.push_back(w.add_item("Crash item " + std::to_string(i)));
    w.plane.set_work_item_state(items.back(), in_progress);
  }
  std::vector<std::string> bodies;
  for (const auto& id : items) bodies.push_back(w.plane.issue_webhook_body(id));

  std::mutex mu;
  std::set<std::string> acked_items, acked_deliveries, unanswered_items;
  int refused = 0;
  std::atomic<int> next{0}, acked{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&] {
      for (int i = next++; i < kItems; i = next++) {
        DeliveryResult r = w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", bodies[i]);
        std::lock_guard lock(mu);
        if (r.status == 202) {
          acked_items.insert(items[i]);
          acked_deliveries.insert(r.delivery_id);
          ++acked;
        } else if (r.status == -1) {
          unanswered_items.insert(items[i]);  // refused while down, or cut off by the kill (maybe stored)
          ++refused;
          std::this_thread::sleep_for(100ms);  // down: the next items wait a little, as a sender would
        } else {
          FAIL_CHECK("unexpected answer " << r.status << ": " << r.body);
        }
      }
    });

  REQUIRE(eventually([&] { return acked.load() >= 15; }, 60s));
  w.orch->kill_hard();
  const int acked_at_kill = acked.load();
  REQUIRE(eventually([&] { return refused > 0 || next.load() >= kItems; }, 10s));
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  for (auto& t : clients) t.join();
  MESSAGE("acked before the kill: " << acked_at_kill << ", acked in all: " << acked_items.size()
                                    << ", unanswered: " << unanswered_items.size());
  REQUIRE(acked_at_kill < kItems);  // the kill did land mid-stream

  REQUIRE_MESSAGE(eventually([&] { return w.count("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'") == 0; },
                             120s),
                  w.orch->log_tail());
  auto db = w.open_db();
  // Every acknowledged delivery is in the inbox, handled.
  for (const auto& id : acked_deliveries) {
    SQLite::Statement q(*db, "SELECT status FROM deliveries WHERE source = 'plane' AND delivery_id = ?");
    q.bind(1, id);
    REQUIRE_MESSAGE(q.executeStep(), "acknowledged delivery " << id << " is missing");
    CHECK_MESSAGE(q.getColumn(0).getString() == "handled", "delivery " << id);
  }
  // Exactly one task per acknowledged work item; at most the cut-off ones besides (stored, but not answered).
  std::set<std::string> task_items;
  SQLite::Statement tasks(*db, "SELECT work_item_id FROM tasks");
  while (tasks.executeStep()) task_items.insert(tasks.getColumn(0).getString());
  for (const auto& id : acked_items) CHECK_MESSAGE(task_items.count(id) == 1, "no task for acked item " << id);
  for (const auto& id : task_items)
    CHECK_MESSAGE((acked_items.count(id) == 1 || unanswered_items.count(id) == 1), "task from nowhere: " << id);
  CHECK(task_items.size() <= acked_items.size() + kClients);
  // One first job per task and stage visit; one transition into analysis per task.
  CHECK(w.count("SELECT COUNT(*) FROM (SELECT task_id FROM jobs WHERE attempt = 1 GROUP BY task_id, stage, visit "
                "HAVING COUNT(*) > 1)") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM (SELECT task_id FROM jobs GROUP BY task_id, stage, visit, attempt "
                "HAVING COUNT(*) > 1)") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE stage <> 'analysis'") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM tasks t WHERE (SELECT COUNT(*) FROM jobs j WHERE j.task_id = t.id) = 0") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM (SELECT task_id FROM transitions WHERE to_stage = 'analysis' GROUP BY task_id "
                "HAVING COUNT(*) > 1)") == 0);
  CHECK(static_cast<size_t>(w.count("SELECT COUNT(*) FROM transitions WHERE to_stage = 'analysis'")) ==
        task_items.size());
  auto status = w.orch->status_json();
  REQUIRE(status.is_object());
  CHECK(status["inbox"]["pending"] == 0);
  CHECK(status["inbox"]["failed"] == 0);
  CHECK(status["inbox"]["received"].get<size_t>() >= acked_deliveries.size());
  CHECK(w.orch->terminate() == std::optional<int>(0));
}
