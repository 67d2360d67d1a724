// tests/engine/sqlite_store_test.cpp: what only SqliteStore does, on real files in a TempDir: the file and its WAL
// mode, PRAGMA user_version, processes (fork) racing on one file, the query plan, the busy timeout. The Store
// contract itself, run on SQLite and PostgreSQL alike, is in store_contract_test.cpp. Nothing sleeps.
#include "engine/store/sqlite_store.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <filesystem>
#include <vector>

#include "engine/store/sqlite_connection.h"
#include "tests/support/manual_clock.h"
#include "tests/support/temp_dir.h"
#include "tests/support/new_task.h"

namespace orch {
namespace {

using testing::kMonday9am;
using testing::TempDir;
using namespace std::chrono_literals;

std::unique_ptr<SqliteStore> open_store(const std::string& path, SqliteStoreOptions options = {}) {
  auto store = SqliteStore::open(path, options);
  REQUIRE_MESSAGE(store.ok(), store.status().message);
  return std::move(store).value();
}

using testing::new_task;

TaskId make_task(SqliteStore& store, const std::string& id, TimePoint now) {
  auto claim = store.create_task_atomic(new_task(id), now);
  REQUIRE_MESSAGE(claim.ok(), claim.status().message);
  REQUIRE(claim->created);
  return claim->task.id;
}

TEST_CASE("sqlite store: a fresh file is migrated to the current schema and reopening it changes nothing") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  CHECK(SqliteStore::schema_version(path).status().code == Code::kNotFound);
  {
    auto store = open_store(path);
    CHECK(store->version_at_open() == 0);
    make_task(*store, "1", kMonday9am);
  }
  auto version = SqliteStore::schema_version(path);
  REQUIRE(version.ok());
  CHECK(version.value() == SqliteStore::kSchemaVersion);
  {
    auto store = open_store(path);
    CHECK(store->version_at_open() == SqliteStore::kSchemaVersion);
    CHECK(store->count_tasks().value() == 1);
  }
  SQLite::Database db(path, SQLite::OPEN_READONLY);
  CHECK(db.execAndGet("PRAGMA journal_mode").getString() == "wal");  // persistent in the file
}

TEST_CASE("sqlite store: a database written by a newer orch is refused, naming both versions") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  open_store(path).reset();
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE);
    db.exec("PRAGMA user_version = " + std::to_string(SqliteStore::kSchemaVersion + 1));
  }
  auto store = SqliteStore::open(path);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code == Code::kInvalid);
  const std::string expected = "database schema version " + std::to_string(SqliteStore::kSchemaVersion + 1) +
                               " is newer than this orch (" + std::to_string(SqliteStore::kSchemaVersion) +
                               "); upgrade orch";
  CHECK_MESSAGE(store.status().message.find(expected) != std::string::npos, store.status().message);
  CHECK(SqliteStore::schema_version(path).value() == SqliteStore::kSchemaVersion + 1);  // and nothing was downgraded
}

TEST_CASE("sqlite store: processes racing for the same work items create each exactly once") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  // The parent migrates, then closes: a child must not inherit an open SQLite connection across fork().
  open_store(path).reset();
  constexpr int kChildren = 8;
  constexpr int kItems = 25;  // each child exits with how many it created, so this must stay below 100
  int go[2];
  REQUIRE(pipe(go) == 0);
  std::vector<pid_t> children;
  for (int i = 0; i < kChildren; ++i) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // The child: never returns into doctest. Exit codes: 0..kItems created, >=100 an error.
      close(go[1]);
      char byte;
      if (read(go[0], &byte, 1) < 0) _exit(101);  // EOF once the parent closes its end: all start together
      int won = 0;
      {
        auto store = SqliteStore::open(path);
        if (!store.ok()) _exit(102);
        for (int item = 0; item < kItems; ++item) {
          auto claim = store.value()->create_task_atomic(new_task(std::to_string(item)), kMonday9am);
          if (!claim.ok()) _exit(103);
          won += claim.value().created ? 1 : 0;
        }
      }
      _exit(won);
    }
    children.push_back(pid);
  }
  close(go[0]);
  close(go[1]);
  int total = 0;
  for (pid_t pid : children) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    const int code = WEXITSTATUS(status);
    CHECK_MESSAGE(code < 100, "child failed with " << code);
    if (code < 100) total += code;
  }
  CHECK(total == kItems);  // one winner per item, across all processes
  auto store = open_store(path);
  CHECK(store->count_tasks().value() == kItems);
}

TEST_CASE("sqlite store: the idle-task scan is a range over the partial index, not a table scan") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
  for (int i = 0; i < 50; ++i) make_task(*store, std::to_string(i), kMonday9am);
  auto plan = store->idle_tasks_plan();
  REQUIRE(plan.ok());
  INFO(plan.value());
  CHECK(plan->find("SEARCH tasks USING INDEX tasks_idle") != std::string::npos);
  CHECK(plan->find("SCAN tasks") == std::string::npos);
  CHECK(plan->find("SCAN jobs") == std::string::npos);
  CHECK(plan->find("USE TEMP B-TREE") == std::string::npos);  // the index order is the result order
}

TEST_CASE("sqlite store: a claim seeks the lane heads through the partial index, not a scan of the backlog") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
  auto plan = store->claim_delivery_plan();
  REQUIRE(plan.ok());
  INFO(plan.value());
  // The first head is the index's first row (LIMIT 1), each next one a seek past the previous lane.
  CHECK(plan->find("SCAN deliveries USING INDEX deliveries_pending_lane") != std::string::npos);
  CHECK(plan->find("SEARCH m USING INDEX deliveries_pending_lane (lane>?)") != std::string::npos);
  CHECK(plan->find("USING INDEX deliveries_status") == std::string::npos);  // the old walk in arrival order
}

NewDelivery bulky_delivery(int i) {
  NewDelivery d;
  d.source = Source::kGitea;
  d.delivery_id = "ck-" + std::to_string(i);
  d.event = "push";
  d.body_digest = "h-" + std::to_string(i);
  d.body = std::string(3000, 'x');
  d.received_at = testing::kMonday9am;
  d.lane = "project:a";
  return d;
}

// The rows a copy of the database file alone (without its log) holds; -1 for a copy torn by a checkpoint that was
// writing the file meanwhile (the thread's copies run beside this test).
int rows_in_file_alone(TempDir& dir, const std::string& path) {
  const std::string copy = dir.file("copy.db");
  std::filesystem::remove(copy);
  std::filesystem::copy_file(path, copy);
  try {
    SQLite::Database alone(copy, SQLite::OPEN_READWRITE);
    return alone.execAndGet("SELECT count(*) FROM deliveries").getInt();
  } catch (const SQLite::Exception&) {
    return -1;
  }
}

TEST_CASE("sqlite store: the checkpoint thread, not the commits, copies the WAL into the database file") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  // The schema's commit writes ~34 pages, each delivery below ~9 with these bodies: ~400 pages in all.
  auto store = open_store(path, {.checkpoint_pages = 64, .checkpoint_in_place_pages = 1'000'000});
  for (int i = 0; i < 48; ++i) REQUIRE(store->insert_delivery(bulky_delivery(i), false).ok());
  // The rows reach the database file itself: a copy of that file alone, without its log, holds them (all but the
  // last few, if a round copied the log to its end and the commits after it left less than 64 pages).
  CHECK(testing::eventually([&] { return rows_in_file_alone(dir, path) >= 40; }));
  // Phase 2 may still be waiting for the gate (the last acknowledging write reserves it for a moment).
  CHECK(testing::eventually([&] { return store->checkpoints().restarts >= 1; }));
  CHECK(store->checkpoints().in_place == 0);  // no commit checkpointed
  CHECK(store->inbox_counts().value().received == 48);
}

TEST_CASE(
    "sqlite store: under writes that never pause, the thread keeps the log short (its last copy runs between "
    "two commits, so the log starts over)") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  // The store's own gate timings: the thread's last phase enters the gate as kNext, right after the commit under
  // way, whatever reservation the acknowledging writes keep (write_gate_test.cpp).
  auto store = open_store(path, {.checkpoint_pages = 64, .checkpoint_in_place_pages = 2000});
  // One writer that never waits for the thread, ~18 000 pages in all: without the short gated phase each of the
  // thread's checkpoints would end behind it, the log would never start over, and commits would reach the in-place
  // threshold.
  for (int i = 0; i < 2000; ++i) REQUIRE(store->insert_delivery(bulky_delivery(i), false).ok());
  MESSAGE("checkpoints: " << store->checkpoints().rounds << " rounds, " << store->checkpoints().restarts
                          << " restarts, " << store->checkpoints().in_place << " in place");
  const SqliteStore::CheckpointCounts counts = store->checkpoints();
  CHECK(counts.restarts >= 1);
  CHECK(counts.in_place == 0);
  // Each restart came from a gated phase, whose time with the gate held is counted.
  CHECK(counts.gated >= counts.restarts);
  CHECK(counts.held_seconds > 0);
  CHECK(counts.max_held_seconds <= counts.held_seconds);
  CHECK(testing::eventually([&] { return rows_in_file_alone(dir, path) > 0; }));
}

TEST_CASE("sqlite store: a commit that finds the log at checkpoint_in_place_pages checkpoints in place") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  // The thread is never woken (its threshold is out of reach): only the in-place fallback copies.
  auto store = open_store(path, {.checkpoint_pages = 1'000'000, .checkpoint_in_place_pages = 64});
  for (int i = 0; i < 48; ++i) REQUIRE(store->insert_delivery(bulky_delivery(i), false).ok());
  CHECK(store->checkpoints().in_place >= 1);
  CHECK(store->checkpoints().rounds == 0);
  CHECK(rows_in_file_alone(dir, path) >= 24);
  // The log was written from its start again after each checkpoint: its file stays near the threshold plus one
  // commit instead of holding all ~400 pages.
  CHECK(std::filesystem::file_size(path + "-wal") < 100u * 4096);
}

TEST_CASE("sqlite store: a write lock held past the busy timeout is kUnavailable, and the store recovers") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  auto store = open_store(path, {.max_connections = 4, .busy_timeout = 20ms});
  REQUIRE(store->set_setting("k", "before").ok());
  SQLite::Database other(path, SQLite::OPEN_READWRITE);  // another process's connection, as far as SQLite knows
  other.exec("BEGIN IMMEDIATE");
  Status blocked = store->set_setting("k", "during");
  CHECK(blocked.code == Code::kUnavailable);
  CHECK(store->get_setting("k").value() == "before");  // WAL: readers are not blocked by the writer
  other.exec("ROLLBACK");
  REQUIRE(store->set_setting("k", "after").ok());
  CHECK(store->get_setting("k").value() == "after");
}
// SQL shared with PostgreSQL numbers its parameters $1, $2, ...; SQLite would read "$2" before "$1" as parameter 1.
TEST_CASE("shared SQL's $N parameters reach SQLite as ?N, in any order, and quoted text is left alone") {
  CHECK(sqlite_parameters("UPDATE t SET a = $2, b = '$1 it''s $3' WHERE id = $1 AND n < $10") ==
        "UPDATE t SET a = ?2, b = '$1 it''s $3' WHERE id = ?1 AND n < ?10");
  CHECK(sqlite_parameters("SELECT ?, $x FROM t") == "SELECT ?, $x FROM t");
  // Bound in order, read back by number: the statement sees $2 as the second value, not the first.
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
  REQUIRE(store->set_setting("k", "v").ok());
  WriteGate gate(WriteGate::Timing{});
  SqliteConn c(dir.file("orch.db"), 5000ms, 1000, gate);
  CHECK(c.one("SELECT $2 || $1", read_text0, std::string("a"), std::string("b")) == std::optional<std::string>("ba"));
}
}  // namespace
}  // namespace orch
