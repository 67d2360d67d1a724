// tests/engine/pg/pg_store_test.cpp: what only PgStore does, on fresh databases of the test PostgreSQL server
// (tests/support/pg_server.h): migrations in the database, concurrent opens, lost connections, timeouts, the query
// plan, redaction, and the inbox rule that a single SQLite writer never needs. The Store contract itself, run on
// SQLite and PostgreSQL alike, is in store_contract_test.cpp. Waits for the server use eventually(); nothing sleeps.
#include "engine/store/pg_store.h"

#include <doctest/doctest.h>

#include <barrier>
#include <cstring>
#include <thread>
#include <vector>

#include "tests/support/manual_clock.h"
#include "tests/support/pg_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/new_task.h"

namespace orch {
namespace {

using testing::eventually;
using testing::kMonday9am;
using testing::PgSql;
using namespace std::chrono_literals;

std::unique_ptr<PgStore> open_store(const std::string& url, PgStoreOptions options = {}) {
  auto store = PgStore::open(url, options);
  REQUIRE_MESSAGE(store.ok(), store.status().message);
  return std::move(store).value();
}

using testing::new_task;

NewDelivery lane_delivery(const std::string& id, const std::string& lane, TimePoint at) {
  NewDelivery d;
  d.source = Source::kGitea;
  d.delivery_id = id;
  d.event = "status";
  d.body_digest = "h-" + id;
  d.body = "{}";
  d.received_at = at;
  d.lane = lane;
  return d;
}

std::string claim(Store& store, const std::string& claimer, TimePoint now) {
  auto claimed = store.claim_delivery(claimer, now, 1min);
  if (!claimed.ok()) return "error: " + claimed.status().message;
  return claimed.value() ? claimed.value()->delivery_id : "-";
}

// The backend pid of the store's (only) pooled connection: the one session of this database named "orch".
std::string store_backend(PgSql& monitor) {
  return monitor.value(
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'orch' "
      "AND pid <> pg_backend_pid()");
}

TEST_CASE("pg store: a fresh database is migrated to the current schema and reopening it changes nothing") {
  const std::string url = testing::fresh_pg_database();
  CHECK(PgStore::schema_version(url).status().code == Code::kNotFound);
  {
    auto store = open_store(url);
    CHECK(store->version_at_open() == 0);
    REQUIRE(store->create_task_atomic(new_task("1"), kMonday9am).ok());
  }
  auto version = PgStore::schema_version(url);
  REQUIRE_MESSAGE(version.ok(), version.status().message);
  CHECK(version.value() == PgStore::kSchemaVersion);
  {
    auto store = open_store(url);
    CHECK(store->version_at_open() == PgStore::kSchemaVersion);
    CHECK(store->count_tasks().value() == 1);
  }
  PgSql sql(url);
  CHECK(sql.value("SELECT count(*) FROM orch_schema") == "1");
  CHECK(sql.value("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND "
                  "table_name IN ('projects', 'tasks', 'transitions', 'jobs', 'deliveries', 'notifications', "
                  "'branch_heads', 'settings')") == "8");
  CHECK(sql.value("SELECT data_type FROM information_schema.columns WHERE table_name = 'deliveries' "
                  "AND column_name = 'body'") == "bytea");
  CHECK(sql.value("SELECT indexdef FROM pg_indexes WHERE indexname = 'deliveries_pending_lane'")
            .find("WHERE (status = 'pending'::text)") != std::string::npos);  // migration 2's partial index
}

TEST_CASE("pg store: replicas opening a fresh database at the same moment migrate it exactly once") {
  const std::string url = testing::fresh_pg_database();
  constexpr int kReplicas = 8;
  std::vector<Result<std::unique_ptr<PgStore>>> opened;
  for (int i = 0; i < kReplicas; ++i) opened.emplace_back(invalid("not opened"));
  std::barrier start(kReplicas);
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < kReplicas; ++i)
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        opened[i] = PgStore::open(url);
      });
  }
  int migrated = 0;
  for (const auto& store : opened) {
    REQUIRE_MESSAGE(store.ok(), store.status().message);
    if (store.value()->version_at_open() == 0)
      ++migrated;
    else
      CHECK(store.value()->version_at_open() == PgStore::kSchemaVersion);
  }
  CHECK(migrated == 1);
  CHECK(PgStore::schema_version(url).value() == PgStore::kSchemaVersion);
  CHECK(opened[kReplicas - 1].value()->create_task_atomic(new_task("1"), kMonday9am).ok());
}

TEST_CASE("pg store: a database written by a newer orch is refused, naming both versions") {
  const std::string url = testing::fresh_pg_database();
  open_store(url).reset();
  const int newer = PgStore::kSchemaVersion + 1;
  PgSql(url).exec("UPDATE orch_schema SET version = " + std::to_string(newer));
  auto store = PgStore::open(url);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code == Code::kInvalid);
  const std::string expected = "database schema version " + std::to_string(newer) + " is newer than this orch (" +
                               std::to_string(PgStore::kSchemaVersion) + "); upgrade orch";
  CHECK_MESSAGE(store.status().message.find(expected) != std::string::npos, store.status().message);
  CHECK(PgStore::schema_version(url).value() == newer);  // and nothing was downgraded
}

TEST_CASE("pg store: a connection terminated mid-call fails that call with kUnavailable, and the next call recovers") {
  const std::string url = testing::fresh_pg_database();
  auto store = open_store(url, {.max_connections = 1});
  REQUIRE(store->set_setting("k", "before").ok());
  PgSql locker(url), monitor(url);
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE settings IN ACCESS EXCLUSIVE MODE");
  Status during;
  std::jthread writer([&] { during = store->set_setting("k", "during"); });
  std::string pid;
  REQUIRE(eventually([&] {  // the writer waits for the lock: now its backend is killed under it
    pid = monitor.value(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()");
    return !pid.empty();
  }));
  CHECK(monitor.value("SELECT pg_terminate_backend($1::integer)", {pid}) == "t");
  writer.join();
  CHECK_MESSAGE(during.code == Code::kUnavailable, during.to_string());
  CHECK(during.message.find("set_setting") != std::string::npos);
  locker.exec("ROLLBACK");
  auto value = store->get_setting("k");  // a new connection: the broken one was not put back
  REQUIRE_MESSAGE(value.ok(), value.status().message);
  CHECK(value.value() == "before");
  REQUIRE(store->set_setting("k", "after").ok());
  CHECK(store->get_setting("k").value() == "after");
  CHECK(store_backend(monitor) != pid);
}

TEST_CASE("pg store: an idle pooled connection whose server hung up is replaced, not reused") {
  const std::string url = testing::fresh_pg_database();
  auto store = open_store(url, {.max_connections = 1});
  REQUIRE(store->set_setting("k", "v").ok());
  PgSql monitor(url);
  const std::string pid = store_backend(monitor);
  REQUIRE_FALSE(pid.empty());
  CHECK(monitor.value("SELECT pg_terminate_backend($1::integer)", {pid}) == "t");
  REQUIRE(eventually(
      [&] { return monitor.value("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::integer", {pid}) == "0"; }));
  // The server's goodbye sits on the idle connection's socket: acquire() sees it and opens a new connection.
  auto value = store->get_setting("k");
  REQUIRE_MESSAGE(value.ok(), value.status().message);
  CHECK(value.value() == "v");
  CHECK(store_backend(monitor) != pid);
}

TEST_CASE("pg store: a lock held past the statement timeout is kUnavailable, and the store recovers") {
  const std::string url = testing::fresh_pg_database();
  auto store = open_store(url, {.max_connections = 2, .statement_timeout = 200ms});
  REQUIRE(store->set_setting("k", "before").ok());
  PgSql other(url);  // another replica's transaction, as far as the server knows
  other.exec("BEGIN");
  other.exec("SELECT * FROM settings WHERE key = 'k' FOR UPDATE");
  Status blocked = store->set_setting("k", "during");
  CHECK_MESSAGE(blocked.code == Code::kUnavailable, blocked.to_string());
  CHECK(store->get_setting("k").value() == "before");  // readers are not blocked by the row lock
  other.exec("ROLLBACK");
  REQUIRE(store->set_setting("k", "after").ok());
  CHECK(store->get_setting("k").value() == "after");
}

TEST_CASE("pg store: an unreachable server is kUnavailable, and no message carries the password") {
  const std::string url = "postgresql://orch:s3cret@/orch?host=/nonexistent/orch-pg&connect_timeout=2";
  auto store = PgStore::open(url);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code == Code::kUnavailable);
  CHECK(store.status().message.find("s3cret") == std::string::npos);
  CHECK_MESSAGE(store.status().message.find("postgresql://orch@/orch?host=/nonexistent/orch-pg") != std::string::npos,
                store.status().message);
  auto version = PgStore::schema_version(url);
  CHECK(version.status().code == Code::kUnavailable);
  CHECK(version.status().message.find("s3cret") == std::string::npos);

  CHECK(PgStore::redact("postgresql://u:pw@db.example.com:5433/orch?sslmode=require") ==
        "postgresql://u@db.example.com:5433/orch");
  CHECK(PgStore::redact("host=/run/pg user=u password=pw dbname=orch") == "postgresql://u@/orch?host=/run/pg");
  CHECK(PgStore::redact("postgresql://[broken").find("pw") == std::string::npos);
  auto ok = open_store(testing::fresh_pg_database());
  CHECK(ok->redacted_url().find("postgresql://postgres@/t_") == 0);
}

TEST_CASE("pg store: the idle-task scan is a range over the partial index, not a table scan") {
  const std::string url = testing::fresh_pg_database();
  auto store = open_store(url);
  // A long history of done tasks and finished jobs, and a live set large enough that sorting it would cost more
  // than reading it in index order: the scan must read neither the history nor more of the live set than it returns.
  PgSql sql(url);
  sql.exec(
      "INSERT INTO tasks (project, work_item_id, work_item_key, title, description, stage, branch, created_at, "
      "entered_stage_at, updated_at) SELECT 'shop', 'old-' || g, 'SHOP-' || g, 't', 'd', 'done', "
      "'orch/old-' || g, 0, 0, g FROM generate_series(1, 20000) AS g");
  sql.exec(
      "INSERT INTO jobs (task_id, visit, stage, agent, status, attempt, created_at, run_after) "
      "SELECT id, 1, 'analysis', 'analyst', 'succeeded', 1, 0, 0 FROM tasks");
  sql.exec(
      "INSERT INTO tasks (project, work_item_id, work_item_key, title, description, stage, branch, created_at, "
      "entered_stage_at, updated_at) SELECT 'shop', 'live-' || g, 'SHOP-L' || g, 't', 'd', 'analysis', "
      "'orch/live-' || g, 0, 0, 100000 + g FROM generate_series(1, 1000) AS g");
  sql.exec("ANALYZE tasks");
  sql.exec("ANALYZE jobs");
  auto plan = store->idle_tasks_plan();
  REQUIRE_MESSAGE(plan.ok(), plan.status().message);
  INFO(plan.value());
  CHECK(plan->find("using tasks_idle on tasks") != std::string::npos);
  CHECK(plan->find("Index Cond: ((updated_at <") != std::string::npos);  // the cursor bounds the range
  CHECK(plan->find("Seq Scan on tasks") == std::string::npos);
  CHECK(plan->find("Seq Scan on jobs") == std::string::npos);
  CHECK(plan->find("Sort") == std::string::npos);  // the index order is the result order
  CHECK(store->idle_tasks(from_millis(200000), {}, 100).value().size() == 100);
}

TEST_CASE(
    "pg store: a stop request cancels a claim waiting in PostgreSQL: it claims nothing, and the next claim works") {
  const std::string url = testing::fresh_pg_database();
  auto store = open_store(url, {.max_connections = 2, .statement_timeout = 120s});  // only the stop ends the wait
  testing::ManualClock clock;
  REQUIRE(store->insert_delivery(lane_delivery("d1", "project:a", clock.now()), false).ok());
  PgSql other(url);  // another replica's claim, holding the claims' lock (as a slow claim over a backlog does)
  other.exec("BEGIN");
  other.exec("SELECT pg_advisory_xact_lock(" + std::to_string(0x6f72636800000003LL) + ")");

  std::stop_source stopping;
  Result<std::optional<DeliveryRow>> result = unavailable("not run");
  std::jthread claimer([&] { result = store->claim_delivery("r1", clock.now(), 1min, stopping.get_token()); });
  PgSql monitor(url);
  REQUIRE(eventually(
      [&] {
        return monitor.value(
                   "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                   "application_name = 'orch' AND wait_event_type = 'Lock'") == "1";
      },
      30s));
  stopping.request_stop();  // SIGTERM
  claimer.join();
  REQUIRE_FALSE(result.ok());
  CHECK(result.status().code == Code::kUnavailable);
  // Cancelled by us, not ended by the 120 s statement timeout.
  CHECK_MESSAGE(result.status().message.find("user request") != std::string::npos, result.status().message);
  other.exec("ROLLBACK");

  CHECK(claim(*store, "r2", clock.now()) == "d1");  // r1's cancelled claim left nothing held
}

TEST_CASE("pg store: an earlier delivery that becomes visible after a later one of its lane was claimed waits for it") {
  // Identity values are handed out at insert and become visible at commit, so across replicas a lower seq can appear
  // after a higher one was claimed. It then heads its lane, but it must not run beside the claimed one: claims of
  // other claimers on a later delivery of the lane block it too. (A single SQLite writer commits in seq order, so
  // this never arises there.)
  const std::string url = testing::fresh_pg_database();
  auto store = open_store(url);
  testing::ManualClock clock;
  PgSql early_replica(url);
  early_replica.exec("BEGIN");
  const std::string early_seq = early_replica.value(
      "INSERT INTO deliveries (source, delivery_id, event, body_digest, body, received_at, lane, run_after) "
      "VALUES ('gitea', 'early', 'status', 'h-early', decode('7b7d', 'hex'), $1::bigint, 'project:a', $1::bigint) "
      "RETURNING seq",
      {std::to_string(to_millis(clock.now()))});
  auto late = store->insert_delivery(lane_delivery("late", "project:a", clock.now()), false);
  REQUIRE_MESSAGE(late.ok(), late.status().message);
  CHECK(late->seq > std::stoll(early_seq));
  CHECK(claim(*store, "r1", clock.now()) == "late");  // "early" is not visible yet
  early_replica.exec("COMMIT");

  CHECK(claim(*store, "r2", clock.now()) == "-");  // "early" heads lane a now, but r1 is still handling "late"
  REQUIRE(store->finish_delivery(late->seq, {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).ok());
  CHECK(claim(*store, "r2", clock.now()) == "early");
  auto body = store->find_delivery("early");
  CHECK(body.value()->body == "{}");
}

// The sum of the top plan node's "Buffers: shared hit=H read=R" (it includes its children's).
long plan_buffers(const std::string& plan) {
  const auto at = plan.find("Buffers: shared");
  if (at == std::string::npos) return -1;
  const std::string line = plan.substr(at, plan.find('\n', at) - at);
  long total = 0;
  for (const char* key : {"hit=", "read="})
    if (auto k = line.find(key); k != std::string::npos) total += std::stol(line.substr(k + std::strlen(key)));
  return total;
}

TEST_CASE("pg store: a claim reads the lane heads, not the backlog behind a held head") {
  // One lane with 20 000 pending deliveries whose head is being handled, as under a burst for one project, on a
  // table that was never analyzed (a freshly filled inbox). Every other claim used to step over the whole backlog.
  const std::string url = testing::fresh_pg_database();
  auto store = open_store(url);
  testing::ManualClock clock;
  PgSql sql(url);
  sql.exec(
      "INSERT INTO deliveries (source, delivery_id, event, body_digest, body, received_at, lane, run_after) "
      "SELECT 'plane', 'a-' || g, 'issue', 'h-a-' || g, convert_to(repeat('x', 1500), 'UTF8'), g, 'project:a', 0 "
      "FROM generate_series(1, 20000) AS g");
  REQUIRE(store->insert_delivery(lane_delivery("b-1", "project:b", clock.now()), false).ok());
  REQUIRE(store->insert_delivery(lane_delivery("c-1", "project:c", clock.now()), false).ok());
  CHECK(claim(*store, "r1", clock.now()) == "a-1");
  CHECK(claim(*store, "r2", clock.now()) == "b-1");

  auto plan = store->claim_delivery_plan("r3", clock.now(), 1min);
  REQUIRE_MESSAGE(plan.ok(), plan.status().message);
  INFO(plan.value());
  CHECK(plan->find("Seq Scan on deliveries") == std::string::npos);
  const long buffers = plan_buffers(plan.value());
  CHECK(buffers > 0);
  CHECK(buffers < 300);  // a few pages per lane; the backlog alone is over 4 000 heap pages
  // The plan's claim was rolled back: c-1 is still free, and lane a stays with r1 until it finishes.
  CHECK(claim(*store, "r3", clock.now()) == "c-1");
  CHECK(claim(*store, "r4", clock.now()) == "-");
  auto a1 = store->find_delivery("a-1");
  REQUIRE(store->finish_delivery(a1.value()->seq, {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).ok());
  CHECK(claim(*store, "r4", clock.now()) == "a-2");
}

TEST_CASE("pg store: a delivery body round-trips every byte value exactly") {
  auto store = open_store(testing::fresh_pg_database());
  NewDelivery d = lane_delivery("bin", "project:a", kMonday9am);
  d.body.clear();
  for (int round = 0; round < 64; ++round)
    for (int b = 0; b < 256; ++b) d.body.push_back(static_cast<char>((b + round) & 0xff));
  REQUIRE(store->insert_delivery(d, false).ok());
  auto found = store->find_delivery("bin");
  REQUIRE(found.ok());
  REQUIRE(found->has_value());
  CHECK(found.value()->body.size() == d.body.size());
  CHECK(found.value()->body == d.body);
  auto claimed = store->claim_delivery("r1", kMonday9am, 1min);
  REQUIRE(claimed.ok());
  REQUIRE(claimed->has_value());
  CHECK(claimed.value()->body == d.body);
}

TEST_CASE("pg store: text PostgreSQL cannot hold (a NUL byte) is kInvalid, and the transaction writes nothing") {
  auto store = open_store(testing::fresh_pg_database());
  NewTask t = new_task("1");
  t.title = std::string("a\0b", 3);
  CHECK(store->create_task_atomic(t, kMonday9am).status().code == Code::kInvalid);
  CHECK(store->count_tasks().value() == 0);
  NewDelivery good = lane_delivery("good", "project:a", kMonday9am);
  NewDelivery bad = lane_delivery("bad", "project:a", kMonday9am);
  bad.event = std::string("st\0atus", 7);
  auto batch = store->insert_deliveries({good, bad}, {false, false});
  CHECK(batch.status().code == Code::kInvalid);
  CHECK(store->inbox_counts().value().received == 0);  // the first one was rolled back with the batch
  CHECK(store->insert_deliveries({good}, {false}).ok());
}

}  // namespace
}  // namespace orch

namespace orch {
namespace {

TEST_CASE("pg store: a claim lapses as soon as its claimer has no session, and holds while it has one") {
  const std::string url = testing::fresh_pg_database();
  PgStoreOptions options;
  options.application_name = "orch:replica-a";
  options.claims_lapse_without_session = true;
  auto store = open_store(url, options);
  const TimePoint now = kMonday9am;
  REQUIRE(store->insert_delivery(lane_delivery("d1", "project:shop", now), false).ok());
  REQUIRE(store->insert_delivery(lane_delivery("d2", "project:other", now), false).ok());

  // replica-b is alive (its elector's session is open) and claims d1; replica-c claims d2, then dies.
  {
    PgSql alive_b(url + "&application_name=orch:replica-b");
    CHECK(claim(*store, "replica-b", now) == "d1");
    CHECK(claim(*store, "replica-c", now) == "d2");
    // replica-c never had a session: its claim is no claim, and replica-a takes d2 at once; d1 stays replica-b's.
    CHECK(claim(*store, "replica-a", now) == "d2");
    // Now both are held by live replicas (replica-a's own sessions are the store's connections): nothing for x.
    CHECK(claim(*store, "replica-x", now) == "-");
    REQUIRE(store->finish_delivery(store->find_delivery("d2").value()->seq, {DeliveryStatus::kHandled, "", 0, ""}, now)
                .ok());
  }
  // replica-b's session is gone (a SIGKILLed process, a lost host): its claim lapses now, not after the lease.
  REQUIRE(eventually([&] { return claim(*store, "replica-a", now) == "d1"; }, 10s));
}

}  // namespace
}  // namespace orch
