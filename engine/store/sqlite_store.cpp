// engine/store/sqlite_store.cpp: the SQLite Store: its SQL where it differs from PostgreSQL's, opening, the query
// plans and the inbox claim. The methods both dialects share are in engine/store/sql_store_impl.h, compiled here for
// SqliteConn; the schema is engine/store/sqlite_schema.cpp.
//
// DESIGN
// - Connections: a small pool (engine/store/pool.h), one connection per concurrent caller, opened on demand
//   (WAL lets readers run beside the writer). Each connection keeps its prepared statements; every value travels
//   as a bound parameter.
// - Writes: BEGIN IMMEDIATE, so a writer takes the file's write lock up front and two processes never deadlock on a
//   read-to-write upgrade. Within this process writers first queue on write_gate_ (inbox inserts first: an
//   acknowledgement waits for them); across processes they wait up to busy_timeout, after which the caller gets
//   kUnavailable and retries later. One writer at a time also makes every lookup-then-insert race-free (the inbox
//   dedup needs no locks of its own) and lets the queues claim without SKIP LOCKED.
#include "engine/store/sqlite_store.h"

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <utility>

#include "engine/store/sqlite_checkpointer.h"
#include "engine/store/sqlite_connection.h"
#include "engine/store/sqlite_schema.h"
#include "engine/store/sql_store_impl.h"

namespace orch {

// The reconciler's idle scan: a range over tasks_idle (stage <> 'done' matches the partial index), strictly after
// the (updated_at, id) cursor, skipping tasks with an active job through jobs_task_status.
#define ORCH_SQLITE_IDLE_TASKS_SQL                                                                              \
  "SELECT " ORCH_TASK_COLUMNS                                                                                   \
  " FROM tasks "                                                                                                \
  "WHERE stage <> 'done' AND updated_at < $1 AND (updated_at, id) > ($2, $3) "                                  \
  "AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.task_id = tasks.id AND jobs.status IN ('queued', 'running')) " \
  "ORDER BY updated_at, id LIMIT $4"

// The inbox claim. The candidates are the lane heads (the oldest pending delivery of each lane), found by a skip
// scan over deliveries_pending_lane: one index seek per lane, so that a claim costs the number of lanes, not the
// backlog (a lane whose head is held or waiting for its retry no longer makes the claim step over its whole
// backlog). The oldest head that is due and that nobody else holds wins. INDEXED BY: without statistics SQLite
// would rather read every pending row through deliveries_status and sort them.
#define ORCH_SQLITE_CLAIM_DELIVERY_SQL                                                                           \
  "WITH RECURSIVE heads(seq, lane) AS ("                                                                         \
  "SELECT seq, lane FROM (SELECT seq, lane FROM deliveries INDEXED BY deliveries_pending_lane "                  \
  "WHERE status = 'pending' ORDER BY lane, seq LIMIT 1) "                                                        \
  "UNION ALL SELECT n.seq, n.lane FROM heads h JOIN deliveries n ON n.seq = (SELECT m.seq FROM deliveries AS m " \
  "INDEXED BY deliveries_pending_lane "                                                                          \
  "WHERE m.status = 'pending' AND m.lane > h.lane ORDER BY m.lane, m.seq LIMIT 1)) "                             \
  "UPDATE deliveries SET claimed_by = $1, claim_expires_at = $2 WHERE seq = ("                                   \
  "SELECT d.seq FROM heads h JOIN deliveries d ON d.seq = h.seq WHERE d.run_after <= $3 "                        \
  "AND (d.claim_expires_at IS NULL OR d.claim_expires_at <= $3 OR d.claimed_by = $1) "                           \
  "ORDER BY d.seq LIMIT 1) RETURNING " ORCH_DELIVERY_COLUMNS

template <>
struct Dialect<SqliteConn> {
  static constexpr const char* kIdleTasks = ORCH_SQLITE_IDLE_TASKS_SQL;
  static constexpr const char* kRecordFacts =
      "UPDATE tasks SET pr_number = COALESCE($1, pr_number), pr_state = COALESCE($2, pr_state), "
      "review_state = COALESCE($3, review_state), head_sha = COALESCE($4, head_sha), "
      "tracker_state = COALESCE($5, tracker_state), updated_at = $6 WHERE id = $7";
  static constexpr const char* kSaveProject =
      "INSERT INTO projects (name, plane_identifier, tracker_horizon, tracker_full_sweep) VALUES ($1, $2, $3, $4) "
      "ON CONFLICT (name) DO UPDATE SET plane_identifier = excluded.plane_identifier, "
      "tracker_horizon = excluded.tracker_horizon, tracker_full_sweep = excluded.tracker_full_sweep";

  // `AND status = 'queued'` again in the outer WHERE: the claim holds even if the inner choice were stale.
  // $3: the overall limit (0: none); $4, $5: {"name": limit} objects per project and per agent. `projects` walks the
  // distinct projects of the queue by index seeks (a skip scan of jobs_status_project), `heads` seeks each one's
  // oldest due job whose agent is below its limit; the running jobs are few (the workers of every process). So a
  // claim costs per project, not per queued job (docs/adr/0018, bench/claim.cpp).
  static constexpr const char* kClaimJob =
      "UPDATE jobs SET status = 'running', worker = $1, started_at = $2, heartbeat_at = $2 WHERE id = ("
      "WITH RECURSIVE projects(project) AS (SELECT (SELECT min(project) FROM jobs WHERE status = 'queued') "
      "UNION ALL SELECT (SELECT min(project) FROM jobs WHERE status = 'queued' AND project > projects.project) "
      "FROM projects WHERE projects.project IS NOT NULL), "
      "running AS (SELECT project, agent FROM jobs WHERE status = 'running'), "
      "by_project AS (SELECT project, count(*) AS n FROM running GROUP BY project), "
      "by_agent AS (SELECT agent, count(*) AS n FROM running GROUP BY agent), "
      "total AS (SELECT count(*) AS n FROM running), "
      "full_agents AS (SELECT ba.agent FROM by_agent ba JOIN json_each($5) l ON l.key = ba.agent WHERE ba.n >= "
      "l.value), "
      "heads AS (SELECT p.project AS project, (SELECT h.id FROM jobs h WHERE h.status = 'queued' "
      "AND h.project = p.project AND h.run_after <= $2 AND h.agent NOT IN (SELECT agent FROM full_agents) "
      "AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.task_id = h.task_id AND r.status = 'running') "
      "AND NOT EXISTS (SELECT 1 FROM tasks held WHERE held.id = h.task_id AND held.budget_hold <> '') "
      "AND (CASE WHEN h.step = '' THEN ($6 = 1 OR h.agent IN (SELECT value FROM json_each($7))) ELSE $8 = 1 END) "
      "ORDER BY h.run_after, h.id LIMIT 1) AS id FROM projects p WHERE p.project IS NOT NULL) "
      "SELECT j.id FROM heads JOIN jobs j ON j.id = heads.id CROSS JOIN total "
      "LEFT JOIN by_project bp ON bp.project = heads.project "
      "WHERE ($3 < 1 OR total.n < $3) AND coalesce(bp.n, 0) < "
      "coalesce((SELECT value FROM json_each($4) WHERE key = heads.project), 9223372036854775807) "
      "ORDER BY coalesce(bp.n, 0), j.run_after, j.id LIMIT 1) "
      "AND status = 'queued' RETURNING " ORCH_JOB_COLUMNS;
  // BEGIN IMMEDIATE holds the file's only write lock from the start: claims are serial already.
  static void serialize_claims(SqliteConn&) {}
  // The write lock is held from BEGIN IMMEDIATE: a plain read is already the row the update will change.
  static constexpr const char* kJobStatusForUpdate = "SELECT status FROM jobs WHERE id = $1";
  static constexpr const char* kFailStaleRunning =
      "UPDATE jobs SET status = 'failed', error = $1, finished_at = $2 WHERE id IN "
      "(SELECT id FROM jobs WHERE status = 'running' AND heartbeat_at < $3 ORDER BY heartbeat_at, id LIMIT $4) "
      "RETURNING " ORCH_JOB_COLUMNS;
  static constexpr const char* kFailExpiredQueued =
      "UPDATE jobs SET status = 'failed', error = $1, finished_at = $2 WHERE id IN "
      "(SELECT id FROM jobs WHERE status = 'queued' AND created_at < $3 AND step = '' "
      "AND NOT EXISTS (SELECT 1 FROM tasks held WHERE held.id = jobs.task_id AND held.budget_hold <> '') "
      "ORDER BY created_at, id LIMIT $4) "
      "RETURNING " ORCH_JOB_COLUMNS;
  static constexpr const char* kRequeueUndispatched =
      "UPDATE jobs SET " ORCH_JOB_UNCLAIMED
      ", run_after = $1 WHERE id IN (SELECT id FROM jobs WHERE status = 'running' AND started_at < $2 AND step = '' "
      "AND launched_at IS NULL AND cancel_requested = '' AND worker LIKE $4 ORDER BY started_at, id LIMIT $3) "
      "RETURNING " ORCH_JOB_COLUMNS;
  // Enqueueing is idempotent and most calls find their attempt there: a read answers those without the write lock.
  static constexpr bool kEnqueueReadsFirst = true;

  static constexpr const char* kInsertDelivery =
      "INSERT INTO deliveries (source, delivery_id, event, body_digest, body, received_at, lane, run_after) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, $6) ON CONFLICT (source, delivery_id) DO NOTHING RETURNING seq";
  static constexpr const char* kDeliveryStatusForUpdate = "SELECT status FROM deliveries WHERE seq = $1";
  // The dedup lookup and the insert run inside one IMMEDIATE transaction: no other writer can slip between them.
  static constexpr bool kLocksDedupKeys = false;

  static constexpr const char* kClaimNextMessage =
      "UPDATE notifications SET next_attempt_at = $1 WHERE id = (SELECT n.id FROM notifications n "
      "WHERE n.channel = $2 AND n.status = 'pending' AND n.next_attempt_at <= $3 AND NOT EXISTS ("
      "SELECT 1 FROM notifications e WHERE e.channel = n.channel AND e.lane = n.lane AND e.status = 'pending' "
      "AND e.id < n.id AND n.lane <> '') ORDER BY n.id LIMIT 1) RETURNING " ORCH_NOTIFICATION_COLUMNS;
  static constexpr const char* kClaimDueNotifications =
      "UPDATE notifications SET next_attempt_at = $1 WHERE id IN (SELECT id FROM notifications "
      "WHERE status = 'pending' AND next_attempt_at <= $2 AND channel = 'telegram' "
      "ORDER BY next_attempt_at, id LIMIT $3) "
      "RETURNING " ORCH_NOTIFICATION_COLUMNS;
};

namespace {
// The detail column of an EXPLAIN QUERY PLAN statement, one line per step.
std::string query_plan(SqliteConn& c, const char* explain_sql) {
  std::string plan;
  for (const std::string& line : c.all(explain_sql, [](const SqliteRow& r) { return r.text(3); })) plan += line + "\n";
  return plan;
}
}  // namespace

SqliteStore::SqliteStore(std::string path, SqliteStoreOptions options)
    : SqlStore(options.max_connections, [this] { return open_connection(); }),
      path_(std::move(path)),
      options_(options),
      write_gate_(options.writers) {}

SqliteStore::~SqliteStore() = default;

std::unique_ptr<SqliteConn> SqliteStore::open_connection() {
  auto conn =
      std::make_unique<SqliteConn>(path_, options_.busy_timeout, options_.checkpoint_in_place_pages, write_gate_);
  if (checkpointer_) checkpointer_->watch(conn->db().getHandle());
  return conn;
}

SqliteStore::CheckpointCounts SqliteStore::checkpoints() const { return checkpointer_->counts(); }

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path, SqliteStoreOptions options) {
  if (options.max_connections < 1) return invalid("sqlite store: max_connections must be positive");
  std::unique_ptr<SqliteStore> store(new SqliteStore(path, options));
  try {
    std::unique_ptr<SqliteConn> conn = store->open_connection();
    Result<int> found = migrate_sqlite_schema(conn->db());
    if (!found.ok()) return Status{found.status().code, path + ": " + found.status().message};
    store->version_at_open_ = found.value();
    store->checkpointer_ = std::make_unique<SqliteCheckpointer>(
        path,
        SqliteCheckpointer::Options{.start_pages = std::max(1, options.checkpoint_pages),
                                    .in_place_pages = std::max(1, options.checkpoint_in_place_pages)},
        store->write_gate_);
    store->checkpointer_->watch(conn->db().getHandle());
    store->pool_.adopt(std::move(conn));
  } catch (const SQLite::Exception& e) {
    return status_of(("open " + path).c_str(), e);
  } catch (const std::exception& e) {
    return internal("open " + path + ": " + e.what());
  }
  return Result<std::unique_ptr<SqliteStore>>(std::move(store));
}

Result<int> SqliteStore::schema_version(const std::string& path) {
  try {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return not_found("no database at " + path);
    SQLite::Database db(path, SQLite::OPEN_READONLY, 5000);
    return db.execAndGet("PRAGMA user_version").getInt();
  } catch (const SQLite::Exception& e) {
    return status_of(("read schema version of " + path).c_str(), e);
  } catch (const std::exception& e) {
    return internal("read schema version of " + path + ": " + e.what());
  }
}

Result<std::string> SqliteStore::idle_tasks_plan() {
  return run("idle_tasks_plan", [&](SqliteConn& c) -> Result<std::string> {
    return query_plan(c, "EXPLAIN QUERY PLAN " ORCH_SQLITE_IDLE_TASKS_SQL);
  });
}

Result<std::optional<DeliveryRow>> SqliteStore::claim_delivery(const std::string& claimer, TimePoint now, Millis lease,
                                                               std::stop_token) {
  if (claimer.empty()) return invalid("claim_delivery: empty claimer");
  if (lease <= Millis::zero()) return invalid("claim_delivery: the lease must be positive");
  return write("claim_delivery", [&](SqliteConn& c) -> Result<std::optional<DeliveryRow>> {
    return c.one(ORCH_SQLITE_CLAIM_DELIVERY_SQL, read_delivery, claimer, now + lease, now);
  });
}

Result<std::string> SqliteStore::claim_delivery_plan() {
  return run("claim_delivery_plan", [&](SqliteConn& c) -> Result<std::string> {
    return query_plan(c, "EXPLAIN QUERY PLAN " ORCH_SQLITE_CLAIM_DELIVERY_SQL);
  });
}

template class SqlStore<SqliteConn>;

}  // namespace orch
