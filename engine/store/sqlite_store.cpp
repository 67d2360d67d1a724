// engine/store/sqlite_store.cpp: the SQLite Store. The only file (with its test) that includes SQLiteCpp.
//
// DESIGN
// - Connections: a small pool, one connection per concurrent caller, opened on demand and handed out under a mutex
//   (WAL lets readers run beside the writer). Each connection keeps its prepared statements; every value travels
//   as a bound parameter.
// - Writes: BEGIN IMMEDIATE, so a writer takes the file's write lock up front and two processes never deadlock on a
//   read-to-write upgrade. Within this process writers first queue on write_gate_ (inbox inserts first: an
//   acknowledgement waits for them); across processes they wait up to
//   busy_timeout, after which the caller gets kUnavailable and retries later.
// - Schema: forward-only migrations numbered by PRAGMA user_version, applied at open() in one transaction.
//   Times are INTEGER milliseconds since the epoch, enums their text names (model.h), tables STRICT.
#include "engine/store/sqlite_store.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <unordered_map>
#include <utility>

namespace orch {
namespace {

// Migration N (1-based) takes user_version N-1 to N. Append only; never edit a released one.
constexpr const char* kMigrations[] = {
    // 1: the initial schema.
    R"sql(
CREATE TABLE projects (
  name               TEXT PRIMARY KEY,
  plane_identifier   TEXT NOT NULL DEFAULT '',
  tracker_horizon    INTEGER,
  tracker_full_sweep INTEGER
) STRICT;

CREATE TABLE tasks (
  id               INTEGER PRIMARY KEY,
  project          TEXT NOT NULL,
  work_item_id     TEXT NOT NULL UNIQUE,
  work_item_key    TEXT NOT NULL,
  title            TEXT NOT NULL,
  description      TEXT NOT NULL,
  stage            TEXT NOT NULL,
  visit            INTEGER NOT NULL DEFAULT 1,
  branch           TEXT NOT NULL,
  blocked          INTEGER NOT NULL DEFAULT 0,
  blocked_reason   TEXT NOT NULL DEFAULT '',
  rejection_reason TEXT NOT NULL DEFAULT '',
  pr_number        INTEGER,
  pr_state         TEXT NOT NULL DEFAULT 'none',
  review_state     TEXT NOT NULL DEFAULT 'none',
  head_sha         TEXT NOT NULL DEFAULT '',
  tracker_state    TEXT NOT NULL DEFAULT '',
  created_at       INTEGER NOT NULL,
  entered_stage_at INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
) STRICT;
-- The reconciler and the start-up replay read only live tasks: partial indexes keep their cost proportional to
-- the live set, not to the history of done tasks.
CREATE INDEX tasks_idle ON tasks (updated_at, id) WHERE stage <> 'done';
CREATE INDEX tasks_live_by_id ON tasks (id) WHERE stage <> 'done';
CREATE INDEX tasks_project_stage ON tasks (project, stage);
CREATE INDEX tasks_project_branch ON tasks (project, branch);
CREATE INDEX tasks_stage_entered ON tasks (stage, entered_stage_at);

CREATE TABLE transitions (
  id         INTEGER PRIMARY KEY,
  task_id    INTEGER NOT NULL REFERENCES tasks (id),
  from_stage TEXT NOT NULL,
  to_stage   TEXT NOT NULL,
  cause      TEXT NOT NULL,
  detail     TEXT NOT NULL,
  at         INTEGER NOT NULL
) STRICT;
CREATE INDEX transitions_task ON transitions (task_id, id);

CREATE TABLE jobs (
  id           INTEGER PRIMARY KEY,
  task_id      INTEGER NOT NULL REFERENCES tasks (id),
  visit        INTEGER NOT NULL,
  stage        TEXT NOT NULL,
  agent        TEXT NOT NULL,
  status       TEXT NOT NULL,
  attempt      INTEGER NOT NULL,
  error        TEXT NOT NULL DEFAULT '',
  worker       TEXT NOT NULL DEFAULT '',
  created_at   INTEGER NOT NULL,
  run_after    INTEGER NOT NULL,
  started_at   INTEGER,
  heartbeat_at INTEGER,
  finished_at  INTEGER,
  UNIQUE (task_id, visit, attempt)
) STRICT;
-- (status, <order>, id): each queue scan reads only rows in its status, already in the order it wants, so a
-- backlog of queued jobs or a long failure history never means a sort.
CREATE INDEX jobs_task_status ON jobs (task_id, status);
CREATE INDEX jobs_status_run_after ON jobs (status, run_after, id);
CREATE INDEX jobs_status_created ON jobs (status, created_at, id);
CREATE INDEX jobs_status_heartbeat ON jobs (status, heartbeat_at, id);
CREATE INDEX jobs_status_finished ON jobs (status, finished_at, id);

-- The webhook inbox. AUTOINCREMENT: seq is arrival order and is never reused.
CREATE TABLE deliveries (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  source      TEXT NOT NULL,
  delivery_id TEXT NOT NULL,
  event       TEXT NOT NULL,
  body_digest TEXT NOT NULL,
  body        BLOB NOT NULL,
  status      TEXT NOT NULL DEFAULT 'pending',
  error       TEXT NOT NULL DEFAULT '',
  attempts    INTEGER NOT NULL DEFAULT 0,
  received_at INTEGER NOT NULL,
  handled_at  INTEGER,
  UNIQUE (source, delivery_id)
) STRICT;
-- Not unique: digest dedup applies only to callers that ask for it, and is a lookup inside the insert's
-- IMMEDIATE transaction (race-free: the write lock is held from the lookup to the insert).
CREATE INDEX deliveries_digest ON deliveries (source, body_digest);
CREATE INDEX deliveries_delivery_id ON deliveries (delivery_id);
CREATE INDEX deliveries_status ON deliveries (status, seq);

-- The notification outbox.
CREATE TABLE notifications (
  id              INTEGER PRIMARY KEY,
  dedup_key       TEXT NOT NULL UNIQUE,
  text            TEXT NOT NULL,
  status          TEXT NOT NULL DEFAULT 'pending',
  attempts        INTEGER NOT NULL DEFAULT 0,
  error           TEXT NOT NULL DEFAULT '',
  created_at      INTEGER NOT NULL,
  next_attempt_at INTEGER NOT NULL,
  sent_at         INTEGER
) STRICT;
CREATE INDEX notifications_due ON notifications (status, next_attempt_at, id);

CREATE TABLE branch_heads (
  repo       TEXT NOT NULL,
  branch     TEXT NOT NULL,
  sha        TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (repo, branch)
) STRICT, WITHOUT ROWID;
CREATE INDEX branch_heads_sha ON branch_heads (repo, sha);

CREATE TABLE settings (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
)sql",
    // 2: inbox claims. A delivery is handled by whoever claims it (several processors, several replicas), one lane
    // at a time in arrival order; a claim lapses at claim_expires_at so that a dead holder does not stall its lane.
    R"sql(
ALTER TABLE deliveries ADD COLUMN lane TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN run_after INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN claim_expires_at INTEGER;
-- The claim's "is an earlier delivery of this lane still pending?" probe: one index seek per candidate.
CREATE INDEX deliveries_pending_lane ON deliveries (lane, seq) WHERE status = 'pending';
)sql",
    // 3: one random-key index fewer on the inbox. find_delivery reads (source, delivery_id) through the unique index
    // with source IN (...), so deliveries_delivery_id only cost every insert one more random leaf page (bench/).
    R"sql(
DROP INDEX deliveries_delivery_id;
)sql",
    // 4: nothing here. PostgreSQL's migration 4 indexes the held deliveries for a probe that one SQLite writer never
    // needs (see claim_delivery); the versions stay equal so that `orch migrate` means the same on both.
    R"sql(
-- no change
)sql",
    // 5: follow-up steps (ADR 0010). After its agent exited 0 a job records the step it is at (push, open_pr, gate),
    // how often that step failed and its last error, so that a retried or resumed step never runs the agent again.
    R"sql(
ALTER TABLE jobs ADD COLUMN step TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN step_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN step_error TEXT NOT NULL DEFAULT '';
)sql",
    // 6: outbox channels (ADR 0013). Besides Telegram's notifications the outbox holds Plane and Gitea writes; the
    // messages of one lane (a work item) are sent in the order they were stored: the claim probes for an earlier
    // pending message of the lane through the partial index.
    R"sql(
ALTER TABLE notifications ADD COLUMN channel TEXT NOT NULL DEFAULT 'telegram';
ALTER TABLE notifications ADD COLUMN lane TEXT NOT NULL DEFAULT '';
CREATE INDEX notifications_lane ON notifications (channel, lane, id) WHERE status = 'pending';
)sql",
};
static_assert(std::size(kMigrations) == SqliteStore::kSchemaVersion, "one migration per schema version");

// Column lists are macros so that every statement stays a single string literal: greppable, and one cache entry.
#define ORCH_TASK_COLUMNS                                                                                       \
  "id, project, work_item_id, work_item_key, title, description, stage, visit, branch, blocked, blocked_reason, " \
  "rejection_reason, pr_number, pr_state, review_state, head_sha, tracker_state, created_at, entered_stage_at, "  \
  "updated_at"
#define ORCH_JOB_COLUMNS                                                                                   \
  "id, task_id, visit, stage, agent, status, attempt, error, worker, created_at, run_after, started_at, " \
  "heartbeat_at, finished_at, step, step_attempts, step_error"
#define ORCH_DELIVERY_COLUMNS                                                                          \
  "seq, source, delivery_id, event, body, status, error, attempts, received_at, handled_at, lane, run_after, " \
  "claimed_by, claim_expires_at"
#define ORCH_NOTIFICATION_COLUMNS \
  "id, dedup_key, text, status, attempts, error, created_at, next_attempt_at, sent_at, channel, lane"
#define ORCH_TRANSITION_SELECT                                                                              \
  "SELECT tr.id, tr.task_id, t.work_item_key, tr.from_stage, tr.to_stage, tr.cause, tr.detail, tr.at "     \
  "FROM transitions tr JOIN tasks t ON t.id = tr.task_id "
// The reconciler's idle scan: a range over tasks_idle (stage <> 'done' matches the partial index), strictly after
// the (updated_at, id) cursor, skipping tasks with an active job through jobs_task_status.
#define ORCH_IDLE_TASKS_SQL                                                                                     \
  "SELECT " ORCH_TASK_COLUMNS " FROM tasks "                                                                   \
  "WHERE stage <> 'done' AND updated_at < ?1 AND (updated_at, id) > (?2, ?3) "                                \
  "AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.task_id = tasks.id AND jobs.status IN ('queued', 'running')) " \
  "ORDER BY updated_at, id LIMIT ?4"

// A row that does not parse (an enum name this binary does not know): a broken invariant, reported as kInternal.
struct CorruptRow : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Status from_exception(const char* what, const SQLite::Exception& e) {
  const int primary = e.getErrorCode() & 0xff;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
    return unavailable(std::string("database busy (") + what + "): " + e.what());
  return internal(std::string("database error (") + what + "): " + e.what());
}

Status check_limit(int limit, const char* what) {
  // SQLite reads a negative LIMIT as "no limit": refuse it rather than return an unbounded batch.
  if (limit < 1) return invalid(std::string(what) + ": limit must be positive, got " + std::to_string(limit));
  return {};
}

// ---- binding ----------------------------------------------------------------------------------------------------

struct Blob {
  const std::string& bytes;
};

void bind_one(SQLite::Statement& s, int i, int v) { s.bind(i, static_cast<std::int32_t>(v)); }
void bind_one(SQLite::Statement& s, int i, long v) { s.bind(i, static_cast<std::int64_t>(v)); }
void bind_one(SQLite::Statement& s, int i, bool v) { s.bind(i, static_cast<std::int32_t>(v ? 1 : 0)); }
void bind_one(SQLite::Statement& s, int i, TimePoint t) { s.bind(i, static_cast<std::int64_t>(to_millis(t))); }
void bind_one(SQLite::Statement& s, int i, const std::string& v) { s.bind(i, v); }
void bind_one(SQLite::Statement& s, int i, const char* v) { s.bind(i, v); }
void bind_one(SQLite::Statement& s, int i, std::string_view v) { s.bind(i, std::string(v)); }
void bind_one(SQLite::Statement& s, int i, Blob v) {
  s.bind(i, static_cast<const void*>(v.bytes.data()), static_cast<int>(v.bytes.size()));
}
template <class T>
void bind_one(SQLite::Statement& s, int i, const std::optional<T>& v) {
  if (v)
    bind_one(s, i, *v);
  else
    s.bind(i);  // NULL
}

template <class... Args>
void bind_all(SQLite::Statement& s, const Args&... args) {
  int i = 0;
  (bind_one(s, ++i, args), ...);
}

// ---- reading ----------------------------------------------------------------------------------------------------

std::string col_text(const SQLite::Statement& s, int i) { return s.getColumn(i).getString(); }
std::int64_t col_int(const SQLite::Statement& s, int i) { return s.getColumn(i).getInt64(); }
TimePoint col_time(const SQLite::Statement& s, int i) { return from_millis(s.getColumn(i).getInt64()); }
std::optional<TimePoint> col_opt_time(const SQLite::Statement& s, int i) {
  if (s.getColumn(i).isNull()) return std::nullopt;
  return col_time(s, i);
}

template <class E>
E col_enum(const SQLite::Statement& s, int i, std::optional<E> (*parse)(std::string_view)) {
  std::string text = col_text(s, i);
  std::optional<E> v = parse(text);
  if (!v) throw CorruptRow(std::string("unknown ") + s.getColumnName(i) + " '" + text + "' in the database");
  return *v;
}

TaskRow read_task(const SQLite::Statement& s) {
  TaskRow t;
  t.id = col_int(s, 0);
  t.project = col_text(s, 1);
  t.work_item_id = col_text(s, 2);
  t.work_item_key = col_text(s, 3);
  t.title = col_text(s, 4);
  t.description = col_text(s, 5);
  t.stage = col_text(s, 6);
  t.visit = s.getColumn(7).getInt();
  t.branch = col_text(s, 8);
  t.blocked = col_int(s, 9) != 0;
  t.blocked_reason = col_text(s, 10);
  t.rejection_reason = col_text(s, 11);
  if (!s.getColumn(12).isNull()) t.pr_number = col_int(s, 12);
  t.pr_state = col_enum(s, 13, parse_pr_state);
  t.review_state = col_enum(s, 14, parse_review_state);
  t.head_sha = col_text(s, 15);
  t.tracker_state = col_text(s, 16);
  t.created_at = col_time(s, 17);
  t.entered_stage_at = col_time(s, 18);
  t.updated_at = col_time(s, 19);
  return t;
}

JobRow read_job(const SQLite::Statement& s) {
  JobRow j;
  j.id = col_int(s, 0);
  j.task_id = col_int(s, 1);
  j.visit = s.getColumn(2).getInt();
  j.stage = col_text(s, 3);
  j.agent = col_text(s, 4);
  j.status = col_enum(s, 5, parse_job_status);
  j.attempt = s.getColumn(6).getInt();
  j.error = col_text(s, 7);
  j.worker = col_text(s, 8);
  j.created_at = col_time(s, 9);
  j.run_after = col_time(s, 10);
  j.started_at = col_opt_time(s, 11);
  j.heartbeat_at = col_opt_time(s, 12);
  j.finished_at = col_opt_time(s, 13);
  j.step = col_text(s, 14);
  j.step_attempts = s.getColumn(15).getInt();
  j.step_error = col_text(s, 16);
  return j;
}

DeliveryRow read_delivery(const SQLite::Statement& s) {
  DeliveryRow d;
  d.seq = col_int(s, 0);
  d.source = col_enum(s, 1, parse_source);
  d.delivery_id = col_text(s, 2);
  d.event = col_text(s, 3);
  d.body = col_text(s, 4);  // getString() reads the bytes with their length: a BLOB round-trips exactly
  d.status = col_enum(s, 5, parse_delivery_status);
  d.error = col_text(s, 6);
  d.attempts = s.getColumn(7).getInt();
  d.received_at = col_time(s, 8);
  d.handled_at = col_opt_time(s, 9);
  d.lane = col_text(s, 10);
  d.run_after = col_time(s, 11);
  d.claimed_by = col_text(s, 12);
  d.claim_expires_at = col_opt_time(s, 13);
  return d;
}

NotificationRow read_notification(const SQLite::Statement& s) {
  NotificationRow n;
  n.id = col_int(s, 0);
  n.dedup_key = col_text(s, 1);
  n.text = col_text(s, 2);
  n.status = col_enum(s, 3, parse_notification_status);
  n.attempts = s.getColumn(4).getInt();
  n.error = col_text(s, 5);
  n.created_at = col_time(s, 6);
  n.next_attempt_at = col_time(s, 7);
  n.sent_at = col_opt_time(s, 8);
  n.channel = col_text(s, 9);
  n.lane = col_text(s, 10);
  return n;
}

TransitionRow read_transition(const SQLite::Statement& s) {
  TransitionRow t;
  t.id = col_int(s, 0);
  t.task_id = col_int(s, 1);
  t.work_item_key = col_text(s, 2);
  t.from = col_text(s, 3);
  t.to = col_text(s, 4);
  t.cause = col_enum(s, 5, parse_cause);
  t.detail = col_text(s, 6);
  t.at = col_time(s, 7);
  return t;
}

// ---- connections ------------------------------------------------------------------------------------------------

void configure(SQLite::Database& db, int checkpoint_pages) {
  // WAL: readers never block the writer nor it them, and a commit is one append to the log.
  const std::string mode = db.execAndGet("PRAGMA journal_mode = WAL").getString();
  if (mode != "wal")
    throw std::runtime_error("cannot switch " + db.getFilename() + " to WAL (journal_mode " + mode + ")");
  db.exec("PRAGMA foreign_keys = ON");
  // FULL, not WAL's usual NORMAL: a 2xx tells the sender to forget the webhook, so the inbox row must be on disk
  // (WAL fsynced) at every commit; NORMAL may lose the last commits on power loss.
  db.exec("PRAGMA synchronous = FULL");
  // A constant of this binary or of its caller, not a value from outside: PRAGMA takes no bound parameters.
  db.exec("PRAGMA wal_autocheckpoint = " + std::to_string(std::max(1, checkpoint_pages)));
}

// Applies the missing migrations; returns the version found. Safe against other processes opening the same file:
// the version is re-read under the write lock.
Result<int> migrate(SQLite::Database& db) {
  auto too_new = [](int found) {
    return invalid("database schema version " + std::to_string(found) + " is newer than this orch (" +
                   std::to_string(SqliteStore::kSchemaVersion) + "); upgrade orch");
  };
  int found = db.execAndGet("PRAGMA user_version").getInt();
  if (found > SqliteStore::kSchemaVersion) return too_new(found);
  if (found == SqliteStore::kSchemaVersion) return found;

  db.exec("BEGIN IMMEDIATE");
  try {
    found = db.execAndGet("PRAGMA user_version").getInt();
    if (found > SqliteStore::kSchemaVersion) {
      db.exec("ROLLBACK");
      return too_new(found);
    }
    for (int v = found; v < SqliteStore::kSchemaVersion; ++v) db.exec(kMigrations[v]);
    // A constant of this binary, not a value from outside: PRAGMA takes no bound parameters.
    db.exec("PRAGMA user_version = " + std::to_string(SqliteStore::kSchemaVersion));
    db.exec("COMMIT");
  } catch (...) {
    db.tryExec("ROLLBACK");
    throw;
  }
  return found;
}

}  // namespace

struct SqliteStore::Conn {
  Conn(const std::string& path, std::chrono::milliseconds busy_timeout)
      : db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_NOMUTEX,
           static_cast<int>(busy_timeout.count())) {}

  // The cached statement for `sql`, reset and with its bindings cleared. Keyed by text: every caller passes a
  // literal, so the cache stays as small as the set of statements this file contains.
  SQLite::Statement& statement(const char* sql) {
    auto it = cache.find(sql);
    if (it == cache.end()) it = cache.emplace(sql, std::make_unique<SQLite::Statement>(db, sql)).first;
    it->second->tryReset();
    it->second->clearBindings();
    return *it->second;
  }

  SQLite::Database db;  // NOMUTEX: the pool gives a connection to one thread at a time
  std::unordered_map<std::string, std::unique_ptr<SQLite::Statement>> cache;  // declared after db: finalized first
};

namespace {

// A cached statement in use; reset when the scope ends so that no statement keeps a read snapshot open.
class Stmt {
 public:
  Stmt(SqliteStore::Conn& c, const char* sql) : s_(c.statement(sql)) {}
  ~Stmt() { s_.tryReset(); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  SQLite::Statement& operator*() { return s_; }
  SQLite::Statement* operator->() { return &s_; }

  template <class... Args>
  Stmt& bind(const Args&... args) {
    bind_all(s_, args...);
    return *this;
  }
  // Runs a statement that returns no rows; the number of rows it changed.
  int exec() { return s_.exec(); }
  // The first row, and the statement reset (for RETURNING, all changes are made by the first step).
  template <class F>
  auto one(F read) -> std::optional<decltype(read(std::declval<const SQLite::Statement&>()))> {
    if (!s_.executeStep()) return std::nullopt;
    auto row = read(s_);
    s_.reset();
    return row;
  }
  template <class F>
  auto all(F read) -> std::vector<decltype(read(std::declval<const SQLite::Statement&>()))> {
    std::vector<decltype(read(std::declval<const SQLite::Statement&>()))> rows;
    while (s_.executeStep()) rows.push_back(read(s_));
    return rows;
  }

 private:
  SQLite::Statement& s_;
};

std::int64_t read_int0(const SQLite::Statement& s) { return s.getColumn(0).getInt64(); }

// The detail column of an EXPLAIN QUERY PLAN statement, one line per step.
std::string query_plan(SqliteStore::Conn& c, const char* explain_sql) {
  Stmt s(c, explain_sql);
  std::string plan;
  for (const std::string& line : s.all([](const SQLite::Statement& st) { return st.getColumn(3).getString(); }))
    plan += line + "\n";
  return plan;
}
std::string read_text0(const SQLite::Statement& s) { return s.getColumn(0).getString(); }

// BEGIN IMMEDIATE ... COMMIT, rolled back unless committed. Holds the process's write gate throughout.
class WriteTxn {
 public:
  WriteTxn(SqliteStore::Conn& c, WriteGate& gate, WriteGate::Priority priority) : hold_(gate.enter(priority)), c_(c) {
    c_.db.exec("BEGIN IMMEDIATE");
  }
  ~WriteTxn() {
    if (open_) c_.db.tryExec("ROLLBACK");
  }
  WriteTxn(const WriteTxn&) = delete;
  WriteTxn& operator=(const WriteTxn&) = delete;
  void commit() {
    c_.db.exec("COMMIT");
    open_ = false;
  }

 private:
  WriteGate::Hold hold_;  // first member: taken before BEGIN, released after ROLLBACK
  SqliteStore::Conn& c_;
  bool open_ = true;
};

}  // namespace

class SqliteStore::Lease {
 public:
  Lease(SqliteStore& store, std::unique_ptr<Conn> conn) : store_(store), conn_(std::move(conn)) {}
  ~Lease() { store_.release(std::move(conn_)); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  Conn& conn() { return *conn_; }

 private:
  SqliteStore& store_;
  std::unique_ptr<Conn> conn_;
};

SqliteStore::SqliteStore(std::string path, SqliteStoreOptions options)
    : path_(std::move(path)),
      options_(options),
      write_gate_(options.writers) {}

SqliteStore::~SqliteStore() = default;

std::unique_ptr<SqliteStore::Conn> SqliteStore::open_connection() const {
  auto conn = std::make_unique<Conn>(path_, options_.busy_timeout);
  configure(conn->db, options_.checkpoint_pages);
  return conn;
}

SqliteStore::Lease SqliteStore::acquire() {
  std::unique_lock lock(pool_mu_);
  pool_cv_.wait(lock, [this] { return !idle_.empty() || open_connections_ < options_.max_connections; });
  if (!idle_.empty()) {
    std::unique_ptr<Conn> conn = std::move(idle_.back());
    idle_.pop_back();
    return Lease(*this, std::move(conn));
  }
  ++open_connections_;
  lock.unlock();  // opening a file is slow: do not hold up the other callers
  try {
    return Lease(*this, open_connection());
  } catch (...) {
    {
      std::lock_guard relock(pool_mu_);
      --open_connections_;
    }
    pool_cv_.notify_one();
    throw;
  }
}

void SqliteStore::release(std::unique_ptr<Conn> conn) {
  if (!conn) return;
  // A connection still inside a transaction (a failed ROLLBACK) is not handed to the next caller: close it.
  const bool healthy = sqlite3_get_autocommit(conn->db.getHandle()) != 0;
  if (!healthy) conn.reset();
  {
    std::lock_guard lock(pool_mu_);
    if (healthy)
      idle_.push_back(std::move(conn));
    else
      --open_connections_;
  }
  pool_cv_.notify_one();
}

template <class Fn>
auto SqliteStore::run(const char* what, Fn&& fn) {
  using R = decltype(fn(std::declval<Conn&>()));
  try {
    Lease lease = acquire();
    return fn(lease.conn());
  } catch (const SQLite::Exception& e) {
    return R(from_exception(what, e));
  } catch (const std::exception& e) {
    return R(internal(std::string(what) + ": " + e.what()));
  } catch (...) {
    return R(internal(std::string(what) + ": unknown exception"));
  }
}

template <class Fn>
auto SqliteStore::write(const char* what, Fn&& fn, WriteGate::Priority priority) {
  return run(what, [&](Conn& c) {
    WriteTxn txn(c, write_gate_, priority);
    auto result = fn(c);
    if (result.ok()) txn.commit();
    return result;
  });
}

// ---- opening ----------------------------------------------------------------------------------------------------

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path, SqliteStoreOptions options) {
  if (options.max_connections < 1) return invalid("sqlite store: max_connections must be positive");
  std::unique_ptr<SqliteStore> store(new SqliteStore(path, options));
  try {
    std::unique_ptr<Conn> conn = store->open_connection();
    Result<int> found = migrate(conn->db);
    if (!found.ok()) return Status{found.status().code, path + ": " + found.status().message};
    store->version_at_open_ = found.value();
    {
      std::lock_guard lock(store->pool_mu_);
      ++store->open_connections_;
    }
    store->release(std::move(conn));
  } catch (const SQLite::Exception& e) {
    return from_exception(("open " + path).c_str(), e);
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
    return from_exception(("read schema version of " + path).c_str(), e);
  } catch (const std::exception& e) {
    return internal("read schema version of " + path + ": " + e.what());
  }
}

Result<std::string> SqliteStore::idle_tasks_plan() {
  return run("idle_tasks_plan",
             [&](Conn& c) -> Result<std::string> { return query_plan(c, "EXPLAIN QUERY PLAN " ORCH_IDLE_TASKS_SQL); });
}

// ---- tasks ------------------------------------------------------------------------------------------------------

Result<Claim> SqliteStore::create_task_atomic(const NewTask& task, TimePoint now) {
  if (task.work_item_id.empty()) return invalid("create task: empty work item id");
  return write("create_task_atomic", [&](Conn& c) -> Result<Claim> {
    {
      Stmt ins(c,
               "INSERT INTO tasks (project, work_item_id, work_item_key, title, description, stage, visit, branch, "
               "created_at, entered_stage_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, ?8, ?8) "
               "ON CONFLICT (work_item_id) DO NOTHING RETURNING " ORCH_TASK_COLUMNS);
      ins.bind(task.project, task.work_item_id, task.work_item_key, task.title, task.description, kStageCreated,
               task.branch, now);
      if (std::optional<TaskRow> row = ins.one(read_task)) return Claim{std::move(*row), true};
    }
    Stmt sel(c, "SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE work_item_id = ?");
    sel.bind(task.work_item_id);
    std::optional<TaskRow> row = sel.one(read_task);
    if (!row) return internal("create task: work item " + task.work_item_id + " conflicted but is not there");
    return Claim{std::move(*row), false};
  });
}

Result<std::optional<TaskRow>> SqliteStore::find_task(TaskId id) {
  return run("find_task", [&](Conn& c) -> Result<std::optional<TaskRow>> {
    Stmt s(c, "SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE id = ?");
    return s.bind(id).one(read_task);
  });
}

Result<std::optional<TaskRow>> SqliteStore::find_task_by_work_item(const std::string& work_item_id) {
  return run("find_task_by_work_item", [&](Conn& c) -> Result<std::optional<TaskRow>> {
    Stmt s(c, "SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE work_item_id = ?");
    return s.bind(work_item_id).one(read_task);
  });
}

Result<std::optional<TaskRow>> SqliteStore::find_task_by_branch(const std::string& project, const std::string& branch) {
  return run("find_task_by_branch", [&](Conn& c) -> Result<std::optional<TaskRow>> {
    // A branch belongs to one task; should history ever hold two, the live (then the newest) one wins.
    Stmt s(c, "SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE project = ? AND branch = ? "
              "ORDER BY stage = 'done', id DESC LIMIT 1");
    return s.bind(project, branch).one(read_task);
  });
}

Result<std::vector<TaskRow>> SqliteStore::tasks_in_stage(const std::string& project, const std::string& stage) {
  return run("tasks_in_stage", [&](Conn& c) -> Result<std::vector<TaskRow>> {
    Stmt s(c, "SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE project = ? AND stage = ? ORDER BY id");
    return s.bind(project, stage).all(read_task);
  });
}

Result<std::vector<TaskRow>> SqliteStore::non_terminal_tasks(TaskId after, int limit) {
  if (Status s = check_limit(limit, "non_terminal_tasks"); !s.ok()) return s;
  return run("non_terminal_tasks", [&](Conn& c) -> Result<std::vector<TaskRow>> {
    Stmt s(c, "SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE stage <> 'done' AND id > ? ORDER BY id LIMIT ?");
    return s.bind(after, limit).all(read_task);
  });
}

Result<std::vector<TaskRow>> SqliteStore::tasks_for_queue(TimePoint done_since) {
  return run("tasks_for_queue", [&](Conn& c) -> Result<std::vector<TaskRow>> {
    Stmt s(c, "SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE stage <> 'done' "
              "UNION ALL "
              "SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE stage = 'done' AND entered_stage_at >= ? "
              "ORDER BY id");
    return s.bind(done_since).all(read_task);
  });
}

Result<std::vector<TaskRow>> SqliteStore::idle_tasks(TimePoint idle_before, IdleCursor after, int limit) {
  if (Status s = check_limit(limit, "idle_tasks"); !s.ok()) return s;
  return run("idle_tasks", [&](Conn& c) -> Result<std::vector<TaskRow>> {
    Stmt s(c, ORCH_IDLE_TASKS_SQL);
    return s.bind(idle_before, after.updated_at, after.id, limit).all(read_task);
  });
}

Result<TaskRow> SqliteStore::apply_transition(const TransitionRequest& r) {
  if (r.from.empty() || r.to.empty()) return invalid("apply_transition: empty stage name");
  return write("apply_transition", [&](Conn& c) -> Result<TaskRow> {
    std::optional<TaskRow> row;
    {
      Stmt up(c,
              "UPDATE tasks SET stage = ?1, visit = visit + 1, entered_stage_at = ?2, updated_at = ?2, blocked = 0, "
              "blocked_reason = '', rejection_reason = ?3 WHERE id = ?4 AND stage = ?5 RETURNING " ORCH_TASK_COLUMNS);
      row = up.bind(r.to, r.now, r.rejection_reason.value_or(""), r.task_id, r.from).one(read_task);
    }
    if (!row) {
      Stmt cur(c, "SELECT stage FROM tasks WHERE id = ?");
      std::optional<std::string> stage = cur.bind(r.task_id).one(read_text0);
      if (!stage) return not_found("task " + std::to_string(r.task_id) + " not found");
      return conflict("task " + std::to_string(r.task_id) + " is in " + *stage + ", not " + r.from);
    }
    std::int64_t transition_id;
    {
      Stmt ins(c,
               "INSERT INTO transitions (task_id, from_stage, to_stage, cause, detail, at) VALUES (?, ?, ?, ?, ?, ?) "
               "RETURNING id");
      transition_id = ins.bind(r.task_id, r.from, r.to, cause_name(r.cause), r.detail, r.now).one(read_int0).value();
    }
    insert_messages(c, r.outbox, r.now, transition_id);
    return std::move(*row);
  });
}

namespace {
template <class E>
std::optional<std::string> name_of(const std::optional<E>& v, const char* (*name)(E)) {
  if (!v) return std::nullopt;
  return std::string(name(*v));
}
}  // namespace

Status SqliteStore::record_facts(TaskId id, const TaskFacts& f, TimePoint now) {
  return write("record_facts", [&](Conn& c) -> Status {
    Stmt s(c,
           "UPDATE tasks SET pr_number = COALESCE(?, pr_number), pr_state = COALESCE(?, pr_state), "
           "review_state = COALESCE(?, review_state), head_sha = COALESCE(?, head_sha), "
           "tracker_state = COALESCE(?, tracker_state), updated_at = ? WHERE id = ?");
    int changed = s.bind(f.pr_number, name_of(f.pr_state, pr_state_name), name_of(f.review_state, review_state_name),
                         f.head_sha, f.tracker_state, now, id)
                      .exec();
    if (changed == 0) return not_found("task " + std::to_string(id) + " not found");
    return {};
  });
}

Status SqliteStore::set_blocked(TaskId id, bool blocked, const std::string& reason, TimePoint now) {
  return write("set_blocked", [&](Conn& c) -> Status {
    Stmt s(c, "UPDATE tasks SET blocked = ?, blocked_reason = ?, updated_at = ? WHERE id = ?");
    int changed = s.bind(blocked, blocked ? reason : std::string(), now, id).exec();
    if (changed == 0) return not_found("task " + std::to_string(id) + " not found");
    return {};
  });
}

Status SqliteStore::block_task(TaskId id, const std::string& reason, TimePoint now,
                               const std::vector<OutboxMessage>& outbox) {
  return write("block_task", [&](Conn& c) -> Status {
    int changed;
    {
      Stmt s(c, "UPDATE tasks SET blocked = 1, blocked_reason = ?, updated_at = ? WHERE id = ?");
      changed = s.bind(reason, now, id).exec();
    }
    if (changed == 0) return not_found("task " + std::to_string(id) + " not found");
    insert_messages(c, outbox, now, std::nullopt);
    return {};
  });
}

Result<std::vector<TransitionRow>> SqliteStore::transitions_for_task(TaskId id) {
  return run("transitions_for_task", [&](Conn& c) -> Result<std::vector<TransitionRow>> {
    Stmt s(c, ORCH_TRANSITION_SELECT "WHERE tr.task_id = ? ORDER BY tr.id");
    return s.bind(id).all(read_transition);
  });
}

Result<std::vector<TransitionRow>> SqliteStore::recent_transitions(int limit) {
  if (Status s = check_limit(limit, "recent_transitions"); !s.ok()) return s;
  return run("recent_transitions", [&](Conn& c) -> Result<std::vector<TransitionRow>> {
    Stmt s(c, ORCH_TRANSITION_SELECT "ORDER BY tr.id DESC LIMIT ?");
    return s.bind(limit).all(read_transition);
  });
}

Result<std::int64_t> SqliteStore::count_tasks() {
  return run("count_tasks", [&](Conn& c) -> Result<std::int64_t> {
    Stmt s(c, "SELECT count(*) FROM tasks");
    return s.one(read_int0).value_or(0);
  });
}

Status SqliteStore::record_branch_head(const std::string& repo, const std::string& branch, const std::string& sha,
                                       TimePoint now) {
  return write("record_branch_head", [&](Conn& c) -> Status {
    Stmt s(c,
           "INSERT INTO branch_heads (repo, branch, sha, updated_at) VALUES (?, ?, ?, ?) "
           "ON CONFLICT (repo, branch) DO UPDATE SET sha = excluded.sha, updated_at = excluded.updated_at");
    s.bind(repo, branch, sha, now).exec();
    return {};
  });
}

Result<std::vector<std::string>> SqliteStore::branches_with_head(const std::string& repo, const std::string& sha) {
  return run("branches_with_head", [&](Conn& c) -> Result<std::vector<std::string>> {
    Stmt s(c, "SELECT branch FROM branch_heads WHERE repo = ? AND sha = ? ORDER BY updated_at DESC, branch");
    return s.bind(repo, sha).all(read_text0);
  });
}

Result<std::optional<ProjectRow>> SqliteStore::find_project(const std::string& name) {
  return run("find_project", [&](Conn& c) -> Result<std::optional<ProjectRow>> {
    Stmt s(c, "SELECT name, plane_identifier, tracker_horizon, tracker_full_sweep FROM projects WHERE name = ?");
    return s.bind(name).one([](const SQLite::Statement& st) {
      ProjectRow p;
      p.name = col_text(st, 0);
      p.plane_identifier = col_text(st, 1);
      p.tracker_horizon = col_opt_time(st, 2);
      p.tracker_full_sweep = col_opt_time(st, 3);
      return p;
    });
  });
}

Status SqliteStore::save_project(const ProjectRow& row) {
  if (row.name.empty()) return invalid("save_project: empty project name");
  return write("save_project", [&](Conn& c) -> Status {
    Stmt s(c,
           "INSERT INTO projects (name, plane_identifier, tracker_horizon, tracker_full_sweep) VALUES (?, ?, ?, ?) "
           "ON CONFLICT (name) DO UPDATE SET plane_identifier = excluded.plane_identifier, "
           "tracker_horizon = excluded.tracker_horizon, tracker_full_sweep = excluded.tracker_full_sweep");
    s.bind(row.name, row.plane_identifier, row.tracker_horizon, row.tracker_full_sweep).exec();
    return {};
  });
}

// ---- jobs -------------------------------------------------------------------------------------------------------

namespace {
// Why a job-state change matched no row: it is not there, or it is not in the state the change requires.
Status job_mismatch(SqliteStore::Conn& c, JobId id, const char* expected) {
  Stmt s(c, "SELECT status FROM jobs WHERE id = ?");
  std::optional<std::string> status = s.bind(id).one(read_text0);
  if (!status) return not_found("job " + std::to_string(id) + " not found");
  return conflict("job " + std::to_string(id) + " is " + *status + ", not " + expected);
}

std::vector<JobRow> sorted_by_id(std::vector<JobRow> rows) {  // RETURNING gives no order
  std::sort(rows.begin(), rows.end(), [](const JobRow& a, const JobRow& b) { return a.id < b.id; });
  return rows;
}
}  // namespace

Result<std::optional<JobRow>> SqliteStore::enqueue_job(const NewJob& job, TimePoint now) {
  // Most calls find their attempt already there (the start-up replay of every non-terminal task, a webhook handled
  // twice): a read answers those without the write lock, whose BEGIN IMMEDIATE / COMMIT cost 70 % of a 100 k-task
  // replay (bench/RESULTS.md). An attempt inserted after this read is still caught by ON CONFLICT below.
  auto exists = run("enqueue_job", [&](Conn& c) -> Result<bool> {
    Stmt s(c, "SELECT 1 FROM jobs WHERE task_id = ? AND visit = ? AND attempt = ?");
    return s.bind(job.task_id, job.visit, job.attempt).one(read_int0).has_value();
  });
  if (!exists.ok()) return exists.status();
  if (exists.value()) return std::optional<JobRow>();
  return write("enqueue_job", [&](Conn& c) -> Result<std::optional<JobRow>> {
    {
      Stmt t(c, "SELECT id FROM tasks WHERE id = ?");
      if (!t.bind(job.task_id).one(read_int0)) return not_found("task " + std::to_string(job.task_id) + " not found");
    }
    Stmt s(c,
           "INSERT INTO jobs (task_id, visit, stage, agent, status, attempt, created_at, run_after) "
           "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?) "
           "ON CONFLICT (task_id, visit, attempt) DO NOTHING RETURNING " ORCH_JOB_COLUMNS);
    return s.bind(job.task_id, job.visit, job.stage, job.agent, job.attempt, now, job.run_after).one(read_job);
  });
}

Result<std::optional<JobRow>> SqliteStore::claim_job(const std::string& worker, TimePoint now) {
  return write("claim_job", [&](Conn& c) -> Result<std::optional<JobRow>> {
    // `AND status = 'queued'` again in the outer WHERE: the claim holds even if the inner choice were stale.
    Stmt s(c,
           "UPDATE jobs SET status = 'running', worker = ?1, started_at = ?2, heartbeat_at = ?2 "
           "WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= ?2 "
           "ORDER BY run_after, id LIMIT 1) AND status = 'queued' RETURNING " ORCH_JOB_COLUMNS);
    return s.bind(worker, now).one(read_job);
  });
}

Status SqliteStore::heartbeat_job(JobId id, TimePoint now) {
  return write("heartbeat_job", [&](Conn& c) -> Status {
    int changed;
    {
      Stmt s(c, "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running'");
      changed = s.bind(now, id).exec();
    }
    return changed ? Status{} : job_mismatch(c, id, "running");
  });
}

Status SqliteStore::finish_job(JobId id, JobStatus status, const std::string& error, TimePoint now) {
  if (status != JobStatus::kSucceeded && status != JobStatus::kFailed)
    return invalid(std::string("finish_job: ") + job_status_name(status) + " is not a final status");
  return write("finish_job", [&](Conn& c) -> Status {
    int changed;
    {
      Stmt s(c, "UPDATE jobs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status = 'running'");
      changed = s.bind(job_status_name(status), error, now, id).exec();
    }
    return changed ? Status{} : job_mismatch(c, id, "running");
  });
}

Status SqliteStore::requeue_job(JobId id, TimePoint now) {
  return write("requeue_job", [&](Conn& c) -> Status {
    std::optional<std::string> status;
    {
      Stmt s(c, "SELECT status FROM jobs WHERE id = ?");
      status = s.bind(id).one(read_text0);
    }
    if (!status) return not_found("job " + std::to_string(id) + " not found");
    if (*status == "queued") return {};  // already requeued: a second recovery pass changes nothing
    if (*status != "running") return conflict("job " + std::to_string(id) + " is " + *status + ", not running");
    Stmt s(c,
           "UPDATE jobs SET status = 'queued', worker = '', started_at = NULL, heartbeat_at = NULL, run_after = ? "
           "WHERE id = ?");
    s.bind(now, id).exec();
    return {};
  });
}

Status SqliteStore::begin_job_step(JobId id, const std::string& step, TimePoint now) {
  return write("begin_job_step", [&](Conn& c) -> Status {
    int changed;
    {
      Stmt s(c,
             "UPDATE jobs SET step = ?, step_attempts = 0, step_error = '', heartbeat_at = ? "
             "WHERE id = ? AND status = 'running'");
      changed = s.bind(step, now, id).exec();
    }
    return changed ? Status{} : job_mismatch(c, id, "running");
  });
}

Status SqliteStore::fail_job_step(JobId id, const std::string& error, std::optional<TimePoint> retry_at,
                                  TimePoint now) {
  return write("fail_job_step", [&](Conn& c) -> Status {
    int changed;
    if (retry_at) {
      Stmt s(c,
             "UPDATE jobs SET status = 'queued', worker = '', heartbeat_at = NULL, run_after = ?, "
             "step_attempts = step_attempts + 1, step_error = ? WHERE id = ? AND status = 'running'");
      changed = s.bind(*retry_at, error, id).exec();
    } else {
      Stmt s(c,
             "UPDATE jobs SET status = 'failed', error = ?1, finished_at = ?2, step_attempts = step_attempts + 1, "
             "step_error = ?1 WHERE id = ?3 AND status = 'running'");
      changed = s.bind(error, now, id).exec();
    }
    return changed ? Status{} : job_mismatch(c, id, "running");
  });
}

Result<std::optional<JobRow>> SqliteStore::find_job(JobId id) {
  return run("find_job", [&](Conn& c) -> Result<std::optional<JobRow>> {
    Stmt s(c, "SELECT " ORCH_JOB_COLUMNS " FROM jobs WHERE id = ?");
    return s.bind(id).one(read_job);
  });
}

Result<std::vector<JobRow>> SqliteStore::jobs_for_task(TaskId id) {
  return run("jobs_for_task", [&](Conn& c) -> Result<std::vector<JobRow>> {
    Stmt s(c, "SELECT " ORCH_JOB_COLUMNS " FROM jobs WHERE task_id = ? ORDER BY id");
    return s.bind(id).all(read_job);
  });
}

Result<std::vector<JobRow>> SqliteStore::jobs_with_status(JobStatus status, int limit) {
  if (Status s = check_limit(limit, "jobs_with_status"); !s.ok()) return s;
  return run("jobs_with_status", [&](Conn& c) -> Result<std::vector<JobRow>> {
    Stmt s(c, "SELECT " ORCH_JOB_COLUMNS " FROM jobs WHERE status = ? ORDER BY created_at, id LIMIT ?");
    return s.bind(job_status_name(status), limit).all(read_job);
  });
}

Result<std::vector<JobRow>> SqliteStore::recent_failed_jobs(int limit) {
  if (Status s = check_limit(limit, "recent_failed_jobs"); !s.ok()) return s;
  return run("recent_failed_jobs", [&](Conn& c) -> Result<std::vector<JobRow>> {
    Stmt s(c, "SELECT " ORCH_JOB_COLUMNS " FROM jobs WHERE status = 'failed' "
              "ORDER BY finished_at DESC, id DESC LIMIT ?");
    return s.bind(limit).all(read_job);
  });
}

Result<std::vector<JobRow>> SqliteStore::fail_stale_running(TimePoint heartbeat_before, int limit,
                                                            const std::string& reason, TimePoint now) {
  if (Status s = check_limit(limit, "fail_stale_running"); !s.ok()) return s;
  return write("fail_stale_running", [&](Conn& c) -> Result<std::vector<JobRow>> {
    Stmt s(c,
           "UPDATE jobs SET status = 'failed', error = ?1, finished_at = ?2 WHERE id IN "
           "(SELECT id FROM jobs WHERE status = 'running' AND heartbeat_at < ?3 ORDER BY heartbeat_at, id LIMIT ?4) "
           "RETURNING " ORCH_JOB_COLUMNS);
    return sorted_by_id(s.bind(reason, now, heartbeat_before, limit).all(read_job));
  });
}

Result<std::vector<JobRow>> SqliteStore::fail_expired_queued(TimePoint created_before, int limit,
                                                             const std::string& reason, TimePoint now) {
  if (Status s = check_limit(limit, "fail_expired_queued"); !s.ok()) return s;
  return write("fail_expired_queued", [&](Conn& c) -> Result<std::vector<JobRow>> {
    Stmt s(c,
           "UPDATE jobs SET status = 'failed', error = ?1, finished_at = ?2 WHERE id IN "
           "(SELECT id FROM jobs WHERE status = 'queued' AND created_at < ?3 AND step = '' "
           "ORDER BY created_at, id LIMIT ?4) "
           "RETURNING " ORCH_JOB_COLUMNS);
    return sorted_by_id(s.bind(reason, now, created_before, limit).all(read_job));
  });
}

// ---- inbox ------------------------------------------------------------------------------------------------------

namespace {
Status check_delivery(const NewDelivery& d, bool dedup_on_digest) {
  if (d.delivery_id.empty()) return invalid("delivery without a delivery id");
  if (dedup_on_digest && d.body_digest.empty()) return invalid("delivery " + d.delivery_id + " without a body digest");
  return {};
}

// The dedup claim and the insert, inside the caller's IMMEDIATE transaction: no other writer can slip between the
// lookup and the insert, and rows inserted earlier in the same transaction (a batch) are seen.
InboxInsert insert_one(SqliteStore::Conn& c, const NewDelivery& d, bool dedup_on_digest) {
  const char* source = source_name(d.source);
  if (dedup_on_digest) {
    Stmt s(c, "SELECT seq FROM deliveries WHERE source = ? AND body_digest = ? ORDER BY seq LIMIT 1");
    if (std::optional<std::int64_t> seq = s.bind(source, d.body_digest).one(read_int0)) return {*seq, true};
  }
  {
    Stmt s(c,
           "INSERT INTO deliveries (source, delivery_id, event, body_digest, body, received_at, lane, run_after) "
           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6) ON CONFLICT (source, delivery_id) DO NOTHING RETURNING seq");
    if (std::optional<std::int64_t> seq =
            s.bind(source, d.delivery_id, d.event, d.body_digest, Blob{d.body}, d.received_at, d.lane)
                .one(read_int0))
      return {*seq, false};
  }
  Stmt s(c, "SELECT seq FROM deliveries WHERE source = ? AND delivery_id = ?");
  std::optional<std::int64_t> seq = s.bind(source, d.delivery_id).one(read_int0);
  if (!seq) throw std::logic_error("delivery " + d.delivery_id + " conflicted but is not there");
  return {*seq, true};
}
}  // namespace

Result<InboxInsert> SqliteStore::insert_delivery(const NewDelivery& delivery, bool dedup_on_digest) {
  if (Status s = check_delivery(delivery, dedup_on_digest); !s.ok()) return s;
  return write(
      "insert_delivery", [&](Conn& c) -> Result<InboxInsert> { return insert_one(c, delivery, dedup_on_digest); },
      WriteGate::Priority::kAcknowledge);
}

Result<std::vector<InboxInsert>> SqliteStore::insert_deliveries(const std::vector<NewDelivery>& deliveries,
                                                                const std::vector<bool>& dedup_on_digest) {
  if (deliveries.size() != dedup_on_digest.size())
    return invalid("insert_deliveries: " + std::to_string(deliveries.size()) + " deliveries but " +
                   std::to_string(dedup_on_digest.size()) + " dedup flags");
  for (size_t i = 0; i < deliveries.size(); ++i)
    if (Status s = check_delivery(deliveries[i], dedup_on_digest[i]); !s.ok()) return s;
  if (deliveries.empty()) return std::vector<InboxInsert>{};
  return write("insert_deliveries", [&](Conn& c) -> Result<std::vector<InboxInsert>> {
    std::vector<InboxInsert> out;
    out.reserve(deliveries.size());
    for (size_t i = 0; i < deliveries.size(); ++i) out.push_back(insert_one(c, deliveries[i], dedup_on_digest[i]));
    return out;
  }, WriteGate::Priority::kAcknowledge);
}

Result<std::optional<DeliveryRow>> SqliteStore::next_pending_delivery(DeliverySeq after) {
  return run("next_pending_delivery", [&](Conn& c) -> Result<std::optional<DeliveryRow>> {
    Stmt s(c, "SELECT " ORCH_DELIVERY_COLUMNS " FROM deliveries WHERE status = 'pending' AND seq > ? "
              "ORDER BY seq LIMIT 1");
    return s.bind(after).one(read_delivery);
  });
}

// The inbox claim. The candidates are the lane heads (the oldest pending delivery of each lane), found by a skip
// scan over deliveries_pending_lane: one index seek per lane, so that a claim costs the number of lanes, not the
// backlog (a lane whose head is held or waiting for its retry no longer makes the claim step over its whole
// backlog). The oldest head that is due and that nobody else holds wins. INDEXED BY: without statistics SQLite
// would rather read every pending row through deliveries_status and sort them.
#define ORCH_SQLITE_CLAIM_DELIVERY_SQL                                                                            \
  "WITH RECURSIVE heads(seq, lane) AS ("                                                                          \
  "SELECT seq, lane FROM (SELECT seq, lane FROM deliveries INDEXED BY deliveries_pending_lane "                  \
  "WHERE status = 'pending' ORDER BY lane, seq LIMIT 1) "                                                         \
  "UNION ALL SELECT n.seq, n.lane FROM heads h JOIN deliveries n ON n.seq = (SELECT m.seq FROM deliveries AS m " \
  "INDEXED BY deliveries_pending_lane "                                                                           \
  "WHERE m.status = 'pending' AND m.lane > h.lane ORDER BY m.lane, m.seq LIMIT 1)) "                              \
  "UPDATE deliveries SET claimed_by = ?1, claim_expires_at = ?2 WHERE seq = ("                                    \
  "SELECT d.seq FROM heads h JOIN deliveries d ON d.seq = h.seq WHERE d.run_after <= ?3 "                        \
  "AND (d.claim_expires_at IS NULL OR d.claim_expires_at <= ?3 OR d.claimed_by = ?1) "                            \
  "ORDER BY d.seq LIMIT 1) RETURNING " ORCH_DELIVERY_COLUMNS

Result<std::optional<DeliveryRow>> SqliteStore::claim_delivery(const std::string& claimer, TimePoint now,
                                                               Millis lease, std::stop_token) {
  if (claimer.empty()) return invalid("claim_delivery: empty claimer");
  if (lease <= Millis::zero()) return invalid("claim_delivery: the lease must be positive");
  return write("claim_delivery", [&](Conn& c) -> Result<std::optional<DeliveryRow>> {
    Stmt s(c, ORCH_SQLITE_CLAIM_DELIVERY_SQL);
    return s.bind(claimer, now + lease, now).one(read_delivery);
  });
}

Result<std::string> SqliteStore::claim_delivery_plan() {
  return run("claim_delivery_plan", [&](Conn& c) -> Result<std::string> {
    return query_plan(c, "EXPLAIN QUERY PLAN " ORCH_SQLITE_CLAIM_DELIVERY_SQL);
  });
}

Status SqliteStore::retry_delivery(DeliverySeq seq, const std::string& error, TimePoint run_after) {
  return write("retry_delivery", [&](Conn& c) -> Status {
    Stmt s(c,
           "UPDATE deliveries SET error = ?, run_after = ?, attempts = attempts + 1, claimed_by = '', "
           "claim_expires_at = NULL WHERE seq = ? AND status = 'pending'");
    if (s.bind(error, run_after, seq).exec() == 0)
      return not_found("delivery " + std::to_string(seq) + " is not pending");
    return {};
  });
}

Status SqliteStore::finish_delivery(DeliverySeq seq, DeliveryStatus status, const std::string& error, TimePoint now) {
  return write("finish_delivery", [&](Conn& c) -> Status {
    Stmt s(c,
           "UPDATE deliveries SET status = ?, error = ?, handled_at = ?, attempts = attempts + 1, claimed_by = '', "
           "claim_expires_at = NULL WHERE seq = ?");
    if (s.bind(delivery_status_name(status), error, now, seq).exec() == 0)
      return not_found("delivery " + std::to_string(seq) + " not found");
    return {};
  });
}

Result<std::optional<DeliveryRow>> SqliteStore::find_delivery(const std::string& delivery_id) {
  return run("find_delivery", [&](Conn& c) -> Result<std::optional<DeliveryRow>> {
    Stmt s(c, "SELECT " ORCH_DELIVERY_COLUMNS " FROM deliveries WHERE source IN ('plane', 'gitea') "
              "AND delivery_id = ? ORDER BY seq DESC LIMIT 1");
    return s.bind(delivery_id).one(read_delivery);
  });
}

Status SqliteStore::requeue_delivery(DeliverySeq seq) {
  return write("requeue_delivery", [&](Conn& c) -> Status {
    std::optional<std::string> status;
    {
      Stmt s(c, "SELECT status FROM deliveries WHERE seq = ?");
      status = s.bind(seq).one(read_text0);
    }
    if (!status) return not_found("delivery " + std::to_string(seq) + " not found");
    if (*status == "pending") return {};  // already waiting: replaying twice is one replay
    if (*status != "failed")
      return conflict("delivery " + std::to_string(seq) + " is " + *status + "; only a failed delivery is replayed");
    Stmt s(c,
           "UPDATE deliveries SET status = 'pending', error = '', handled_at = NULL, claimed_by = '', "
           "claim_expires_at = NULL, run_after = received_at WHERE seq = ?");
    s.bind(seq).exec();
    return {};
  });
}

Result<InboxCounts> SqliteStore::inbox_counts() {
  return run("inbox_counts", [&](Conn& c) -> Result<InboxCounts> {
    Stmt s(c, "SELECT status, count(*) FROM deliveries GROUP BY status");
    InboxCounts counts;
    for (const auto& [status, n] : s.all([](const SQLite::Statement& st) {
           return std::pair(col_enum(st, 0, parse_delivery_status), col_int(st, 1));
         })) {
      counts.received += n;
      switch (status) {
        case DeliveryStatus::kPending: counts.pending = n; break;
        case DeliveryStatus::kHandled: counts.handled = n; break;
        case DeliveryStatus::kIgnored: counts.ignored = n; break;
        case DeliveryStatus::kFailed: counts.failed = n; break;
      }
    }
    return counts;
  });
}

Result<std::vector<DeliveryRow>> SqliteStore::failed_deliveries(int limit) {
  if (Status s = check_limit(limit, "failed_deliveries"); !s.ok()) return s;
  return run("failed_deliveries", [&](Conn& c) -> Result<std::vector<DeliveryRow>> {
    Stmt s(c, "SELECT " ORCH_DELIVERY_COLUMNS " FROM deliveries WHERE status = 'failed' ORDER BY seq DESC LIMIT ?");
    return s.bind(limit).all(read_delivery);
  });
}

// ---- outbox -----------------------------------------------------------------------------------------------------

namespace {
// A notification-state change matched no row: it is not there, or it already left `pending`.
Status notification_mismatch(SqliteStore::Conn& c, NotificationId id) {
  Stmt s(c, "SELECT status FROM notifications WHERE id = ?");
  std::optional<std::string> status = s.bind(id).one(read_text0);
  if (!status) return not_found("notification " + std::to_string(id) + " not found");
  return conflict("notification " + std::to_string(id) + " is " + *status + ", not pending");
}
}  // namespace

// Inserts the messages inside the caller's transaction; returns how many were new. The placeholder in a key becomes
// `transition_id`, or without one the latest transition of the message's task.
int SqliteStore::insert_messages(Conn& c, const std::vector<OutboxMessage>& messages, TimePoint now,
                                 std::optional<std::int64_t> transition_id) {
  int added = 0;
  for (const OutboxMessage& m : messages) {
    std::int64_t tid = 0;
    if (m.dedup_key.find(kTransitionPlaceholder) != std::string::npos) {
      if (transition_id) {
        tid = *transition_id;
      } else {
        Stmt last(c, "SELECT COALESCE(max(id), 0) FROM transitions WHERE task_id = ?");
        tid = last.bind(m.task_id).one(read_int0).value_or(0);
      }
    }
    Stmt s(c,
           "INSERT INTO notifications (dedup_key, text, created_at, next_attempt_at, channel, lane) "
           "VALUES (?1, ?2, ?3, ?3, ?4, ?5) ON CONFLICT (dedup_key) DO NOTHING RETURNING id");
    if (s.bind(resolve_outbox_key(m.dedup_key, tid), m.text, now, m.channel, m.lane).one(read_int0)) ++added;
  }
  return added;
}

Result<bool> SqliteStore::enqueue_notification(const std::string& dedup_key, const std::string& text, TimePoint now) {
  if (dedup_key.empty()) return invalid("enqueue_notification: empty dedup key");
  return write("enqueue_notification", [&](Conn& c) -> Result<bool> {
    return insert_messages(c, {OutboxMessage{std::string(kChannelTelegram), dedup_key, text}}, now, std::nullopt) == 1;
  });
}

Result<int> SqliteStore::enqueue_messages(const std::vector<OutboxMessage>& messages, TimePoint now) {
  for (const OutboxMessage& m : messages)
    if (m.dedup_key.empty() || m.channel.empty()) return invalid("enqueue_messages: empty dedup key or channel");
  return write("enqueue_messages", [&](Conn& c) -> Result<int> { return insert_messages(c, messages, now, std::nullopt); });
}

Result<std::optional<NotificationRow>> SqliteStore::claim_next_message(const std::string& channel, TimePoint now,
                                                                       Millis lease) {
  if (lease <= Millis::zero()) return invalid("claim_next_message: the lease must be positive");
  return write("claim_next_message", [&](Conn& c) -> Result<std::optional<NotificationRow>> {
    Stmt s(c,
           "UPDATE notifications SET next_attempt_at = ?1 WHERE id = (SELECT n.id FROM notifications n "
           "WHERE n.channel = ?2 AND n.status = 'pending' AND n.next_attempt_at <= ?3 AND NOT EXISTS ("
           "SELECT 1 FROM notifications e WHERE e.channel = n.channel AND e.lane = n.lane AND e.status = 'pending' "
           "AND e.id < n.id AND n.lane <> '') ORDER BY n.id LIMIT 1) RETURNING " ORCH_NOTIFICATION_COLUMNS);
    return s.bind(now + lease, channel, now).one(read_notification);
  });
}

Status SqliteStore::retry_failed_message(NotificationId id, TimePoint now) {
  return write("retry_failed_message", [&](Conn& c) -> Status {
    int changed;
    {
      Stmt s(c,
             "UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = ? "
             "WHERE id = ? AND status = 'failed'");
      changed = s.bind(now, id).exec();
    }
    if (changed) return {};
    Stmt s(c, "SELECT status FROM notifications WHERE id = ?");
    std::optional<std::string> status = s.bind(id).one(read_text0);
    if (!status) return not_found("notification " + std::to_string(id) + " not found");
    return conflict("notification " + std::to_string(id) + " is " + *status + ", not failed");
  });
}

Result<std::vector<NotificationRow>> SqliteStore::messages(const std::string& channel, NotificationStatus status,
                                                           int limit) {
  if (Status s = check_limit(limit, "messages"); !s.ok()) return s;
  return run("messages", [&](Conn& c) -> Result<std::vector<NotificationRow>> {
    Stmt s(c, "SELECT " ORCH_NOTIFICATION_COLUMNS " FROM notifications WHERE channel = ? AND status = ? "
              "ORDER BY id DESC LIMIT ?");
    return s.bind(channel, std::string(notification_status_name(status)), limit).all(read_notification);
  });
}

Result<std::vector<NotificationRow>> SqliteStore::due_notifications(TimePoint now, int limit) {
  if (Status s = check_limit(limit, "due_notifications"); !s.ok()) return s;
  return run("due_notifications", [&](Conn& c) -> Result<std::vector<NotificationRow>> {
    Stmt s(c, "SELECT " ORCH_NOTIFICATION_COLUMNS " FROM notifications WHERE status = 'pending' "
              "AND next_attempt_at <= ? AND channel = 'telegram' ORDER BY next_attempt_at, id LIMIT ?");
    return s.bind(now, limit).all(read_notification);
  });
}

Result<std::vector<NotificationRow>> SqliteStore::claim_due_notifications(TimePoint now, Millis lease, int limit) {
  if (Status s = check_limit(limit, "claim_due_notifications"); !s.ok()) return s;
  if (lease <= Millis::zero()) return invalid("claim_due_notifications: the lease must be positive");
  return write("claim_due_notifications", [&](Conn& c) -> Result<std::vector<NotificationRow>> {
    Stmt s(c,
           "UPDATE notifications SET next_attempt_at = ?1 WHERE id IN (SELECT id FROM notifications "
           "WHERE status = 'pending' AND next_attempt_at <= ?2 AND channel = 'telegram' "
           "ORDER BY next_attempt_at, id LIMIT ?3) "
           "RETURNING " ORCH_NOTIFICATION_COLUMNS);
    std::vector<NotificationRow> rows = s.bind(now + lease, now, limit).all(read_notification);
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.id < b.id; });  // oldest first
    return rows;
  });
}

Status SqliteStore::mark_notification_sent(NotificationId id, TimePoint now) {
  return write("mark_notification_sent", [&](Conn& c) -> Status {
    int changed;
    {
      Stmt s(c,
             "UPDATE notifications SET status = 'sent', sent_at = ?, attempts = attempts + 1, error = '' "
             "WHERE id = ? AND status = 'pending'");
      changed = s.bind(now, id).exec();
    }
    return changed ? Status{} : notification_mismatch(c, id);
  });
}

Status SqliteStore::mark_notification_retry(NotificationId id, const std::string& error, TimePoint next_attempt) {
  return write("mark_notification_retry", [&](Conn& c) -> Status {
    int changed;
    {
      Stmt s(c,
             "UPDATE notifications SET attempts = attempts + 1, error = ?, next_attempt_at = ? "
             "WHERE id = ? AND status = 'pending'");
      changed = s.bind(error, next_attempt, id).exec();
    }
    return changed ? Status{} : notification_mismatch(c, id);
  });
}

Status SqliteStore::mark_notification_failed(NotificationId id, const std::string& error) {
  return write("mark_notification_failed", [&](Conn& c) -> Status {
    int changed;
    {
      Stmt s(c,
             "UPDATE notifications SET status = 'failed', attempts = attempts + 1, error = ? "
             "WHERE id = ? AND status = 'pending'");
      changed = s.bind(error, id).exec();
    }
    return changed ? Status{} : notification_mismatch(c, id);
  });
}

Result<std::vector<NotificationRow>> SqliteStore::all_notifications() {
  return run("all_notifications", [&](Conn& c) -> Result<std::vector<NotificationRow>> {
    Stmt s(c, "SELECT " ORCH_NOTIFICATION_COLUMNS " FROM notifications ORDER BY id");
    return s.all(read_notification);
  });
}

Result<OutboxCounts> SqliteStore::outbox_counts() { return channel_counts(std::string(kChannelTelegram)); }

Result<OutboxCounts> SqliteStore::channel_counts(const std::string& channel) {
  return run("channel_counts", [&](Conn& c) -> Result<OutboxCounts> {
    Stmt s(c, "SELECT status, count(*) FROM notifications WHERE channel = ? GROUP BY status");
    OutboxCounts counts;
    for (const auto& [status, n] : s.bind(channel).all([](const SQLite::Statement& st) {
           return std::pair(col_enum(st, 0, parse_notification_status), col_int(st, 1));
         })) {
      switch (status) {
        case NotificationStatus::kPending: counts.pending = n; break;
        case NotificationStatus::kSent: counts.sent = n; break;
        case NotificationStatus::kFailed: counts.failed = n; break;
      }
    }
    return counts;
  });
}

// ---- settings ---------------------------------------------------------------------------------------------------

Result<std::optional<std::string>> SqliteStore::get_setting(const std::string& key) {
  return run("get_setting", [&](Conn& c) -> Result<std::optional<std::string>> {
    Stmt s(c, "SELECT value FROM settings WHERE key = ?");
    return s.bind(key).one(read_text0);
  });
}

Status SqliteStore::set_setting(const std::string& key, const std::string& value) {
  return write("set_setting", [&](Conn& c) -> Status {
    Stmt s(c, "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value");
    s.bind(key, value).exec();
    return {};
  });
}

#undef ORCH_TASK_COLUMNS
#undef ORCH_JOB_COLUMNS
#undef ORCH_DELIVERY_COLUMNS
#undef ORCH_NOTIFICATION_COLUMNS
#undef ORCH_TRANSITION_SELECT
#undef ORCH_IDLE_TASKS_SQL

}  // namespace orch
