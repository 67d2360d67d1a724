// engine/store/pg_store.h: PgStore, the PostgreSQL implementation of the Store seam, which several replicas share.
// Behaves as SqliteStore does, method for method; every public method is one transaction on a pooled libpq
// connection and returns errors as values: a lost connection, a server shutting down, a serialization failure, a
// deadlock, a lock or statement timeout are kUnavailable (retry later), anything else kInternal; no exception
// escapes. Thread-safe: any thread may call any method concurrently, and any number of processes may share the DB.
#pragma once

#include <chrono>
#include <memory>
#include <stop_token>
#include <string>

#include "engine/store.h"
#include "engine/store/sql_store.h"

namespace orch {

class PgConn;                            // engine/store/pg_connection.h
extern template class SqlStore<PgConn>;  // compiled once, in pg_store.cpp

struct PgStoreOptions {
  // One connection per concurrent caller, opened on demand; callers beyond this wait for a free one.
  int max_connections = 16;
  // How long opening a connection may take (libpq connect_timeout, whole seconds, at least 2).
  std::chrono::seconds connect_timeout{5};
  // Server-side bound on every statement (statement_timeout); past it the call is kUnavailable.
  std::chrono::milliseconds statement_timeout{30000};
  // TCP keepalives on every connection, so that a dead server or a partition is noticed without a query.
  std::chrono::seconds keepalives_idle{30};
  std::chrono::seconds keepalives_interval{10};
  int keepalives_count = 3;
  // The connections' application_name ("orch:<replica id>", as the leader elector names its own): "" leaves
  // libpq's default ("orch").
  std::string application_name = {};
  // An inbox claim also lapses the moment its claimer has no session on the server (no connection whose
  // application_name is "orch:<claimer>"): a replica that died releases its lane at once instead of after the
  // lease. Only for claimers that are replica ids whose elector holds such a session (the app); off for tests that
  // claim under made-up names.
  bool claims_lapse_without_session = false;
};

class PgStore final : public SqlStore<PgConn> {
 public:
  // The schema version this binary writes (the orch_schema table); migrations only ever move forward.
  static constexpr int kSchemaVersion = 13;

  // Connects to `url` (a libpq URI or key=value string) and migrates to kSchemaVersion in one transaction under an
  // advisory lock, so that replicas opening at once migrate once. kInvalid when the database's schema is newer
  // than this binary, kUnavailable when the server cannot be reached.
  static Result<std::unique_ptr<PgStore>> open(const std::string& url, PgStoreOptions options = {});
  // The database's schema version without migrating or creating anything; kNotFound if orch never created it.
  static Result<int> schema_version(const std::string& url);
  // `url` without its password, for logs and error messages: postgresql://user@host:port/dbname.
  static std::string redact(const std::string& url);

  ~PgStore() override;

  const std::string& redacted_url() const { return redacted_url_; }
  // The schema version found at open(), before migrating: 0 for a fresh database (what `orch migrate` reports).
  int version_at_open() const { return version_at_open_; }
  // EXPLAIN of the idle-task scan: proves the scan is a range over the partial index tasks_idle.
  Result<std::string> idle_tasks_plan();
  // EXPLAIN ANALYZE of claim_delivery as `claimer` at `now`, with its buffer counts, run in a transaction that is
  // rolled back (nothing is claimed): proves that a claim reads the lane heads, not the backlog behind them.
  Result<std::string> claim_delivery_plan(const std::string& claimer, TimePoint now, Millis lease);

  Result<std::optional<DeliveryRow>> claim_delivery(const std::string& claimer, TimePoint now, Millis lease,
                                                    std::stop_token stop = {}) override;

 private:
  PgStore(std::string url, PgStoreOptions options);

  const std::string url_;           // may hold a password: never logged, never in a message
  const std::string redacted_url_;  // what messages name instead
  const PgStoreOptions options_;
  int version_at_open_ = 0;
};

}  // namespace orch
