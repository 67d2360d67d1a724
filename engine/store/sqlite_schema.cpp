// engine/store/sqlite_schema.cpp: the SQLite schema, as forward-only migrations numbered by PRAGMA user_version.
// Times are INTEGER milliseconds since the epoch, enums their text names (model.h), tables STRICT.
#include "engine/store/sqlite_schema.h"

#include <iterator>

#include "engine/store/sqlite_store.h"

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
    // 7: fair, limited job claims (docs/adr/0018). A job carries its task's project, so that the claim finds each
    // project's oldest due job by an index seek and counts the running jobs per project without a join.
    R"sql(
ALTER TABLE jobs ADD COLUMN project TEXT NOT NULL DEFAULT '';
UPDATE jobs SET project = (SELECT project FROM tasks WHERE tasks.id = jobs.task_id);
CREATE INDEX jobs_status_project ON jobs (status, project, run_after, id);
)sql",
    // 8: the gate side's last conclusion per task (engine/waiting.h): /queue.json says "waiting because the gate is
    // red: CI failure on abc123" from what the reconciler saw, never from an evaluation of its own.
    R"sql(
CREATE TABLE gate_evaluations (
  task_id      INTEGER PRIMARY KEY REFERENCES tasks (id),
  stage        TEXT NOT NULL,
  visit        INTEGER NOT NULL,
  green        INTEGER NOT NULL,
  why          TEXT NOT NULL,
  since        INTEGER NOT NULL
) STRICT;
)sql",
    // 9: the delivery ledger (/queue, orch explain). A delivery records the task it was about and what handling it
    // concluded; a refused duplicate's arrival is one small row pointing at the stored original.
    R"sql(
ALTER TABLE deliveries ADD COLUMN task_id INTEGER;
ALTER TABLE deliveries ADD COLUMN detail TEXT NOT NULL DEFAULT '';
CREATE INDEX deliveries_task ON deliveries (task_id, seq) WHERE task_id IS NOT NULL;
CREATE TABLE delivery_duplicates (
  id           INTEGER PRIMARY KEY,
  source       TEXT NOT NULL,
  delivery_id  TEXT NOT NULL,
  original_seq INTEGER NOT NULL REFERENCES deliveries (seq),
  received_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX delivery_duplicates_original ON delivery_duplicates (original_seq, id);
)sql",
    // 10: spend and budgets (docs/adr/0021). What agents reported, per job and summed per task and per (project,
    // stage); a task's raise and its budget hold.
    R"sql(
ALTER TABLE jobs ADD COLUMN tokens_in INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN tokens_out INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN spend_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN budget_raise_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN budget_hold TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN budget_hold_at INTEGER;
CREATE TABLE stage_spend (
  project      TEXT NOT NULL,
  stage        TEXT NOT NULL,
  spend_micros INTEGER NOT NULL,
  PRIMARY KEY (project, stage)
) STRICT;
)sql",
    // 11: runners (docs/adr/0023): registered by name, known by the SHA-256 of their token (never the token).
    R"sql(
CREATE TABLE runners (
  name          TEXT PRIMARY KEY,
  labels        TEXT NOT NULL,
  token_sha256  TEXT NOT NULL UNIQUE,
  registered_at INTEGER NOT NULL,
  last_seen_at  INTEGER,
  revoked       INTEGER NOT NULL DEFAULT 0
) STRICT;
)sql",
    // 12: cancel (docs/adr/0023): a person's intent to stop a running job, read by its worker or runner at the next
    // heartbeat, which stops the agent's process group before the job is marked cancelled.
    R"sql(
ALTER TABLE jobs ADD COLUMN cancel_requested TEXT NOT NULL DEFAULT '';
)sql",
    // 13: dispatch (docs/adr/0023): when a runner's agent process started. A runner claim that never gets there within
    // dispatch_timeout (a runner stuck in git) goes back to the queue.
    R"sql(
ALTER TABLE jobs ADD COLUMN launched_at INTEGER;
)sql",
};
static_assert(std::size(kMigrations) == SqliteStore::kSchemaVersion, "one migration per schema version");

}  // namespace

// Applies the missing migrations; returns the version found. Safe against other processes opening the same file:
// the version is re-read under the write lock.
Result<int> migrate_sqlite_schema(SQLite::Database& db) {
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

}  // namespace orch
