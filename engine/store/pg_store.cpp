// engine/store/pg_store.cpp: the PostgreSQL Store: its SQL where it differs from SQLite's, opening, redaction, the
// query plans and the inbox claim. The methods both dialects share are in engine/store/sql_store_impl.h, compiled
// here for PgConn; the connection is engine/store/pg_connection.cpp, the schema engine/store/pg_schema.cpp.
//
// DESIGN
// - Connections: a small pool (engine/store/pool.h), one connection per concurrent caller, opened on demand
//   (PQconnectdbParams with connect_timeout and TCP keepalives) and handed out under a mutex. Each connection
//   prepares a statement the first time it runs it; every value travels as a bound parameter (text format, BYTEA in
//   binary format). A connection
//   that broke, or that is still inside a transaction, is closed rather than handed to the next caller; an idle one
//   whose server hung up (pg_terminate_backend, a restart) is noticed at acquire() and replaced.
// - Transactions: every method is one. Reads are single statements (autocommit); writes run in BEGIN ... COMMIT at
//   READ COMMITTED, and each one is written so that replicas racing on the same rows stay correct at that level:
//   INSERT ... ON CONFLICT for create-claims and upserts, SELECT ... FOR UPDATE before read-then-write, and
//   FOR UPDATE SKIP LOCKED for every queue (jobs, inbox claims, outbox claims, the sweeper rules).
// - Inbox dedup: a lookup-then-insert is not race-free under READ COMMITTED, so insert_delivery(ies) first take
//   transaction-scoped advisory locks on the hashed (source, delivery id) and, when deduplicating on the digest,
//   (source, digest) keys, all of them up front in ascending order (no two inserters ever wait on each other in a
//   cycle). Whoever waits sees the winner's committed row in its next statement. The semantics are SQLite's exactly.
// - Inbox claims: the lane-head candidate is locked FOR UPDATE SKIP LOCKED, and claims are serialised by one
//   transaction-scoped advisory lock (a claim is one short UPDATE): a claimer's statement then always sees every
//   earlier claim committed, which the lane rule needs because identity values are not commit-ordered across
//   replicas (an earlier seq may become visible after a later one was claimed; see claim_delivery).
// - Schema: forward-only migrations numbered by the one-row orch_schema table, applied at open() in one
//   transaction under an advisory lock. Times are BIGINT milliseconds since the epoch, enums their text names
//   (model.h), the delivery body BYTEA.
#include "engine/store/pg_store.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "engine/store/pg_connection.h"
#include "engine/store/pg_schema.h"
#include "engine/store/sql_store_impl.h"

namespace orch {
namespace {

// Advisory lock keys (one 64-bit key each): 'orch' in the high half. pg_leader.h uses ...0001, pg_schema.cpp ...0002.
constexpr std::int64_t kClaimDeliveryLockKey = 0x6f72636800000003LL;
constexpr std::int64_t kClaimJobLockKey = 0x6f72636800000004LL;
// The two-int4 advisory lock space of the inbox dedup keys (a different lock space from the 64-bit keys).
constexpr std::int32_t kInboxLockClass = 0x6f726368;  // 'orch'

// FNV-1a, 64 bits, folded to 32: a stable hash (every replica and version computes the same key for the same text).
std::int32_t lock_hash(std::string_view a, std::string_view b, std::string_view c) {
  std::uint64_t h = 14695981039346656037ULL;
  auto mix = [&h](std::string_view s) {
    for (unsigned char ch : s) {
      h ^= ch;
      h *= 1099511628211ULL;
    }
    h ^= 0x1f;  // a separator, so ("ab", "c") and ("a", "bc") differ
    h *= 1099511628211ULL;
  };
  mix(a);
  mix(b);
  mix(c);
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(h ^ (h >> 32)));
}

}  // namespace

// The reconciler's idle scan: a range over tasks_idle (stage <> 'done' matches the partial index), strictly after
// the (updated_at, id) cursor as a row-value comparison, skipping tasks with an active job through jobs_task_status.
#define ORCH_PG_IDLE_TASKS_SQL                                                                                  \
  "SELECT " ORCH_TASK_COLUMNS                                                                                   \
  " FROM tasks "                                                                                                \
  "WHERE stage <> 'done' AND updated_at < $1::bigint AND (updated_at, id) > ($2::bigint, $3::bigint) "          \
  "AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.task_id = tasks.id AND jobs.status IN ('queued', 'running')) " \
  "ORDER BY updated_at, id LIMIT $4::bigint"

// The inbox claim. The candidates are the lane heads (the oldest pending delivery of each lane), found by a skip
// scan over deliveries_pending_lane: one index probe per lane, so that a claim costs the number of lanes, not the
// backlog: a held lane head with a long backlog behind it must not make every other claim step over that backlog.
// A head is claimed if it is due and nobody else holds it; SKIP LOCKED passes over one whose finish or retry is
// committing right now. One more rule, which a single SQLite writer never needs: no other claimer holds a live claim
// on a later delivery of the lane (deliveries_pending_held keeps that probe to the held rows). Identities are not
// commit-ordered across replicas, so an earlier seq can become visible after a later one was claimed; without the
// rule it would be handled beside it. $4: whether a claim also needs its claimer alive (a session named
// "orch:<claimer>") to hold.
#define ORCH_PG_CLAIM_DELIVERY_SQL                                                                                 \
  "WITH RECURSIVE heads(seq, lane) AS ("                                                                           \
  "(SELECT seq, lane FROM deliveries WHERE status = 'pending' ORDER BY lane, seq LIMIT 1) "                        \
  "UNION ALL SELECT n.seq, n.lane FROM heads h CROSS JOIN LATERAL (SELECT seq, lane FROM deliveries "              \
  "WHERE status = 'pending' AND lane > h.lane ORDER BY lane, seq LIMIT 1) n) "                                     \
  "UPDATE deliveries SET claimed_by = $1, claim_expires_at = $2 WHERE seq = ("                                     \
  "SELECT d.seq FROM heads h JOIN deliveries d ON d.seq = h.seq WHERE d.status = 'pending' AND d.run_after <= $3 " \
  "AND (d.claim_expires_at IS NULL OR d.claim_expires_at <= $3 OR d.claimed_by = $1 "                              \
  "OR ($4 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = 'orch:' || d.claimed_by))) " \
  "AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.status = 'pending' AND e.claimed_by <> '' "                  \
  "AND e.lane = d.lane AND e.seq > d.seq AND e.claimed_by <> $1 AND e.claim_expires_at > $3 "                      \
  "AND (NOT $4 OR EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = 'orch:' || e.claimed_by))) " \
  "ORDER BY d.seq LIMIT 1 FOR UPDATE OF d SKIP LOCKED) "                                                           \
  "RETURNING " ORCH_DELIVERY_COLUMNS

template <>
struct Dialect<PgConn> {
  static constexpr const char* kIdleTasks = ORCH_PG_IDLE_TASKS_SQL;
  // The casts type the parameters that PostgreSQL cannot infer from a COALESCE or a NULL.
  static constexpr const char* kRecordFacts =
      "UPDATE tasks SET pr_number = COALESCE($1::bigint, pr_number), pr_state = COALESCE($2::text, pr_state), "
      "review_state = COALESCE($3::text, review_state), head_sha = COALESCE($4::text, head_sha), "
      "tracker_state = COALESCE($5::text, tracker_state), updated_at = $6 WHERE id = $7";
  static constexpr const char* kSaveProject =
      "INSERT INTO projects (name, plane_identifier, tracker_horizon, tracker_full_sweep) "
      "VALUES ($1, $2, $3::bigint, $4::bigint) "
      "ON CONFLICT (name) DO UPDATE SET plane_identifier = EXCLUDED.plane_identifier, "
      "tracker_horizon = EXCLUDED.tracker_horizon, tracker_full_sweep = EXCLUDED.tracker_full_sweep";

  // SKIP LOCKED: racing claimers (threads or replicas) each lock a different queued job instead of queueing on
  // the same one; a row another claimer just took is re-checked on its new version and no longer matches.
  // As SQLite's (the parameters likewise). Runs after serialize_claims: at READ COMMITTED this statement's snapshot
  // already holds every claim committed before the lock was granted, so the counts are exact.
  static constexpr const char* kClaimJob =
      "WITH RECURSIVE projects(project) AS (SELECT (SELECT min(project) FROM jobs WHERE status = 'queued') "
      "UNION ALL SELECT (SELECT min(project) FROM jobs WHERE status = 'queued' AND project > projects.project) "
      "FROM projects WHERE projects.project IS NOT NULL), "
      "running AS (SELECT project, agent FROM jobs WHERE status = 'running'), "
      "by_project AS (SELECT project, count(*) AS n FROM running GROUP BY project), "
      "by_agent AS (SELECT agent, count(*) AS n FROM running GROUP BY agent), "
      "total AS (SELECT count(*) AS n FROM running), "
      "full_agents AS (SELECT ba.agent FROM by_agent ba JOIN jsonb_each_text($5::jsonb) l ON l.key = ba.agent "
      "WHERE ba.n >= l.value::bigint), "
      "heads AS (SELECT p.project AS project, (SELECT h.id FROM jobs h WHERE h.status = 'queued' "
      "AND h.project = p.project AND h.run_after <= $2 AND h.agent NOT IN (SELECT agent FROM full_agents) "
      "AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.task_id = h.task_id AND r.status = 'running') "
      "AND NOT EXISTS (SELECT 1 FROM tasks held WHERE held.id = h.task_id AND held.budget_hold <> '') "
      "AND (CASE WHEN h.step = '' THEN ($6::boolean OR h.agent IN (SELECT jsonb_array_elements_text($7::jsonb))) "
      "ELSE $8::boolean END) "
      "ORDER BY h.run_after, h.id LIMIT 1) AS id FROM projects p WHERE p.project IS NOT NULL), "
      "pick AS (SELECT j.id FROM heads JOIN jobs j ON j.id = heads.id CROSS JOIN total "
      "LEFT JOIN by_project bp ON bp.project = heads.project "
      "WHERE ($3::bigint < 1 OR total.n < $3::bigint) AND coalesce(bp.n, 0) < "
      "coalesce((SELECT value::bigint FROM jsonb_each_text($4::jsonb) WHERE key = heads.project), "
      "9223372036854775807) ORDER BY coalesce(bp.n, 0), j.run_after, j.id LIMIT 1 FOR UPDATE OF j SKIP LOCKED) "
      "UPDATE jobs SET status = 'running', worker = $1, started_at = $2, heartbeat_at = $2 FROM pick "
      "WHERE jobs.id = pick.id AND jobs.status = 'queued' RETURNING " ORCH_JOB_COLUMNS_OF("jobs.");
  // One claim at a time across every replica and runner: two concurrent claims would each count the running jobs
  // without the other's and could both take the last slot under a limit. Claims are rare (a worker's, when idle or
  // after a job) and short; the lock is released at commit.
  static void serialize_claims(PgConn& c) { c.exec("SELECT pg_advisory_xact_lock($1::bigint)", kClaimJobLockKey); }
  // Read-then-write at READ COMMITTED: the row is locked from the read on.
  static constexpr const char* kJobStatusForUpdate = "SELECT status FROM jobs WHERE id = $1 FOR UPDATE";
  // The sweeper rules pick their batch in a MATERIALIZED CTE: locked once, exactly `limit` rows at most, whatever
  // join the planner chooses for the UPDATE. SKIP LOCKED: a job a worker is heartbeating or finishing right now is
  // not stale, and two sweepers never wait on each other.
  static constexpr const char* kFailStaleRunning =
      "WITH batch AS MATERIALIZED (SELECT id FROM jobs WHERE status = 'running' AND heartbeat_at < $3 "
      "ORDER BY heartbeat_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) "
      "UPDATE jobs SET status = 'failed', error = $1, finished_at = $2 FROM batch WHERE jobs.id = batch.id "
      "RETURNING " ORCH_JOB_COLUMNS_OF("jobs.");
  static constexpr const char* kFailExpiredQueued =
      "WITH batch AS MATERIALIZED (SELECT id FROM jobs WHERE status = 'queued' AND created_at < $3 "
      "AND step = '' AND NOT EXISTS (SELECT 1 FROM tasks held WHERE held.id = jobs.task_id "
      "AND held.budget_hold <> '') ORDER BY created_at, id LIMIT $4 FOR UPDATE OF jobs SKIP LOCKED) "
      "UPDATE jobs SET status = 'failed', error = $1, finished_at = $2 FROM batch WHERE jobs.id = batch.id "
      "RETURNING " ORCH_JOB_COLUMNS_OF("jobs.");
  static constexpr const char* kRequeueUndispatched =
      "WITH batch AS MATERIALIZED (SELECT id FROM jobs WHERE status = 'running' AND started_at < $2 AND step = '' "
      "AND launched_at IS NULL AND cancel_requested = '' AND worker LIKE $4 ORDER BY started_at, id LIMIT $3 "
      "FOR UPDATE SKIP LOCKED) "
      "UPDATE jobs SET " ORCH_JOB_UNCLAIMED
      ", run_after = $1 FROM batch WHERE jobs.id = batch.id RETURNING " ORCH_JOB_COLUMNS_OF("jobs.");
  // One round trip fewer: the insert's ON CONFLICT answers a repeated attempt as well as a read would.
  static constexpr bool kEnqueueReadsFirst = false;

  static constexpr const char* kInsertDelivery =
      "INSERT INTO deliveries (source, delivery_id, event, body_digest, body, received_at, lane, "
      "run_after) VALUES ($1, $2, $3, $4, $5::bytea, $6, $7, $6) "
      "ON CONFLICT (source, delivery_id) DO NOTHING RETURNING seq";
  static constexpr const char* kDeliveryStatusForUpdate = "SELECT status FROM deliveries WHERE seq = $1 FOR UPDATE";
  // A lookup-then-insert is not race-free under READ COMMITTED: see lock_dedup_keys.
  static constexpr bool kLocksDedupKeys = true;
  // Takes the advisory locks of a batch's dedup keys, all at once, in ascending order: an inserter that finds a key
  // taken waits for its holder to commit, then sees the holder's row; ascending order rules out lock cycles, and since
  // no two inserters can then conflict on a row, the inserts themselves never wait on each other.
  static void lock_dedup_keys(PgConn& c, const std::vector<NewDelivery>& deliveries,
                              const std::vector<bool>& dedup_on_digest) {
    std::vector<std::int32_t> keys;
    for (size_t i = 0; i < deliveries.size(); ++i) {
      const char* source = source_name(deliveries[i].source);
      keys.push_back(lock_hash(source, "id", deliveries[i].delivery_id));
      if (dedup_on_digest[i]) keys.push_back(lock_hash(source, "digest", deliveries[i].body_digest));
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    std::string array = "{";
    for (size_t i = 0; i < keys.size(); ++i) array += (i ? "," : "") + std::to_string(keys[i]);
    array += "}";
    // unnest() yields the elements in array order, and the aggregate calls the lock function row by row.
    c.exec("SELECT count(pg_advisory_xact_lock($1::integer, k)) FROM unnest($2::integer[]) AS k", kInboxLockClass,
           array);
  }

  // SKIP LOCKED as in kClaimDueNotifications. A lane's later message is never eligible while an earlier one is
  // pending, claimed or not, so two drainers never send one lane out of order.
  static constexpr const char* kClaimNextMessage =
      "WITH head AS MATERIALIZED (SELECT n.id FROM notifications n WHERE n.channel = $2 "
      "AND n.status = 'pending' AND n.next_attempt_at <= $3 AND NOT EXISTS (SELECT 1 FROM notifications e "
      "WHERE e.channel = n.channel AND e.lane = n.lane AND e.status = 'pending' AND e.id < n.id "
      "AND n.lane <> '') ORDER BY n.id LIMIT 1 FOR UPDATE SKIP LOCKED) "
      "UPDATE notifications n SET next_attempt_at = $1 FROM head WHERE n.id = head.id "
      "RETURNING " ORCH_NOTIFICATION_COLUMNS_OF("n.");
  // SKIP LOCKED: two drainers take disjoint batches; a row another drainer just claimed is re-checked on its new
  // version (next_attempt_at in the future) and no longer matches.
  static constexpr const char* kClaimDueNotifications =
      "WITH batch AS MATERIALIZED (SELECT id FROM notifications WHERE status = 'pending' "
      "AND next_attempt_at <= $2 AND channel = 'telegram' ORDER BY next_attempt_at, id LIMIT $3 "
      "FOR UPDATE SKIP LOCKED) "
      "UPDATE notifications n SET next_attempt_at = $1 FROM batch WHERE n.id = batch.id "
      "RETURNING " ORCH_NOTIFICATION_COLUMNS_OF("n.");
};

namespace {
// An EXPLAIN's answer, one plan line per row, as one text.
std::string plan_text(const PgResult& r) {
  std::string plan;
  for (const std::string& line : PgConn::rows_of(r, read_text0)) plan += line + "\n";
  return plan;
}
}  // namespace

PgStore::PgStore(std::string url, PgStoreOptions options)
    : SqlStore(options.max_connections, [this] { return PgConn::connect(url_, redacted_url_, options_); }),
      url_(std::move(url)),
      redacted_url_(redact(url_)),
      options_(options) {}

PgStore::~PgStore() = default;

std::string PgStore::redact(const std::string& url) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), &err);
  if (!opts) {
    if (err) PQfreemem(err);
    return "postgresql://(unparsable connection string)";
  }
  std::string user, host, port, dbname;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (!o->val) continue;
    const std::string_view k = o->keyword;
    if (k == "user")
      user = o->val;
    else if (k == "host")
      host = o->val;
    else if (k == "hostaddr" && host.empty())
      host = o->val;
    else if (k == "port")
      port = o->val;
    else if (k == "dbname")
      dbname = o->val;
  }
  PQconninfoFree(opts);
  std::string out = "postgresql://";
  if (!user.empty()) out += user + "@";
  const bool socket_dir = !host.empty() && host[0] == '/';
  if (!socket_dir) out += host;
  if (!port.empty()) out += ":" + port;
  out += "/" + dbname;
  if (socket_dir) out += "?host=" + host;
  return out;
}

Result<std::unique_ptr<PgStore>> PgStore::open(const std::string& url, PgStoreOptions options) {
  if (options.max_connections < 1) return invalid("pg store: max_connections must be positive");
  std::unique_ptr<PgStore> store(new PgStore(url, options));
  try {
    std::unique_ptr<PgConn> conn = PgConn::connect(store->url_, store->redacted_url_, store->options_);
    Result<int> found = migrate_pg_schema(*conn);
    if (!found.ok()) return Status{found.status().code, store->redacted_url_ + ": " + found.status().message};
    store->version_at_open_ = found.value();
    store->pool_.adopt(std::move(conn));
  } catch (const PgError& e) {
    return Status{e.code, "open " + store->redacted_url_ + ": " + e.what()};
  } catch (const std::exception& e) {
    return internal("open " + store->redacted_url_ + ": " + e.what());
  }
  return Result<std::unique_ptr<PgStore>>(std::move(store));
}

Result<int> PgStore::schema_version(const std::string& url) {
  const std::string redacted = redact(url);
  try {
    std::unique_ptr<PgConn> conn = PgConn::connect(url, redacted, PgStoreOptions{});
    if (!conn->one("SELECT to_regclass('orch_schema') IS NOT NULL", [](const PgRow& r) { return r.boolean(0); })
             .value_or(false))
      return not_found("no orch schema in " + redacted);
    std::optional<std::int64_t> v = conn->one("SELECT version FROM orch_schema", read_int0);
    if (!v) return not_found("no orch schema version in " + redacted);
    return static_cast<int>(*v);
  } catch (const PgError& e) {
    return Status{e.code, "read schema version of " + redacted + ": " + e.what()};
  } catch (const std::exception& e) {
    return internal("read schema version of " + redacted + ": " + e.what());
  }
}

Result<std::string> PgStore::idle_tasks_plan() {
  return run("idle_tasks_plan", [&](PgConn& c) -> Result<std::string> {
    return plan_text(
        c.query("EXPLAIN (COSTS OFF) " ORCH_PG_IDLE_TASKS_SQL, PgParams(to_millis(TimePoint::max()), 0, 0, 100)));
  });
}

Result<std::optional<DeliveryRow>> PgStore::claim_delivery(const std::string& claimer, TimePoint now, Millis lease,
                                                           std::stop_token stop) {
  if (claimer.empty()) return invalid("claim_delivery: empty claimer");
  if (lease <= Millis::zero()) return invalid("claim_delivery: the lease must be positive");
  return write("claim_delivery", [&](PgConn& c) -> Result<std::optional<DeliveryRow>> {
    // Shutdown must not wait for the claim: it queues behind other replicas' claims, and its lane probes over a
    // large backlog can take seconds. A stop request cancels the statement in flight (the transaction rolls back:
    // nothing is claimed), and the connection is not reused, so that a late cancel cannot reach another statement.
    struct DoomIfStopped {  // runs last, after on_stop can no longer fire, also when the statement threw
      PgConn& c;
      const std::stop_token& stop;
      ~DoomIfStopped() {
        if (stop.stop_requested()) c.doomed = true;
      }
    } doom_if_stopped{c, stop};
    std::unique_ptr<PGcancel, void (*)(PGcancel*)> cancel(PQgetCancel(c.pg), PQfreeCancel);
    std::stop_callback on_stop(stop, [&cancel] {
      char error[256];
      if (cancel) (void)PQcancel(cancel.get(), error, sizeof error);
    });
    // Claims queue here, so that this statement's snapshot holds every claim committed before it. The statement
    // (ORCH_PG_CLAIM_DELIVERY_SQL) picks the oldest lane head that is due and free.
    c.exec("SELECT pg_advisory_xact_lock($1::bigint)", kClaimDeliveryLockKey);
    const bool need_session = options_.claims_lapse_without_session;
    return c.one(ORCH_PG_CLAIM_DELIVERY_SQL, read_delivery, claimer, now + lease, now, need_session);
  });
}

Result<std::string> PgStore::claim_delivery_plan(const std::string& claimer, TimePoint now, Millis lease) {
  return run("claim_delivery_plan", [&](PgConn& c) -> Result<std::string> {
    // EXPLAIN ANALYZE runs the UPDATE: inside a transaction that is rolled back, so that nothing stays claimed.
    c.exec_simple("BEGIN");
    std::string plan;
    try {
      plan = plan_text(c.query("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) " ORCH_PG_CLAIM_DELIVERY_SQL,
                               PgParams(claimer, now + lease, now, options_.claims_lapse_without_session)));
    } catch (...) {
      c.exec_simple("ROLLBACK");
      throw;
    }
    c.exec_simple("ROLLBACK");
    return plan;
  });
}

template class SqlStore<PgConn>;

}  // namespace orch
