// engine/store/sql_store_impl.h: the bodies of SqlStore<Conn> (engine/store/sql_store.h). Included only by the two
// store files, each after its Dialect<Conn> and before `template class SqlStore<Conn>;`, so that each dialect's
// store is compiled once, in its own file.
//
// What a Dialect<Conn> states (static members):
//   kIdleTasks, kRecordFacts, kSaveProject, kClaimJob, kJobStatusForUpdate, kFailStaleRunning, kFailExpiredQueued,
//   serialize_claims(Conn&): first in claim_job's transaction, so that two claims never both count the same running
//     jobs under a limit (a no-op where the transaction already holds the only write lock);
//   kInsertDelivery, kDeliveryStatusForUpdate, kClaimNextMessage, kClaimDueNotifications: its SQL for statements
//     whose text differs (locking clauses, casts, index hints), with the parameters in the order of the shared one;
//   kEnqueueReadsFirst: whether enqueue_job first looks for the attempt without a write transaction;
//   kLocksDedupKeys and lock_dedup_keys(Conn&, deliveries, dedup_on_digest): whether the inbox's lookup-then-insert
//     needs locks to be race-free, and the call that takes them, first in insert_delivery(ies)' transaction.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "engine/store/rows.h"
#include "engine/store/sql_store.h"

namespace orch {

template <class Conn>
struct Dialect;

namespace sql_store {

inline Status check_limit(int limit, const char* what) {
  // SQLite reads a negative LIMIT as "no limit": refuse it rather than return an unbounded batch.
  if (limit < 1) return invalid(std::string(what) + ": limit must be positive, got " + std::to_string(limit));
  return {};
}

inline Status check_delivery(const NewDelivery& d, bool dedup_on_digest) {
  if (d.delivery_id.empty()) return invalid("delivery without a delivery id");
  if (dedup_on_digest && d.body_digest.empty()) return invalid("delivery " + d.delivery_id + " without a body digest");
  return {};
}

template <class E>
std::optional<std::string> name_of(const std::optional<E>& v, const char* (*name)(E)) {
  if (!v) return std::nullopt;
  return std::string(name(*v));
}

template <class R>
std::vector<R> sorted_by_id(std::vector<R> rows) {  // RETURNING gives no order
  std::sort(rows.begin(), rows.end(), [](const R& a, const R& b) { return a.id < b.id; });
  return rows;
}

// A name -> limit map as the JSON object the claim's SQL reads with json_each / jsonb_each_text.
inline std::string limits_json(const std::map<std::string, int>& limits) {
  nlohmann::json o = nlohmann::json::object();
  for (const auto& [name, n] : limits) o[name] = n;
  return o.dump();
}

// Why a job-state change matched no row: it is not there, or it is not in the state the change requires.
// `worker`: a fenced change (docs/adr/0023), for which a running job without a cancel is held by another claim.
template <class Conn>
Status job_mismatch(Conn& c, JobId id, const char* expected, const std::string* worker = nullptr) {
  auto row = c.one(
      "SELECT status, cancel_requested FROM jobs WHERE id = $1",
      [](const auto& r) { return std::pair(r.text(0), r.text(1)); }, id);
  if (!row) return not_found("job " + std::to_string(id) + " not found");
  const auto& [status, cancel] = *row;
  if (status == "running" && !cancel.empty()) return conflict("job " + std::to_string(id) + " is cancelled: " + cancel);
  if (status == "running" && worker) return conflict("job " + std::to_string(id) + " is no longer held by " + *worker);
  return conflict("job " + std::to_string(id) + " is " + status + ", not " + expected);
}

// Why a notification-state change matched no row: it is not there, or it is not `expected`.
template <class Conn>
Status notification_mismatch(Conn& c, NotificationId id, const char* expected = "pending") {
  std::optional<std::string> status = c.one("SELECT status FROM notifications WHERE id = $1", read_text0, id);
  if (!status) return not_found("notification " + std::to_string(id) + " not found");
  return conflict("notification " + std::to_string(id) + " is " + *status + ", not " + expected);
}

// A refused duplicate's arrival, for the ledger: the delivery id it came with (Plane's retries carry a new one) and
// the stored original. One small row; the body is not kept twice.
template <class Conn>
void record_duplicate(Conn& c, const NewDelivery& d, std::int64_t original_seq) {
  c.exec("INSERT INTO delivery_duplicates (source, delivery_id, original_seq, received_at) VALUES ($1, $2, $3, $4)",
         source_name(d.source), d.delivery_id, original_seq, d.received_at);
}

// The dedup claim and the insert, inside the caller's transaction and after Dialect::lock_dedup_keys(): rows committed
// by a racing inserter of the same keys, and rows inserted earlier in the same transaction (a batch), are both seen.
template <class Conn>
InboxInsert insert_one(Conn& c, const NewDelivery& d, bool dedup_on_digest) {
  const char* source = source_name(d.source);
  if (dedup_on_digest) {
    if (std::optional<std::int64_t> seq =
            c.one("SELECT seq FROM deliveries WHERE source = $1 AND body_digest = $2 ORDER BY seq LIMIT 1", read_int0,
                  source, d.body_digest)) {
      record_duplicate(c, d, *seq);
      return {*seq, true};
    }
  }
  if (std::optional<std::int64_t> seq = c.one(Dialect<Conn>::kInsertDelivery, read_int0, source, d.delivery_id, d.event,
                                              d.body_digest, Bytes{d.body}, d.received_at, d.lane))
    return {*seq, false};
  std::optional<std::int64_t> seq =
      c.one("SELECT seq FROM deliveries WHERE source = $1 AND delivery_id = $2", read_int0, source, d.delivery_id);
  if (!seq) throw std::logic_error("delivery " + d.delivery_id + " conflicted but is not there");
  record_duplicate(c, d, *seq);
  return {*seq, true};
}

}  // namespace sql_store

template <class Conn>
SqlStore<Conn>::SqlStore(int max_connections, typename ConnectionPool<Conn>::Opener open)
    : pool_(max_connections, std::move(open)) {}

template <class Conn>
SqlStore<Conn>::~SqlStore() = default;

// ---- tasks ------------------------------------------------------------------------------------------------------

template <class Conn>
Result<Claim> SqlStore<Conn>::create_task_atomic(const NewTask& task, TimePoint now) {
  if (task.work_item_id.empty()) return invalid("create task: empty work item id");
  return write("create_task_atomic", [&](Conn& c) -> Result<Claim> {
    // A racing inserter of the same work item makes this INSERT wait for it to commit (PostgreSQL) or cannot run
    // beside it (SQLite's one writer), then do nothing; the SELECT then sees the winner's row.
    if (std::optional<TaskRow> row =
            c.one("INSERT INTO tasks (project, work_item_id, work_item_key, title, description, stage, visit, branch, "
                  "created_at, entered_stage_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $8, $8) "
                  "ON CONFLICT (work_item_id) DO NOTHING RETURNING " ORCH_TASK_COLUMNS,
                  read_task, task.project, task.work_item_id, task.work_item_key, task.title, task.description,
                  kStageCreated, task.branch, now))
      return Claim{std::move(*row), true};
    std::optional<TaskRow> row =
        c.one("SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE work_item_id = $1", read_task, task.work_item_id);
    if (!row) return internal("create task: work item " + task.work_item_id + " conflicted but is not there");
    return Claim{std::move(*row), false};
  });
}

template <class Conn>
Result<std::optional<TaskRow>> SqlStore<Conn>::find_task(TaskId id) {
  return run("find_task", [&](Conn& c) -> Result<std::optional<TaskRow>> {
    return c.one("SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE id = $1", read_task, id);
  });
}

template <class Conn>
Result<std::optional<TaskRow>> SqlStore<Conn>::find_task_by_work_item(const std::string& work_item_id) {
  return run("find_task_by_work_item", [&](Conn& c) -> Result<std::optional<TaskRow>> {
    return c.one("SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE work_item_id = $1", read_task, work_item_id);
  });
}

template <class Conn>
Result<std::optional<TaskRow>> SqlStore<Conn>::find_task_by_key(const std::string& work_item_key) {
  return run("find_task_by_key", [&](Conn& c) -> Result<std::optional<TaskRow>> {
    return c.one("SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE work_item_key = $1 ORDER BY id DESC LIMIT 1", read_task,
                 work_item_key);
  });
}

template <class Conn>
Result<std::optional<TaskRow>> SqlStore<Conn>::find_task_by_branch(const std::string& project,
                                                                   const std::string& branch) {
  return run("find_task_by_branch", [&](Conn& c) -> Result<std::optional<TaskRow>> {
    // A branch belongs to one task; should history ever hold two, the live (then the newest) one wins.
    return c.one("SELECT " ORCH_TASK_COLUMNS
                 " FROM tasks WHERE project = $1 AND branch = $2 "
                 "ORDER BY stage = 'done', id DESC LIMIT 1",
                 read_task, project, branch);
  });
}

template <class Conn>
Result<std::vector<TaskRow>> SqlStore<Conn>::tasks_in_stage(const std::string& project, const std::string& stage) {
  return run("tasks_in_stage", [&](Conn& c) -> Result<std::vector<TaskRow>> {
    return c.all("SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE project = $1 AND stage = $2 ORDER BY id", read_task,
                 project, stage);
  });
}

template <class Conn>
Result<std::vector<TaskRow>> SqlStore<Conn>::non_terminal_tasks(TaskId after, int limit) {
  if (Status s = sql_store::check_limit(limit, "non_terminal_tasks"); !s.ok()) return s;
  return run("non_terminal_tasks", [&](Conn& c) -> Result<std::vector<TaskRow>> {
    return c.all("SELECT " ORCH_TASK_COLUMNS " FROM tasks WHERE stage <> 'done' AND id > $1 ORDER BY id LIMIT $2",
                 read_task, after, limit);
  });
}

template <class Conn>
Result<std::vector<TaskRow>> SqlStore<Conn>::tasks_for_queue(TimePoint done_since) {
  return run("tasks_for_queue", [&](Conn& c) -> Result<std::vector<TaskRow>> {
    return c.all("SELECT " ORCH_TASK_COLUMNS
                 " FROM tasks WHERE stage <> 'done' "
                 "UNION ALL "
                 "SELECT " ORCH_TASK_COLUMNS
                 " FROM tasks WHERE stage = 'done' AND entered_stage_at >= $1 "
                 "ORDER BY id",
                 read_task, done_since);
  });
}

template <class Conn>
Result<std::vector<TaskRow>> SqlStore<Conn>::idle_tasks(TimePoint idle_before, IdleCursor after, int limit) {
  if (Status s = sql_store::check_limit(limit, "idle_tasks"); !s.ok()) return s;
  return run("idle_tasks", [&](Conn& c) -> Result<std::vector<TaskRow>> {
    return c.all(Dialect<Conn>::kIdleTasks, read_task, idle_before, after.updated_at, after.id, limit);
  });
}

// One row of the audit log, its id returned (messages point at it). A hold or a resume keeps the task in its stage:
// from = to.
template <class Conn>
std::int64_t insert_transition(Conn& c, TaskId id, const std::string& from, const std::string& to, Cause cause,
                               const std::string& detail, TimePoint at) {
  return c
      .one(
          "INSERT INTO transitions (task_id, from_stage, to_stage, cause, detail, at) "
          "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
          read_int0, id, from, to, cause_name(cause), detail, at)
      .value();
}

template <class Conn>
Result<TaskRow> SqlStore<Conn>::apply_transition(const TransitionRequest& r) {
  if (r.from.empty() || r.to.empty()) return invalid("apply_transition: empty stage name");
  return write("apply_transition", [&](Conn& c) -> Result<TaskRow> {
    // A concurrent transition of the same task makes this UPDATE wait, then re-check `stage = from` on the row it
    // committed: the loser matches nothing and gets kConflict.
    std::optional<TaskRow> row = c.one(
        "UPDATE tasks SET stage = $1, visit = visit + 1, entered_stage_at = $2, updated_at = $2, "
        "blocked = false, blocked_reason = '', rejection_reason = $3 WHERE id = $4 AND stage = $5 "
        "RETURNING " ORCH_TASK_COLUMNS,
        read_task, r.to, r.now, r.rejection_reason.value_or(""), r.task_id, r.from);
    if (!row) {
      std::optional<std::string> stage = c.one("SELECT stage FROM tasks WHERE id = $1", read_text0, r.task_id);
      if (!stage) return not_found("task " + std::to_string(r.task_id) + " not found");
      return conflict("task " + std::to_string(r.task_id) + " is in " + *stage + ", not " + r.from);
    }
    const std::int64_t transition_id = insert_transition(c, r.task_id, r.from, r.to, r.cause, r.detail, r.now);
    insert_messages(c, r.outbox, r.now, transition_id);
    return std::move(*row);
  });
}

template <class Conn>
Status SqlStore<Conn>::record_facts(TaskId id, const TaskFacts& f, TimePoint now) {
  using sql_store::name_of;
  return write("record_facts", [&](Conn& c) -> Status {
    if (c.exec(Dialect<Conn>::kRecordFacts, f.pr_number, name_of(f.pr_state, pr_state_name),
               name_of(f.review_state, review_state_name), f.head_sha, f.tracker_state, now, id) == 0)
      return not_found("task " + std::to_string(id) + " not found");
    return {};
  });
}

template <class Conn>
Status SqlStore<Conn>::set_blocked(TaskId id, bool blocked, const std::string& reason, TimePoint now) {
  return write("set_blocked", [&](Conn& c) -> Status {
    if (c.exec("UPDATE tasks SET blocked = $1, blocked_reason = $2, updated_at = $3 WHERE id = $4", blocked,
               blocked ? reason : std::string(), now, id) == 0)
      return not_found("task " + std::to_string(id) + " not found");
    return {};
  });
}

template <class Conn>
Status SqlStore<Conn>::block_task(TaskId id, const std::string& reason, TimePoint now,
                                  const std::vector<OutboxMessage>& outbox) {
  return write("block_task", [&](Conn& c) -> Status {
    if (c.exec("UPDATE tasks SET blocked = true, blocked_reason = $1, updated_at = $2 WHERE id = $3", reason, now,
               id) == 0)
      return not_found("task " + std::to_string(id) + " not found");
    insert_messages(c, outbox, now, std::nullopt);
    return {};
  });
}

template <class Conn>
Result<bool> SqlStore<Conn>::hold_task(TaskId id, const std::string& reason, TimePoint now,
                                       const std::vector<OutboxMessage>& outbox) {
  if (reason.empty()) return invalid("hold_task: a hold needs its reason");
  return write("hold_task", [&](Conn& c) -> Result<bool> {
    std::optional<std::string> stage = c.one(
        "UPDATE tasks SET budget_hold = $1, budget_hold_at = $2, updated_at = $2 WHERE id = $3 AND budget_hold = '' "
        "RETURNING stage",
        read_text0, reason, now, id);
    if (!stage) {
      if (!c.one("SELECT id FROM tasks WHERE id = $1", read_int0, id))
        return not_found("task " + std::to_string(id) + " not found");
      return false;  // held already
    }
    const std::int64_t transition_id = insert_transition(c, id, *stage, *stage, Cause::kAgent, "held: " + reason, now);
    insert_messages(c, outbox, now, transition_id);
    return true;
  });
}

template <class Conn>
Result<TaskRow> SqlStore<Conn>::resume_task(TaskId id, MicroUsd raise, const std::string& detail, TimePoint now) {
  if (raise < 0) return invalid("resume_task: a raise cannot be negative");
  return write("resume_task", [&](Conn& c) -> Result<TaskRow> {
    std::optional<TaskRow> row = c.one(
        "UPDATE tasks SET budget_hold = '', budget_hold_at = NULL, budget_raise_micros = budget_raise_micros + $1, "
        "updated_at = $2 WHERE id = $3 RETURNING " ORCH_TASK_COLUMNS,
        read_task, raise, now, id);
    if (!row) return not_found("task " + std::to_string(id) + " not found");
    insert_transition(c, id, row->stage, row->stage, Cause::kManual, detail, now);
    // The hold was no wait for a worker: the queued TTL of its jobs starts again.
    c.exec("UPDATE jobs SET created_at = $1 WHERE task_id = $2 AND status = 'queued'", now, id);
    return std::move(*row);
  });
}

template <class Conn>
Status SqlStore<Conn>::record_gate_evaluations(const std::vector<GateEvaluation>& evaluations) {
  for (const GateEvaluation& e : evaluations)
    if (e.task_id <= 0 || e.stage.empty()) return invalid("record_gate_evaluations: no task or stage");
  if (evaluations.empty()) return {};
  return write("record_gate_evaluations", [&](Conn& c) -> Status {
    for (const GateEvaluation& e : evaluations)
      c.exec(
          "INSERT INTO gate_evaluations (" ORCH_GATE_EVALUATION_COLUMNS_OF("") ") VALUES ($1, $2, $3, $4, $5, $6) "
          "ON CONFLICT (task_id) DO UPDATE SET stage = excluded.stage, visit = excluded.visit, "
          "green = excluded.green, why = excluded.why, since = excluded.since "
          "WHERE gate_evaluations.stage <> excluded.stage OR gate_evaluations.visit <> excluded.visit "
          "OR gate_evaluations.green <> excluded.green OR gate_evaluations.why <> excluded.why",
          e.task_id, e.stage, e.visit, e.green, e.why, e.since);
    return {};
  });
}

template <class Conn>
Result<std::vector<GateEvaluation>> SqlStore<Conn>::current_gate_evaluations() {
  return run("current_gate_evaluations", [&](Conn& c) -> Result<std::vector<GateEvaluation>> {
    return c.all("SELECT " ORCH_GATE_EVALUATION_COLUMNS_OF("g.") " FROM gate_evaluations g JOIN tasks t "
                 "ON t.id = g.task_id AND t.stage = g.stage AND t.visit = g.visit WHERE t.stage <> 'done' "
                 "ORDER BY g.task_id",
                 read_gate_evaluation);
  });
}

template <class Conn>
Result<std::vector<TransitionRow>> SqlStore<Conn>::transitions_for_task(TaskId id) {
  return run("transitions_for_task", [&](Conn& c) -> Result<std::vector<TransitionRow>> {
    return c.all(ORCH_TRANSITION_SELECT "WHERE tr.task_id = $1 ORDER BY tr.id", read_transition, id);
  });
}

template <class Conn>
Result<std::vector<TransitionRow>> SqlStore<Conn>::recent_transitions(int limit) {
  if (Status s = sql_store::check_limit(limit, "recent_transitions"); !s.ok()) return s;
  return run("recent_transitions", [&](Conn& c) -> Result<std::vector<TransitionRow>> {
    return c.all(ORCH_TRANSITION_SELECT "ORDER BY tr.id DESC LIMIT $1", read_transition, limit);
  });
}

template <class Conn>
Result<std::int64_t> SqlStore<Conn>::count_tasks() {
  return run("count_tasks", [&](Conn& c) -> Result<std::int64_t> {
    return c.one("SELECT count(*) FROM tasks", read_int0).value_or(0);
  });
}

template <class Conn>
Status SqlStore<Conn>::record_branch_head(const std::string& repo, const std::string& branch, const std::string& sha,
                                          TimePoint now) {
  return write("record_branch_head", [&](Conn& c) -> Status {
    c.exec(
        "INSERT INTO branch_heads (repo, branch, sha, updated_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (repo, branch) DO UPDATE SET sha = excluded.sha, updated_at = excluded.updated_at",
        repo, branch, sha, now);
    return {};
  });
}

template <class Conn>
Result<std::vector<std::string>> SqlStore<Conn>::branches_with_head(const std::string& repo, const std::string& sha) {
  return run("branches_with_head", [&](Conn& c) -> Result<std::vector<std::string>> {
    return c.all("SELECT branch FROM branch_heads WHERE repo = $1 AND sha = $2 ORDER BY updated_at DESC, branch",
                 read_text0, repo, sha);
  });
}

template <class Conn>
Result<std::optional<ProjectRow>> SqlStore<Conn>::find_project(const std::string& name) {
  return run("find_project", [&](Conn& c) -> Result<std::optional<ProjectRow>> {
    return c.one("SELECT " ORCH_PROJECT_COLUMNS " FROM projects WHERE name = $1", read_project, name);
  });
}

template <class Conn>
Status SqlStore<Conn>::save_project(const ProjectRow& row) {
  if (row.name.empty()) return invalid("save_project: empty project name");
  return write("save_project", [&](Conn& c) -> Status {
    c.exec(Dialect<Conn>::kSaveProject, row.name, row.plane_identifier, row.tracker_horizon, row.tracker_full_sweep);
    return {};
  });
}

// ---- jobs -------------------------------------------------------------------------------------------------------

template <class Conn>
Result<std::optional<JobRow>> SqlStore<Conn>::enqueue_job(const NewJob& job, TimePoint now) {
  if constexpr (Dialect<Conn>::kEnqueueReadsFirst) {
    // Most calls find their attempt already there (the start-up replay of every non-terminal task, a webhook handled
    // twice): a read answers those without the write lock, whose BEGIN IMMEDIATE / COMMIT cost 70 % of a 100 k-task
    // replay on SQLite (bench/RESULTS.md). An attempt inserted after this read is still caught by ON CONFLICT below.
    auto exists = run("enqueue_job", [&](Conn& c) -> Result<bool> {
      return c
          .one("SELECT 1 FROM jobs WHERE task_id = $1 AND visit = $2 AND attempt = $3", read_int0, job.task_id,
               job.visit, job.attempt)
          .has_value();
    });
    if (!exists.ok()) return exists.status();
    if (exists.value()) return std::optional<JobRow>();
  }
  return write("enqueue_job", [&](Conn& c) -> Result<std::optional<JobRow>> {
    std::optional<std::string> project = c.one("SELECT project FROM tasks WHERE id = $1", read_text0, job.task_id);
    if (!project) return not_found("task " + std::to_string(job.task_id) + " not found");
    return c.one(
        "INSERT INTO jobs (task_id, visit, stage, agent, status, attempt, created_at, run_after, project) "
        "VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8) "
        "ON CONFLICT (task_id, visit, attempt) DO NOTHING RETURNING " ORCH_JOB_COLUMNS,
        read_job, job.task_id, job.visit, job.stage, job.agent, job.attempt, now, job.run_after, *project);
  });
}

template <class Conn>
Result<std::optional<JobRow>> SqlStore<Conn>::claim_job(const std::string& worker, TimePoint now,
                                                        const JobLimits& limits, const ClaimScope& scope) {
  for (const auto* per : {&limits.per_project, &limits.per_agent})
    for (const auto& [name, n] : *per)
      if (n < 1)
        return invalid("claim_job: the max_running of " + name + " must be positive, got " + std::to_string(n));
  const std::string per_project = sql_store::limits_json(limits.per_project);
  const std::string per_agent = sql_store::limits_json(limits.per_agent);
  const std::int64_t max_running = std::max(0, limits.max_running);
  // Fresh jobs of any agent, of the listed ones, or (not fresh) of none; steps or not.
  const bool any_agent = scope.fresh && scope.any_agent;
  const std::string agents = scope.fresh && !scope.any_agent ? nlohmann::json(scope.agents).dump() : std::string("[]");
  return write("claim_job", [&](Conn& c) -> Result<std::optional<JobRow>> {
    Dialect<Conn>::serialize_claims(c);
    return c.one(Dialect<Conn>::kClaimJob, read_job, worker, now, max_running, per_project, per_agent, any_agent,
                 agents, scope.steps);
  });
}

template <class Conn>
Status SqlStore<Conn>::heartbeat_claim(JobId id, const std::string& worker, TimePoint now) {
  return write("heartbeat_claim", [&](Conn& c) -> Status {
    if (c.exec("UPDATE jobs SET heartbeat_at = $1 WHERE id = $2 AND status = 'running' AND worker = $3 "
               "AND cancel_requested = ''",
               now, id, worker))
      return {};
    return sql_store::job_mismatch(c, id, "running", &worker);
  });
}

template <class Conn>
Status SqlStore<Conn>::launched_claim(JobId id, const std::string& worker, TimePoint now) {
  return write("launched_claim", [&](Conn& c) -> Status {
    if (c.exec("UPDATE jobs SET heartbeat_at = $1, launched_at = COALESCE(launched_at, $1) WHERE id = $2 "
               "AND status = 'running' AND worker = $3 AND cancel_requested = ''",
               now, id, worker))
      return {};
    return sql_store::job_mismatch(c, id, "running", &worker);
  });
}

template <class Conn>
Status SqlStore<Conn>::take_over_job(JobId id, const std::string& from, const std::string& to, TimePoint now) {
  return write("take_over_job", [&](Conn& c) -> Status {
    if (c.exec("UPDATE jobs SET worker = $1, heartbeat_at = $2 WHERE id = $3 AND status = 'running' AND worker = $4",
               to, now, id, from))
      return {};
    return sql_store::job_mismatch(c, id, "running", &from);
  });
}

template <class Conn>
Status SqlStore<Conn>::heartbeat_job(JobId id, TimePoint now) {
  return write("heartbeat_job", [&](Conn& c) -> Status {
    if (c.exec("UPDATE jobs SET heartbeat_at = $1 WHERE id = $2 AND status = 'running' AND cancel_requested = ''", now,
               id))
      return {};
    return sql_store::job_mismatch(c, id, "running");
  });
}

template <class Conn>
Result<JobRow> SqlStore<Conn>::request_cancel(JobId id, const std::string& error, TimePoint now) {
  if (error.empty()) return invalid("request_cancel: say why");
  return write("request_cancel", [&](Conn& c) -> Result<JobRow> {
    std::optional<std::string> status = c.one(Dialect<Conn>::kJobStatusForUpdate, read_text0, id);
    if (!status) return not_found("job " + std::to_string(id) + " not found");
    if (*status == "queued")
      c.exec("UPDATE jobs SET status = 'failed', error = $1, cancel_requested = $1, finished_at = $2 WHERE id = $3",
             error, now, id);
    else if (*status == "running")
      c.exec("UPDATE jobs SET cancel_requested = $1 WHERE id = $2 AND cancel_requested = ''", error, id);
    else
      return conflict("job " + std::to_string(id) + " is " + *status + " already");
    return *c.one("SELECT " ORCH_JOB_COLUMNS " FROM jobs WHERE id = $1", read_job, id);
  });
}

template <class Conn>
Status SqlStore<Conn>::finish_job(JobId id, JobStatus status, const std::string& error, TimePoint now) {
  if (status != JobStatus::kSucceeded && status != JobStatus::kFailed)
    return invalid(std::string("finish_job: ") + job_status_name(status) + " is not a final status");
  return write("finish_job", [&](Conn& c) -> Status {
    if (c.exec("UPDATE jobs SET status = $1, error = $2, finished_at = $3 WHERE id = $4 AND status = 'running'",
               job_status_name(status), error, now, id))
      return {};
    return sql_store::job_mismatch(c, id, "running");
  });
}

template <class Conn>
Status SqlStore<Conn>::requeue_job(JobId id, TimePoint now) {
  return write("requeue_job", [&](Conn& c) -> Status {
    std::optional<std::string> status = c.one(Dialect<Conn>::kJobStatusForUpdate, read_text0, id);
    if (!status) return not_found("job " + std::to_string(id) + " not found");
    if (*status == "queued") return {};  // already requeued: a second recovery pass changes nothing
    if (*status != "running") return conflict("job " + std::to_string(id) + " is " + *status + ", not running");
    c.exec("UPDATE jobs SET " ORCH_JOB_UNCLAIMED ", run_after = $1 WHERE id = $2", now, id);
    return {};
  });
}

template <class Conn>
Status SqlStore<Conn>::begin_job_step(JobId id, const std::string& step, TimePoint now) {
  return write("begin_job_step", [&](Conn& c) -> Status {
    if (c.exec("UPDATE jobs SET step = $1, step_attempts = 0, step_error = '', heartbeat_at = $2 "
               "WHERE id = $3 AND status = 'running'",
               step, now, id))
      return {};
    return sql_store::job_mismatch(c, id, "running");
  });
}

template <class Conn>
Status SqlStore<Conn>::fail_job_step(JobId id, const std::string& error, std::optional<TimePoint> retry_at,
                                     TimePoint now) {
  return write("fail_job_step", [&](Conn& c) -> Status {
    const int changed =
        retry_at ? c.exec(
                       "UPDATE jobs SET status = 'queued', worker = '', heartbeat_at = NULL, run_after = $1, "
                       "step_attempts = step_attempts + 1, step_error = $2 WHERE id = $3 AND status = 'running'",
                       *retry_at, error, id)
                 : c.exec(
                       "UPDATE jobs SET status = 'failed', error = $1, finished_at = $2, "
                       "step_attempts = step_attempts + 1, step_error = $1 WHERE id = $3 AND status = 'running'",
                       error, now, id);
    return changed ? Status{} : sql_store::job_mismatch(c, id, "running");
  });
}

template <class Conn>
Result<std::optional<JobRow>> SqlStore<Conn>::find_job(JobId id) {
  return run("find_job", [&](Conn& c) -> Result<std::optional<JobRow>> {
    return c.one("SELECT " ORCH_JOB_COLUMNS " FROM jobs WHERE id = $1", read_job, id);
  });
}

template <class Conn>
Result<std::vector<JobRow>> SqlStore<Conn>::jobs_for_task(TaskId id) {
  return run("jobs_for_task", [&](Conn& c) -> Result<std::vector<JobRow>> {
    return c.all("SELECT " ORCH_JOB_COLUMNS " FROM jobs WHERE task_id = $1 ORDER BY id", read_job, id);
  });
}

template <class Conn>
Result<std::vector<JobRow>> SqlStore<Conn>::jobs_with_status(JobStatus status, int limit) {
  if (Status s = sql_store::check_limit(limit, "jobs_with_status"); !s.ok()) return s;
  return run("jobs_with_status", [&](Conn& c) -> Result<std::vector<JobRow>> {
    return c.all("SELECT " ORCH_JOB_COLUMNS " FROM jobs WHERE status = $1 ORDER BY created_at, id LIMIT $2", read_job,
                 job_status_name(status), limit);
  });
}

template <class Conn>
Result<std::vector<JobRow>> SqlStore<Conn>::current_visit_jobs() {
  return run("current_visit_jobs", [&](Conn& c) -> Result<std::vector<JobRow>> {
    return c.all("SELECT " ORCH_JOB_COLUMNS_OF("j.") " FROM jobs j JOIN tasks t ON t.id = j.task_id "
                 "AND t.visit = j.visit WHERE t.stage <> 'done' ORDER BY j.id",
                 read_job);
  });
}

template <class Conn>
Result<std::vector<JobRow>> SqlStore<Conn>::recent_failed_jobs(int limit) {
  if (Status s = sql_store::check_limit(limit, "recent_failed_jobs"); !s.ok()) return s;
  return run("recent_failed_jobs", [&](Conn& c) -> Result<std::vector<JobRow>> {
    return c.all("SELECT " ORCH_JOB_COLUMNS
                 " FROM jobs WHERE status = 'failed' "
                 "ORDER BY finished_at DESC, id DESC LIMIT $1",
                 read_job, limit);
  });
}

// CAST: PostgreSQL's SUM of a BIGINT is a NUMERIC.
template <class Conn>
std::optional<Spend> read_spend(Conn& c, TaskId task, const std::string& agent) {
  return c.one(
      "SELECT t.spend_micros, "
      "(SELECT CAST(COALESCE(SUM(j.cost_micros), 0) AS BIGINT) FROM jobs j WHERE j.task_id = t.id AND j.agent = $2), "
      "(SELECT CAST(COALESCE(SUM(s.spend_micros), 0) AS BIGINT) FROM stage_spend s WHERE s.project = t.project) "
      "FROM tasks t WHERE t.id = $1",
      [](const auto& r) {
        return Spend{r.int64(0), r.int64(1), r.int64(2)};
      },
      task, agent);
}

template <class Conn>
Result<Spend> SqlStore<Conn>::record_usage(JobId id, const AgentUsage& u) {
  if (u.cost < 0 || u.tokens_in < 0 || u.tokens_out < 0) return invalid("record_usage: usage cannot be negative");
  return write("record_usage", [&](Conn& c) -> Result<Spend> {
    std::optional<JobRow> job = c.one(
        "UPDATE jobs SET tokens_in = tokens_in + $1, tokens_out = tokens_out + $2, "
        "model = CASE WHEN $3 = '' THEN model ELSE $3 END, cost_micros = cost_micros + $4 WHERE id = $5 "
        "RETURNING " ORCH_JOB_COLUMNS,
        read_job, u.tokens_in, u.tokens_out, u.model, u.cost, id);
    if (!job) return not_found("job " + std::to_string(id) + " not found");
    if (u.cost > 0) {
      c.exec("UPDATE tasks SET spend_micros = spend_micros + $1 WHERE id = $2", u.cost, job->task_id);
      c.exec(
          "INSERT INTO stage_spend (project, stage, spend_micros) "
          "SELECT project, stage, CAST($1 AS BIGINT) FROM jobs WHERE id = $2 "
          "ON CONFLICT (project, stage) DO UPDATE SET spend_micros = stage_spend.spend_micros + $1",
          u.cost, id);
    }
    std::optional<Spend> spend = read_spend(c, job->task_id, job->agent);
    if (!spend) return not_found("task " + std::to_string(job->task_id) + " not found");
    return *spend;
  });
}

template <class Conn>
Result<Spend> SqlStore<Conn>::spend_of(TaskId task, const std::string& agent) {
  return run("spend_of", [&](Conn& c) -> Result<Spend> {
    std::optional<Spend> spend = read_spend(c, task, agent);
    if (!spend) return not_found("task " + std::to_string(task) + " not found");
    return *spend;
  });
}

template <class Conn>
Result<std::vector<StageSpend>> SqlStore<Conn>::spend_by_stage() {
  return run("spend_by_stage", [&](Conn& c) -> Result<std::vector<StageSpend>> {
    return c.all("SELECT project, stage, spend_micros FROM stage_spend ORDER BY project, stage", [](const auto& r) {
      return StageSpend{r.text(0), r.text(1), r.int64(2)};
    });
  });
}

template <class Conn>
Result<std::vector<JobRow>> SqlStore<Conn>::fail_stale_running(TimePoint heartbeat_before, int limit,
                                                               const std::string& reason, TimePoint now) {
  if (Status s = sql_store::check_limit(limit, "fail_stale_running"); !s.ok()) return s;
  return write("fail_stale_running", [&](Conn& c) -> Result<std::vector<JobRow>> {
    return sql_store::sorted_by_id(
        c.all(Dialect<Conn>::kFailStaleRunning, read_job, reason, now, heartbeat_before, limit));
  });
}

template <class Conn>
Result<std::vector<JobRow>> SqlStore<Conn>::fail_expired_queued(TimePoint created_before, int limit,
                                                                const std::string& reason, TimePoint now) {
  if (Status s = sql_store::check_limit(limit, "fail_expired_queued"); !s.ok()) return s;
  return write("fail_expired_queued", [&](Conn& c) -> Result<std::vector<JobRow>> {
    return sql_store::sorted_by_id(
        c.all(Dialect<Conn>::kFailExpiredQueued, read_job, reason, now, created_before, limit));
  });
}

template <class Conn>
Result<std::vector<JobRow>> SqlStore<Conn>::requeue_undispatched(TimePoint claimed_before, int limit, TimePoint now) {
  if (Status s = sql_store::check_limit(limit, "requeue_undispatched"); !s.ok()) return s;
  const std::string runner_claims = std::string(kRunnerClaimPrefix) + "%";
  return write("requeue_undispatched", [&](Conn& c) -> Result<std::vector<JobRow>> {
    return sql_store::sorted_by_id(
        c.all(Dialect<Conn>::kRequeueUndispatched, read_job, now, claimed_before, limit, runner_claims));
  });
}

// ---- inbox ------------------------------------------------------------------------------------------------------

template <class Conn>
Result<InboxInsert> SqlStore<Conn>::insert_delivery(const NewDelivery& delivery, bool dedup_on_digest) {
  if (Status s = sql_store::check_delivery(delivery, dedup_on_digest); !s.ok()) return s;
  return write(
      "insert_delivery",
      [&](Conn& c) -> Result<InboxInsert> {
        if constexpr (Dialect<Conn>::kLocksDedupKeys) Dialect<Conn>::lock_dedup_keys(c, {delivery}, {dedup_on_digest});
        return sql_store::insert_one(c, delivery, dedup_on_digest);
      },
      WriteGate::Priority::kAcknowledge);
}

template <class Conn>
Result<std::vector<InboxInsert>> SqlStore<Conn>::insert_deliveries(const std::vector<NewDelivery>& deliveries,
                                                                   const std::vector<bool>& dedup_on_digest) {
  if (deliveries.size() != dedup_on_digest.size())
    return invalid("insert_deliveries: " + std::to_string(deliveries.size()) + " deliveries but " +
                   std::to_string(dedup_on_digest.size()) + " dedup flags");
  for (size_t i = 0; i < deliveries.size(); ++i)
    if (Status s = sql_store::check_delivery(deliveries[i], dedup_on_digest[i]); !s.ok()) return s;
  if (deliveries.empty()) return std::vector<InboxInsert>{};
  return write(
      "insert_deliveries",
      [&](Conn& c) -> Result<std::vector<InboxInsert>> {
        if constexpr (Dialect<Conn>::kLocksDedupKeys) Dialect<Conn>::lock_dedup_keys(c, deliveries, dedup_on_digest);
        std::vector<InboxInsert> out;
        out.reserve(deliveries.size());
        for (size_t i = 0; i < deliveries.size(); ++i)
          out.push_back(sql_store::insert_one(c, deliveries[i], dedup_on_digest[i]));
        return out;
      },
      WriteGate::Priority::kAcknowledge);
}

template <class Conn>
Result<std::optional<DeliveryRow>> SqlStore<Conn>::next_pending_delivery(DeliverySeq after) {
  return run("next_pending_delivery", [&](Conn& c) -> Result<std::optional<DeliveryRow>> {
    return c.one("SELECT " ORCH_DELIVERY_COLUMNS
                 " FROM deliveries WHERE status = 'pending' AND seq > $1 "
                 "ORDER BY seq LIMIT 1",
                 read_delivery, after);
  });
}

template <class Conn>
Status SqlStore<Conn>::retry_delivery(DeliverySeq seq, const std::string& error, TimePoint run_after) {
  return write("retry_delivery", [&](Conn& c) -> Status {
    if (c.exec("UPDATE deliveries SET error = $1, run_after = $2, attempts = attempts + 1, claimed_by = '', "
               "claim_expires_at = NULL WHERE seq = $3 AND status = 'pending'",
               error, run_after, seq) == 0)
      return not_found("delivery " + std::to_string(seq) + " is not pending");
    return {};
  });
}

template <class Conn>
Status SqlStore<Conn>::finish_delivery(DeliverySeq seq, const DeliveryOutcome& outcome, TimePoint now) {
  const std::optional<TaskId> task = outcome.task_id ? std::optional<TaskId>(outcome.task_id) : std::nullopt;
  return write("finish_delivery", [&](Conn& c) -> Status {
    if (c.exec("UPDATE deliveries SET status = $1, error = $2, handled_at = $3, attempts = attempts + 1, "
               "claimed_by = '', claim_expires_at = NULL, task_id = $4, detail = $5 WHERE seq = $6",
               delivery_status_name(outcome.status), outcome.error, now, task, outcome.detail, seq) == 0)
      return not_found("delivery " + std::to_string(seq) + " not found");
    return {};
  });
}

template <class Conn>
Result<std::optional<DeliveryRow>> SqlStore<Conn>::find_delivery(const std::string& delivery_id) {
  return run("find_delivery", [&](Conn& c) -> Result<std::optional<DeliveryRow>> {
    return c.one("SELECT " ORCH_DELIVERY_COLUMNS
                 " FROM deliveries WHERE source IN ('plane', 'gitea') "
                 "AND delivery_id = $1 ORDER BY seq DESC LIMIT 1",
                 read_delivery, delivery_id);
  });
}

template <class Conn>
Status SqlStore<Conn>::requeue_delivery(DeliverySeq seq) {
  return write("requeue_delivery", [&](Conn& c) -> Status {
    std::optional<std::string> status = c.one(Dialect<Conn>::kDeliveryStatusForUpdate, read_text0, seq);
    if (!status) return not_found("delivery " + std::to_string(seq) + " not found");
    if (*status == "pending") return {};  // already waiting: replaying twice is one replay
    if (*status != "failed")
      return conflict("delivery " + std::to_string(seq) + " is " + *status + "; only a failed delivery is replayed");
    c.exec(
        "UPDATE deliveries SET status = 'pending', error = '', handled_at = NULL, claimed_by = '', "
        "claim_expires_at = NULL, run_after = received_at WHERE seq = $1",
        seq);
    return {};
  });
}

template <class Conn>
Result<InboxCounts> SqlStore<Conn>::inbox_counts() {
  return run("inbox_counts", [&](Conn& c) -> Result<InboxCounts> {
    InboxCounts counts;
    for (const auto& [status, n] : c.all("SELECT status, count(*) FROM deliveries GROUP BY status", [](const auto& r) {
           return std::pair(enum_at(r, 0, parse_delivery_status), r.int64(1));
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

template <class Conn>
Result<std::vector<DeliveryRow>> SqlStore<Conn>::failed_deliveries(int limit) {
  if (Status s = sql_store::check_limit(limit, "failed_deliveries"); !s.ok()) return s;
  return run("failed_deliveries", [&](Conn& c) -> Result<std::vector<DeliveryRow>> {
    return c.all("SELECT " ORCH_DELIVERY_COLUMNS " FROM deliveries WHERE status = 'failed' ORDER BY seq DESC LIMIT $1",
                 read_delivery, limit);
  });
}

// Two index-ordered reads of at most `limit` rows each (deliveries by seq, duplicates by id; with a task, through
// deliveries_task), merged by arrival.
template <class Conn>
Result<std::vector<LedgerEntry>> SqlStore<Conn>::delivery_ledger(int limit, TaskId task) {
  if (Status s = sql_store::check_limit(limit, "delivery_ledger"); !s.ok()) return s;
  return run("delivery_ledger", [&](Conn& c) -> Result<std::vector<LedgerEntry>> {
    constexpr auto read_stored = [](const auto& r) {
      LedgerEntry e;
      e.source = enum_at(r, 0, parse_source);
      e.delivery_id = r.text(1);
      e.event = r.text(2);
      e.status = enum_at(r, 3, parse_delivery_status);
      e.detail = r.text(4);
      e.attempts = int32_at(r, 5);
      e.task_id = r.null(6) ? 0 : r.int64(6);
      e.work_item_key = r.null(7) ? std::string() : r.text(7);
      e.received_at = time_at(r, 8);
      e.handled_at = opt_time_at(r, 9);
      return std::pair<std::int64_t, LedgerEntry>{r.int64(10), std::move(e)};
    };
    constexpr auto read_duplicate = [](const auto& r) {
      LedgerEntry e;
      e.source = enum_at(r, 0, parse_source);
      e.delivery_id = r.text(1);
      e.event = r.text(2);
      e.status = enum_at(r, 3, parse_delivery_status);
      e.duplicate = true;
      e.duplicate_of = r.text(4);
      e.task_id = r.null(5) ? 0 : r.int64(5);
      e.work_item_key = r.null(6) ? std::string() : r.text(6);
      e.received_at = time_at(r, 7);
      return std::pair<std::int64_t, LedgerEntry>{r.int64(8), std::move(e)};
    };
    // detail: why it was ignored or failed (error), else what it changed.
#define ORCH_LEDGER_STORED                                                                                      \
  "SELECT d.source, d.delivery_id, d.event, d.status, CASE WHEN d.error <> '' THEN d.error ELSE d.detail END, " \
  "d.attempts, d.task_id, t.work_item_key, d.received_at, d.handled_at, d.seq "                                 \
  "FROM deliveries d LEFT JOIN tasks t ON t.id = d.task_id "
#define ORCH_LEDGER_DUPLICATE                                                                                     \
  "SELECT x.source, x.delivery_id, o.event, o.status, o.delivery_id, o.task_id, t.work_item_key, x.received_at, " \
  "x.id FROM delivery_duplicates x JOIN deliveries o ON o.seq = x.original_seq "                                  \
  "LEFT JOIN tasks t ON t.id = o.task_id "
    std::vector<std::pair<std::int64_t, LedgerEntry>> stored, duplicates;
    if (task) {
      stored = c.all(ORCH_LEDGER_STORED "WHERE d.task_id = $1 ORDER BY d.seq DESC LIMIT $2", read_stored, task, limit);
      duplicates =
          c.all(ORCH_LEDGER_DUPLICATE "WHERE o.task_id = $1 ORDER BY x.id DESC LIMIT $2", read_duplicate, task, limit);
    } else {
      stored = c.all(ORCH_LEDGER_STORED "ORDER BY d.seq DESC LIMIT $1", read_stored, limit);
      duplicates = c.all(ORCH_LEDGER_DUPLICATE "ORDER BY x.id DESC LIMIT $1", read_duplicate, limit);
    }
#undef ORCH_LEDGER_STORED
#undef ORCH_LEDGER_DUPLICATE
    // Newest arrival first; a duplicate after (above) the original it repeats when both arrived at one instant.
    std::vector<LedgerEntry> out;
    out.reserve(std::min<std::size_t>(stored.size() + duplicates.size(), static_cast<std::size_t>(limit)));
    auto s = stored.begin(), d = duplicates.begin();
    while (out.size() < static_cast<std::size_t>(limit) && (s != stored.end() || d != duplicates.end())) {
      const bool take_duplicate =
          s == stored.end() || (d != duplicates.end() && d->second.received_at >= s->second.received_at);
      out.push_back(std::move(take_duplicate ? (d++)->second : (s++)->second));
    }
    return out;
  });
}

// ---- outbox -----------------------------------------------------------------------------------------------------

// Inserts the messages inside the caller's transaction; returns how many were new. The placeholder in a key becomes
// `transition_id`, or without one the latest transition of the message's task.
template <class Conn>
int SqlStore<Conn>::insert_messages(Conn& c, const std::vector<OutboxMessage>& messages, TimePoint now,
                                    std::optional<std::int64_t> transition_id) {
  int added = 0;
  for (const OutboxMessage& m : messages) {
    std::int64_t tid = 0;
    if (m.dedup_key.find(kTransitionPlaceholder) != std::string::npos) {
      tid = transition_id
                ? *transition_id
                : c.one("SELECT COALESCE(max(id), 0) FROM transitions WHERE task_id = $1", read_int0, m.task_id)
                      .value_or(0);
    }
    if (c.one("INSERT INTO notifications (dedup_key, text, created_at, next_attempt_at, channel, lane) "
              "VALUES ($1, $2, $3, $3, $4, $5) ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
              read_int0, resolve_outbox_key(m.dedup_key, tid), m.text, now, m.channel, m.lane))
      ++added;
  }
  return added;
}

template <class Conn>
Result<bool> SqlStore<Conn>::enqueue_notification(const std::string& dedup_key, const std::string& text,
                                                  TimePoint now) {
  if (dedup_key.empty()) return invalid("enqueue_notification: empty dedup key");
  return write("enqueue_notification", [&](Conn& c) -> Result<bool> {
    return insert_messages(c, {OutboxMessage{std::string(kChannelTelegram), dedup_key, text}}, now, std::nullopt) == 1;
  });
}

template <class Conn>
Result<int> SqlStore<Conn>::enqueue_messages(const std::vector<OutboxMessage>& messages, TimePoint now) {
  for (const OutboxMessage& m : messages)
    if (m.dedup_key.empty() || m.channel.empty()) return invalid("enqueue_messages: empty dedup key or channel");
  return write("enqueue_messages",
               [&](Conn& c) -> Result<int> { return insert_messages(c, messages, now, std::nullopt); });
}

template <class Conn>
Result<std::optional<NotificationRow>> SqlStore<Conn>::claim_next_message(const std::string& channel, TimePoint now,
                                                                          Millis lease) {
  if (lease <= Millis::zero()) return invalid("claim_next_message: the lease must be positive");
  return write("claim_next_message", [&](Conn& c) -> Result<std::optional<NotificationRow>> {
    return c.one(Dialect<Conn>::kClaimNextMessage, read_notification, now + lease, channel, now);
  });
}

template <class Conn>
Status SqlStore<Conn>::retry_failed_message(NotificationId id, TimePoint now) {
  return write("retry_failed_message", [&](Conn& c) -> Status {
    if (c.exec("UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = $1 "
               "WHERE id = $2 AND status = 'failed'",
               now, id))
      return {};
    return sql_store::notification_mismatch(c, id, "failed");
  });
}

template <class Conn>
Result<std::vector<NotificationRow>> SqlStore<Conn>::messages(const std::string& channel, NotificationStatus status,
                                                              int limit) {
  if (Status s = sql_store::check_limit(limit, "messages"); !s.ok()) return s;
  return run("messages", [&](Conn& c) -> Result<std::vector<NotificationRow>> {
    return c.all("SELECT " ORCH_NOTIFICATION_COLUMNS
                 " FROM notifications WHERE channel = $1 AND status = $2 "
                 "ORDER BY id DESC LIMIT $3",
                 read_notification, channel, std::string(notification_status_name(status)), limit);
  });
}

template <class Conn>
Result<std::vector<NotificationRow>> SqlStore<Conn>::due_notifications(TimePoint now, int limit) {
  if (Status s = sql_store::check_limit(limit, "due_notifications"); !s.ok()) return s;
  return run("due_notifications", [&](Conn& c) -> Result<std::vector<NotificationRow>> {
    return c.all("SELECT " ORCH_NOTIFICATION_COLUMNS
                 " FROM notifications WHERE status = 'pending' "
                 "AND next_attempt_at <= $1 AND channel = 'telegram' ORDER BY next_attempt_at, id LIMIT $2",
                 read_notification, now, limit);
  });
}

template <class Conn>
Result<std::vector<NotificationRow>> SqlStore<Conn>::claim_due_notifications(TimePoint now, Millis lease, int limit) {
  if (Status s = sql_store::check_limit(limit, "claim_due_notifications"); !s.ok()) return s;
  if (lease <= Millis::zero()) return invalid("claim_due_notifications: the lease must be positive");
  return write("claim_due_notifications", [&](Conn& c) -> Result<std::vector<NotificationRow>> {
    // oldest first
    return sql_store::sorted_by_id(
        c.all(Dialect<Conn>::kClaimDueNotifications, read_notification, now + lease, now, limit));
  });
}

template <class Conn>
Status SqlStore<Conn>::mark_notification_sent(NotificationId id, TimePoint now) {
  return write("mark_notification_sent", [&](Conn& c) -> Status {
    if (c.exec("UPDATE notifications SET status = 'sent', sent_at = $1, attempts = attempts + 1, error = '' "
               "WHERE id = $2 AND status = 'pending'",
               now, id))
      return {};
    return sql_store::notification_mismatch(c, id);
  });
}

template <class Conn>
Status SqlStore<Conn>::mark_notification_retry(NotificationId id, const std::string& error, TimePoint next_attempt) {
  return write("mark_notification_retry", [&](Conn& c) -> Status {
    if (c.exec("UPDATE notifications SET attempts = attempts + 1, error = $1, next_attempt_at = $2 "
               "WHERE id = $3 AND status = 'pending'",
               error, next_attempt, id))
      return {};
    return sql_store::notification_mismatch(c, id);
  });
}

template <class Conn>
Status SqlStore<Conn>::mark_notification_failed(NotificationId id, const std::string& error) {
  return write("mark_notification_failed", [&](Conn& c) -> Status {
    if (c.exec("UPDATE notifications SET status = 'failed', attempts = attempts + 1, error = $1 "
               "WHERE id = $2 AND status = 'pending'",
               error, id))
      return {};
    return sql_store::notification_mismatch(c, id);
  });
}

template <class Conn>
Result<std::vector<NotificationRow>> SqlStore<Conn>::all_notifications() {
  return run("all_notifications", [&](Conn& c) -> Result<std::vector<NotificationRow>> {
    return c.all("SELECT " ORCH_NOTIFICATION_COLUMNS " FROM notifications ORDER BY id", read_notification);
  });
}

template <class Conn>
Result<OutboxCounts> SqlStore<Conn>::outbox_counts() {
  return channel_counts(std::string(kChannelTelegram));
}

template <class Conn>
Result<OutboxCounts> SqlStore<Conn>::channel_counts(const std::string& channel) {
  return run("channel_counts", [&](Conn& c) -> Result<OutboxCounts> {
    OutboxCounts counts;
    for (const auto& [status, n] : c.all(
             "SELECT status, count(*) FROM notifications WHERE channel = $1 GROUP BY status",
             [](const auto& r) { return std::pair(enum_at(r, 0, parse_notification_status), r.int64(1)); }, channel)) {
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

template <class Conn>
Status SqlStore<Conn>::register_runner(const RunnerRow& runner) {
  std::string labels;
  for (const std::string& l : runner.labels) labels += (labels.empty() ? "" : ",") + l;
  return write("register_runner", [&](Conn& c) -> Status {
    if (c.one("SELECT 1 FROM runners WHERE name = $1", read_int0, runner.name))
      return conflict("runner " + runner.name + " is registered already");
    c.exec("INSERT INTO runners (name, labels, token_sha256, registered_at) VALUES ($1, $2, $3, $4)", runner.name,
           labels, runner.token_sha256, runner.registered_at);
    return {};
  });
}

template <class Conn>
Result<std::optional<RunnerRow>> SqlStore<Conn>::find_runner_by_token(const std::string& token_sha256) {
  return run("find_runner_by_token", [&](Conn& c) -> Result<std::optional<RunnerRow>> {
    return c.one("SELECT " ORCH_RUNNER_COLUMNS " FROM runners WHERE token_sha256 = $1", read_runner, token_sha256);
  });
}

template <class Conn>
Result<std::vector<RunnerRow>> SqlStore<Conn>::runners() {
  return run("runners", [&](Conn& c) -> Result<std::vector<RunnerRow>> {
    return c.all("SELECT " ORCH_RUNNER_COLUMNS " FROM runners ORDER BY name", read_runner);
  });
}

template <class Conn>
Status SqlStore<Conn>::revoke_runner(const std::string& name) {
  return write("revoke_runner", [&](Conn& c) -> Status {
    if (!c.one("SELECT 1 FROM runners WHERE name = $1", read_int0, name)) return not_found("no runner named " + name);
    c.exec("UPDATE runners SET revoked = 1 WHERE name = $1", name);
    return {};
  });
}

template <class Conn>
Status SqlStore<Conn>::runner_seen(const std::string& name, TimePoint now) {
  return write("runner_seen", [&](Conn& c) -> Status {
    if (c.exec("UPDATE runners SET last_seen_at = $1 WHERE name = $2", now, name)) return {};
    return not_found("no runner named " + name);
  });
}

template <class Conn>
Result<std::optional<std::string>> SqlStore<Conn>::get_setting(const std::string& key) {
  return run("get_setting", [&](Conn& c) -> Result<std::optional<std::string>> {
    return c.one("SELECT value FROM settings WHERE key = $1", read_text0, key);
  });
}

template <class Conn>
Status SqlStore<Conn>::set_setting(const std::string& key, const std::string& value) {
  return write("set_setting", [&](Conn& c) -> Status {
    c.exec("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
           key, value);
    return {};
  });
}

}  // namespace orch
