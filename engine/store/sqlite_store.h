// engine/store/sqlite_store.h: SqliteStore, the embedded SQLite implementation of the Store seam (one file, WAL mode).
// Every public method is one transaction on a pooled connection and returns errors as values: SQLITE_BUSY past the
// busy timeout is kUnavailable, anything else kInternal; no exception escapes. Thread-safe: any thread may call any
// method concurrently, and several processes (the server and the CLI) may open the same file at once.
// The methods both dialects share are SqlStore's (engine/store/sql_store.h); this class adds opening, the query plans
// and the inbox claim.
#pragma once

#include <chrono>
#include <memory>
#include <stop_token>
#include <string>

#include "engine/store.h"
#include "engine/store/sql_store.h"
#include "engine/store/sqlite_checkpointer.h"
#include "engine/write_gate.h"

namespace orch {

struct SqliteStoreOptions {
  // One connection per concurrent caller, opened on demand; callers beyond this wait for a free one.
  int max_connections = 16;
  // How long a write waits for another process's write lock before giving up with kUnavailable.
  std::chrono::milliseconds busy_timeout{5000};
  // This process's writers: inbox inserts (what webhook senders wait for) go first; see engine/write_gate.h.
  WriteGate::Timing writers{};
  // WAL checkpoints run on a thread of their own, off the commit path (engine/store/sqlite_checkpointer.h,
  // docs/adr/0022): a commit that leaves the log `checkpoint_pages` long wakes it; one that leaves it
  // `checkpoint_in_place_pages` long (the thread fell behind) checkpoints in place, as SQLite's auto-checkpoint.
  int checkpoint_pages = 4000;
  int checkpoint_in_place_pages = 32000;
};

class SqliteConn;                            // engine/store/sqlite_connection.h
extern template class SqlStore<SqliteConn>;  // compiled once, in sqlite_store.cpp

class SqliteStore final : public SqlStore<SqliteConn> {
 public:
  // The schema version this binary writes (PRAGMA user_version); migrations only ever move forward.
  static constexpr int kSchemaVersion = 13;

  // Opens (creating the file if needed, not its directory) and migrates to kSchemaVersion in one transaction.
  // kInvalid when the file's schema is newer than this binary.
  static Result<std::unique_ptr<SqliteStore>> open(const std::string& path, SqliteStoreOptions options = {});
  // The file's schema version without migrating or creating anything (for `orch status`); kNotFound if no file.
  static Result<int> schema_version(const std::string& path);

  ~SqliteStore() override;

  const std::string& path() const { return path_; }
  // The schema version found at open(), before migrating: 0 for a fresh file (what `orch migrate` reports).
  int version_at_open() const { return version_at_open_; }
  // EXPLAIN QUERY PLAN of the idle-task scan, one detail per line: proves the scan is an index range.
  Result<std::string> idle_tasks_plan();
  // EXPLAIN QUERY PLAN of claim_delivery: proves that a claim seeks the lane heads instead of scanning the backlog.
  Result<std::string> claim_delivery_plan();

  // What the checkpoint thread did so far (its rounds, the time it held writers back) and the commits that
  // checkpointed in place: for /metrics, tests and benchmarks.
  using CheckpointCounts = SqliteCheckpointer::Counts;
  CheckpointCounts checkpoints() const;

  Result<std::optional<DeliveryRow>> claim_delivery(const std::string& claimer, TimePoint now, Millis lease,
                                                    std::stop_token stop = {}) override;

 private:
  SqliteStore(std::string path, SqliteStoreOptions options);
  std::unique_ptr<SqliteConn> open_connection();  // throws SQLite::Exception

  const std::string path_;
  const SqliteStoreOptions options_;
  int version_at_open_ = 0;

  // Serialises this process's writers before they reach SQLite's file lock: they queue here instead of polling the
  // lock through the busy handler's sleeps, acknowledging writes first. Other processes still meet us at the file lock.
  WriteGate write_gate_;
  // Started once the file exists (open()); every connection reports its commits to it.
  std::unique_ptr<SqliteCheckpointer> checkpointer_;
};

}  // namespace orch
