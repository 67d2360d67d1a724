// The crash test at the library level: a child process runs the routes, the store and the inbox processor and is
// SIGKILLed while a client posts deliveries; a fresh processor in the parent then handles whatever was stored.
// Every acknowledged (202) delivery must be handled exactly once: no missing and no duplicate task or job.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "tests/webhooks/webhook_harness.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

// The engine and the inbox over the SQLite file at `db` (EngineFixture always makes a fresh file).
struct Node {
  explicit Node(const std::string& db, const std::filesystem::path& data)
      : store(open(db)),
        pipeline(config),
        layout(data),
        gates(config, gitea, plane, runner, layout),
        bus(log),
        engine(*store, pipeline, gates, bus, clock, log),
        scheduler(*store, pipeline, clock, log),
        handlers(*store, engine, plane, gitea, config, clock, log),
        dispatcher(handlers, config),
        processor(*store, dispatcher, clock, log) {
    scheduler.subscribe_to(bus);
  }
  static std::unique_ptr<SqliteStore> open(const std::string& db) {
    auto s = SqliteStore::open(db);
    if (!s.ok()) throw std::runtime_error(s.status().to_string());
    return std::move(s).value();
  }

  Config config = default_config();
  ManualClock clock;
  TestLog log;
  std::unique_ptr<SqliteStore> store;
  Pipeline pipeline;
  DataLayout layout;
  TableCodeHost gitea;
  TableTracker plane;
  TableRunner runner;
  GateEvaluator gates;
  EventBus bus;
  StageEngine engine;
  JobScheduler scheduler;
  Handlers handlers;
  Dispatcher dispatcher;
  InboxProcessor processor;
};

// The child: serve until killed. Never returns into doctest.
[[noreturn]] void serve_until_killed(const std::string& db, const std::filesystem::path& data, int ready_fd) {
  try {
    Node node(db, data);
    WebhookRoutes routes(*node.store, node.clock, node.log, test_secrets());
    routes.set_on_stored([&node] { node.processor.poke(); });
    HttpServer server;
    routes.register_routes(server.routes());
    routes.start();
    node.processor.start();
    if (!server.start("127.0.0.1", 0).ok()) _exit(3);
    const int port = server.port();
    if (::write(ready_fd, &port, sizeof port) != sizeof port) _exit(4);
    for (;;) ::pause();
  } catch (...) {
    _exit(5);
  }
}

}  // namespace

TEST_CASE("SIGKILL while deliveries are acknowledged: every acknowledged delivery is handled exactly once") {
  TempDir dir;
  const std::string db = dir.file("orch.db");
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(ready[0]);
    serve_until_killed(db, dir.path() / "data", ready[1]);
  }
  ::close(ready[1]);
  int port = 0;
  const bool started = ::read(ready[0], &port, sizeof port) == sizeof port;
  ::close(ready[0]);
  if (!started) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    FAIL("the child server did not start");
  }

  std::mutex mu;
  std::set<std::string> acked_ids;    // guarded by mu: answered 202
  std::set<std::string> acked_items;  // guarded by mu: work items of those
  std::atomic<int> acked{0}, duplicates{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&, c] {
      std::string previous, previous_item;
      for (int i = 0;; ++i) {
        PlaneHook h;
        h.work_item_id = "wi-" + std::to_string(c) + "-" + std::to_string(i);
        h.sequence_id = c * 100000 + i;
        std::string body = plane_issue_body(h);
        if (i % 5 == 4) {  // Plane's retry: a fresh id, the same bytes
          body = previous;
          h.work_item_id = previous_item;
        }
        const std::string id = random_uuid4();
        Reply r = post_to(port, "/webhooks/plane", plane_headers(body, id), body);
        if (r.status == 202) {
          std::lock_guard l(mu);
          acked_ids.insert(id);
          acked_items.insert(h.work_item_id);
          ++acked;
        } else if (r.status == 200) {
          ++duplicates;
        } else {
          return;  // the server is gone
        }
        previous = body;
        previous_item = h.work_item_id;
      }
    });
  CHECK(eventually([&] { return acked.load() >= 60; }, 30s));
  ::kill(child, SIGKILL);
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
  for (auto& t : clients) t.join();
  REQUIRE(WIFSIGNALED(wstatus));
  CHECK(duplicates > 0);

  // Restart as `orch serve` does: the start-up replay lets the bus subscribers converge (a kill between a
  // transition's commit and its job's enqueue leaves a task with no job), then a fresh processor handles whatever
  // the child left pending.
  Node node(db, dir.path() / "data");
  REQUIRE(node.engine.replay_non_terminal().ok());
  const InboxCounts before = node.store->inbox_counts().value();
  while (true) {
    InboxPass pass = node.processor.run_once();
    if (pass.handled + pass.ignored + pass.failed == 0) break;
  }
  const InboxCounts after = node.store->inbox_counts().value();
  CHECK(after.pending == 0);
  CHECK(after.failed == 0);
  CHECK(after.received == before.received);
  MESSAGE("acknowledged " << acked.load() << ", stored " << after.received << ", pending at restart "
                          << before.pending);

  for (const std::string& id : acked_ids) {
    auto row = node.store->find_delivery(id).value();
    REQUIRE_MESSAGE(row.has_value(), "acknowledged delivery " << id << " is missing");
    CHECK(row->status == DeliveryStatus::kHandled);
  }
  for (const std::string& item : acked_items) {
    auto task = node.store->find_task_by_work_item(item).value();
    REQUIRE_MESSAGE(task.has_value(), "no task for acknowledged work item " << item);
    CHECK(task->stage == "analysis");
  }
  // Every task, including those of stored-but-unacknowledged deliveries: one transition, one first job.
  auto tasks = node.store->non_terminal_tasks(0, 100000).value();
  CHECK(tasks.size() >= acked_items.size());
  std::set<std::string> branches;
  for (const TaskRow& t : tasks) {
    CAPTURE(t.work_item_key);
    CHECK(t.stage == "analysis");
    CHECK(node.store->jobs_for_task(t.id).value().size() == 1);
    CHECK(node.store->transitions_for_task(t.id).value().size() == 1);
    CHECK(branches.insert(t.branch).second);
  }
}
