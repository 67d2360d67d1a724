// engine/store.h: the Store seam. Every method is one whole operation in one transaction, so that a PostgreSQL
// implementation can follow without touching callers. Role interfaces let a class take only what it uses.
// Implementations are thread-safe: any thread may call any method concurrently.
#pragma once

#include <concepts>
#include <optional>
#include <stop_token>
#include <string>
#include <tuple>
#include <vector>

#include "engine/model.h"
#include "engine/status.h"

namespace orch {

struct TransitionRequest {
  TaskId task_id = 0;
  std::string from;  // compare-and-set: refused with kConflict if the task is no longer here
  std::string to;
  Cause cause = Cause::kManual;
  std::string detail;
  std::optional<std::string> rejection_reason;  // set on a rollback edge; cleared ("") on a forward move
  TimePoint now{};
  // Stored with the transition, in its transaction (their dedup keys may name it: kTransitionPlaceholder).
  std::vector<OutboxMessage> outbox = {};
};

// Resume point of the idle-task scan: (updated_at, id) of the last row returned.
struct IdleCursor {
  TimePoint updated_at{};
  TaskId id = 0;
};

struct ProjectRow {
  std::string name;
  std::string plane_identifier;                 // e.g. SHOP, read once from Plane
  std::optional<TimePoint> tracker_horizon;     // tracker side: newest updated_at seen by the last pass
  std::optional<TimePoint> tracker_full_sweep;  // when the last full sweep finished
};

struct TaskStore {
  virtual ~TaskStore() = default;
  // Atomic create-claim on the unique work item id: exactly one racing caller (thread or process) gets created=true.
  // The new task starts in `created`, visit 1.
  virtual Result<Claim> create_task_atomic(const NewTask& task, TimePoint now) = 0;
  virtual Result<std::optional<TaskRow>> find_task(TaskId id) = 0;
  virtual Result<std::optional<TaskRow>> find_task_by_work_item(const std::string& work_item_id) = 0;
  // The newest task of a work item key (SHOP-42), for people's commands (`orch explain`); not indexed.
  virtual Result<std::optional<TaskRow>> find_task_by_key(const std::string& work_item_key) = 0;
  virtual Result<std::optional<TaskRow>> find_task_by_branch(const std::string& project, const std::string& branch) = 0;
  virtual Result<std::vector<TaskRow>> tasks_in_stage(const std::string& project, const std::string& stage) = 0;
  // Non-terminal tasks (stage != done) by id, for the start-up replay; page with `after`.
  virtual Result<std::vector<TaskRow>> non_terminal_tasks(TaskId after, int limit) = 0;
  // Non-terminal tasks and those that reached done at or after `done_since`, for /queue.
  virtual Result<std::vector<TaskRow>> tasks_for_queue(TimePoint done_since) = 0;
  // Non-terminal tasks with no queued or running job and updated_at < idle_before, ordered by (updated_at, id),
  // strictly after `after`. A range scan over a partial index: cost grows with candidates, not with history.
  virtual Result<std::vector<TaskRow>> idle_tasks(TimePoint idle_before, IdleCursor after, int limit) = 0;
  // Stage change + transition row in one transaction; bumps visit, entered_stage_at, updated_at; clears blocked.
  virtual Result<TaskRow> apply_transition(const TransitionRequest& request) = 0;
  virtual Status record_facts(TaskId id, const TaskFacts& facts, TimePoint now) = 0;
  virtual Status set_blocked(TaskId id, bool blocked, const std::string& reason, TimePoint now) = 0;
  // set_blocked(id, true, reason, now) and the messages that say so, in one transaction (the placeholder in their
  // keys names the task's latest transition).
  virtual Status block_task(TaskId id, const std::string& reason, TimePoint now,
                            const std::vector<OutboxMessage>& outbox) = 0;
  // The budget's hold (docs/adr/0021): sets budget_hold = reason, with a transitions row (from = to = its stage,
  // cause agent, detail "held: <reason>") and the messages, in one transaction. false when it was held already
  // (nothing written). The claim skips the jobs of a held task; the queued TTL does not expire them.
  virtual Result<bool> hold_task(TaskId id, const std::string& reason, TimePoint now,
                                 const std::vector<OutboxMessage>& outbox) = 0;
  // A person lifts the hold: budget_hold cleared, budget_raise + raise, a transitions row (cause manual, `detail`),
  // and the queued TTL of its queued jobs counted from now. Whether it should is the caller's (app/admin_actions.h).
  virtual Result<TaskRow> resume_task(TaskId id, MicroUsd raise, const std::string& detail, TimePoint now) = 0;
  virtual Result<std::vector<TransitionRow>> recent_transitions(int limit) = 0;    // newest first
  virtual Result<std::vector<TransitionRow>> transitions_for_task(TaskId id) = 0;  // oldest first
  virtual Result<std::int64_t> count_tasks() = 0;
};

// Branch heads learned from push / pull-request events: the sha -> branch map for Gitea status events (whose
// payload names no branch). The webhook handlers and the job runner's push write it; the handlers read it.
struct BranchHeadStore {
  virtual ~BranchHeadStore() = default;
  virtual Status record_branch_head(const std::string& repo, const std::string& branch, const std::string& sha,
                                    TimePoint now) = 0;
  virtual Result<std::vector<std::string>> branches_with_head(const std::string& repo, const std::string& sha) = 0;
};

// The tracker side's bookmark per configured project: its horizon and its last full sweep.
struct ProjectStore {
  virtual ~ProjectStore() = default;
  virtual Result<std::optional<ProjectRow>> find_project(const std::string& name) = 0;
  virtual Status save_project(const ProjectRow& row) = 0;
};

struct JobStore {
  virtual ~JobStore() = default;
  // Idempotent: (task, visit, attempt) is unique, so enqueueing an existing one returns nullopt and changes nothing.
  virtual Result<std::optional<JobRow>> enqueue_job(const NewJob& job, TimePoint now) = 0;
  // Atomically moves a claimable queued job (run_after <= now) to running for `worker`, within `limits` (counted over
  // every running job in the store, whoever claimed it): a job whose project or agent is at its limit, or any job
  // when the store is at the overall limit, stays queued. Fair between projects: the due job of the project with the
  // fewest running jobs goes first, the oldest (run_after, id) among equals, so one project's backlog cannot starve
  // another's (docs/adr/0018). One running job per task: a job whose task has another one running (a re-run's job
  // while the earlier visit's agent finishes) stays queued until it ends (docs/adr/0019).
  // Only jobs within `scope` are taken (model.h ClaimScope: the server's pool or a runner).
  virtual Result<std::optional<JobRow>> claim_job(const std::string& worker, TimePoint now, const JobLimits& limits,
                                                  const ClaimScope& scope) = 0;
  Result<std::optional<JobRow>> claim_job(const std::string& worker, TimePoint now, const JobLimits& limits) {
    return claim_job(worker, now, limits, ClaimScope{});
  }
  Result<std::optional<JobRow>> claim_job(const std::string& worker, TimePoint now) {
    return claim_job(worker, now, JobLimits{}, ClaimScope{});
  }
  virtual Status heartbeat_job(JobId id, TimePoint now) = 0;
  // Fencing for runners (docs/adr/0023): a job's `worker` is its claim. The heartbeat of a job still running for
  // `worker`; kConflict when it is not (finished, failed by the sweeper, claimed again by someone else).
  virtual Status heartbeat_claim(JobId id, const std::string& worker, TimePoint now) = 0;
  // The same heartbeat, saying that the claim's agent process has started: sets launched_at once.
  virtual Status launched_claim(JobId id, const std::string& worker, TimePoint now) = 0;
  // Atomically hands a job running for `from` to `to` (and counts as a heartbeat): whoever reports a runner's result
  // takes the job over first, so that a late or repeated report of the same claim finds it gone (kConflict).
  virtual Status take_over_job(JobId id, const std::string& from, const std::string& to, TimePoint now) = 0;
  virtual Result<std::optional<JobRow>> find_job(JobId id) = 0;
  // A person cancels a job: a queued one fails at once with `error`; a running one records the intent (its heartbeats
  // fail with kConflict from then on, so its worker or runner stops the agent). The row after the change; kConflict
  // when it is finished already, kNotFound when there is none.
  virtual Result<JobRow> request_cancel(JobId id, const std::string& error, TimePoint now) = 0;
  // Only a running job finishes; kConflict if the sweeper (or anyone) already finished it.
  virtual Status finish_job(JobId id, JobStatus status, const std::string& error, TimePoint now) = 0;
  virtual Status requeue_job(JobId id, TimePoint now) = 0;  // running -> queued (start-up recovery)
  virtual Result<std::vector<JobRow>> jobs_for_task(TaskId id) = 0;
  virtual Result<std::vector<JobRow>> jobs_with_status(JobStatus status, int limit) = 0;  // oldest first
  // The jobs of the current visit of every task not done, by id: what /queue.json's `waiting` reads in one query.
  virtual Result<std::vector<JobRow>> current_visit_jobs() = 0;
  virtual Result<std::vector<JobRow>> recent_failed_jobs(int limit) = 0;  // newest first
  // Spend (docs/adr/0021). One run's usage added to its job, its task and its (project, stage) in one transaction;
  // returns the spends after it, as spend_of does.
  virtual Result<Spend> record_usage(JobId id, const AgentUsage& usage) = 0;
  // The task's spend, `agent`'s runs on it, and its project's. kNotFound: no task.
  virtual Result<Spend> spend_of(TaskId task, const std::string& agent) = 0;
  virtual Result<std::vector<StageSpend>> spend_by_stage() = 0;  // by project, then stage
  // Follow-up steps (ADR 0010). Moves a running job whose agent exited 0 to follow-up step `step` with no failed
  // tries and no error, and counts as a heartbeat. kConflict / kNotFound like finish_job.
  virtual Status begin_job_step(JobId id, const std::string& step, TimePoint now) = 0;
  // A failed try of a running job's current step: step_attempts + 1, step_error = error. With retry_at the job goes
  // back to queued, claimable at retry_at, keeping its attempt and its step (its agent does not run again); without,
  // it is failed with `error`. kConflict / kNotFound like finish_job.
  virtual Status fail_job_step(JobId id, const std::string& error, std::optional<TimePoint> retry_at,
                               TimePoint now) = 0;
  // Sweeper rules, each capped at `limit` rows so a large backlog never holds a long transaction. The queued-TTL
  // rule skips jobs waiting to retry a follow-up step: their agent ran, and the step budget bounds their wait.
  virtual Result<std::vector<JobRow>> fail_stale_running(TimePoint heartbeat_before, int limit,
                                                         const std::string& reason, TimePoint now) = 0;
  virtual Result<std::vector<JobRow>> fail_expired_queued(TimePoint created_before, int limit,
                                                          const std::string& reason, TimePoint now) = 0;
  // The dispatch rule (docs/adr/0023): running fresh jobs of a runner claim (kRunnerClaimPrefix) made before
  // `claimed_before` whose agent never started (no launched_at) and that nobody cancelled go back to the queue,
  // claimable at once, with the same attempt: the runner, not the agent, failed. Their runners' heartbeats then fail
  // with kConflict. The rows after the change, by id.
  virtual Result<std::vector<JobRow>> requeue_undispatched(TimePoint claimed_before, int limit, TimePoint now) = 0;
};

struct InboxStore {
  virtual ~InboxStore() = default;
  // Dedup claim + insert in one transaction: a delivery whose (source, delivery_id) was seen, or, when
  // dedup_on_digest, whose (source, body_digest) was seen, is a duplicate: only its arrival is written, to the
  // ledger's duplicates (the delivery id it came with and the original's seq), never a second delivery.
  virtual Result<InboxInsert> insert_delivery(const NewDelivery& delivery, bool dedup_on_digest) = 0;
  // Group commit: several deliveries in one transaction; results in the same order.
  virtual Result<std::vector<InboxInsert>> insert_deliveries(const std::vector<NewDelivery>& deliveries,
                                                             const std::vector<bool>& dedup_on_digest) = 0;
  virtual Result<std::optional<DeliveryRow>> next_pending_delivery(DeliverySeq after) = 0;  // arrival order
  // Claims the next delivery to handle, for `claimer` until now + lease: the oldest pending delivery whose run_after
  // has come, that heads its lane (no earlier delivery of the same lane is still pending) and that nobody else holds
  // (no claim, a claim that lapsed because its holder died, or a claim of this same claimer: a restarted replica
  // takes back its own). Never hands one delivery to two claimers at once, across threads, processes and replicas;
  // a claimed delivery stays pending, so the rest of its lane waits behind it. nullopt when nothing is claimable.
  // A stop request while the claim runs (shutdown) may end it early with kUnavailable, having claimed nothing.
  virtual Result<std::optional<DeliveryRow>> claim_delivery(const std::string& claimer, TimePoint now, Millis lease,
                                                            std::stop_token stop = {}) = 0;
  // A transient failure of a claimed delivery: it stays pending at the head of its lane, unclaimed, claimable again
  // at run_after; attempts + 1 and the error are recorded.
  virtual Status retry_delivery(DeliverySeq seq, const std::string& error, TimePoint run_after) = 0;
  // The final outcome (handled, ignored, failed), the task it was about and what it concluded; attempts + 1; ends
  // any claim.
  virtual Status finish_delivery(DeliverySeq seq, const DeliveryOutcome& outcome, TimePoint now) = 0;
  virtual Result<std::optional<DeliveryRow>> find_delivery(const std::string& delivery_id) = 0;
  virtual Status requeue_delivery(DeliverySeq seq) = 0;  // back to pending, for replay
  virtual Result<InboxCounts> inbox_counts() = 0;
  virtual Result<std::vector<DeliveryRow>> failed_deliveries(int limit) = 0;  // newest first
  // The last `limit` ledger entries (stored deliveries and refused duplicates), newest arrival first; with a
  // `task` other than 0, only those about that task. Each side is read by an index seek, never a scan of the whole
  // inbox.
  virtual Result<std::vector<LedgerEntry>> delivery_ledger(int limit, TaskId task) = 0;
};

// The outbox: messages stored with what causes them and sent later by a drainer per channel (ADR 0013). The
// *_notification(s) calls without a channel are the Telegram channel's; the mark_* calls take any row.
struct OutboxStore {
  virtual ~OutboxStore() = default;
  // A Telegram notification. Returns false (and writes nothing) when a row with this key already exists.
  virtual Result<bool> enqueue_notification(const std::string& dedup_key, const std::string& text, TimePoint now) = 0;
  // Any channel; one transaction. Returns how many were new (a key already stored is skipped).
  virtual Result<int> enqueue_messages(const std::vector<OutboxMessage>& messages, TimePoint now) = 0;
  // Claims the oldest due message of `channel` that heads its lane (no earlier message of the lane still pending,
  // sent or not), for one drainer until now + lease, like claim_due_notifications. nullopt: nothing claimable.
  virtual Result<std::optional<NotificationRow>> claim_next_message(const std::string& channel, TimePoint now,
                                                                    Millis lease) = 0;
  // A failed message back to pending, due now, with a fresh attempt budget (the operator's retry).
  // kConflict unless it is failed.
  virtual Status retry_failed_message(NotificationId id, TimePoint now) = 0;
  virtual Result<std::vector<NotificationRow>> messages(const std::string& channel, NotificationStatus status,
                                                        int limit) = 0;  // newest first
  virtual Result<OutboxCounts> channel_counts(const std::string& channel) = 0;
  // Claims up to `limit` due notifications (pending, next_attempt_at <= now), oldest first, for one drainer: their
  // next_attempt_at moves to now + lease in the same statement, so no other drainer (thread, process or replica)
  // takes them meanwhile. mark_notification_* ends the claim; a drainer that dies lets them come due again.
  virtual Result<std::vector<NotificationRow>> claim_due_notifications(TimePoint now, Millis lease, int limit) = 0;
  virtual Status mark_notification_sent(NotificationId id, TimePoint now) = 0;
  virtual Status mark_notification_retry(NotificationId id, const std::string& error, TimePoint next_attempt) = 0;
  virtual Status mark_notification_failed(NotificationId id, const std::string& error) = 0;
  virtual Result<OutboxCounts> outbox_counts() = 0;  // Telegram's
};

// The gate side's conclusions (GateEvaluation), one row per task, for the waiting reasons of /queue.json.
struct GateEvaluationStore {
  virtual ~GateEvaluationStore() = default;
  // Upserts by task, in one transaction: a row whose stage, visit, outcome and reason are unchanged is left as it is
  // (its `since` stays); any change replaces it whole.
  virtual Status record_gate_evaluations(const std::vector<GateEvaluation>& evaluations) = 0;
  // The evaluations of the current visit of every task not done (older visits' rows are not returned).
  virtual Result<std::vector<GateEvaluation>> current_gate_evaluations() = 0;
};

struct SettingsStore {
  virtual ~SettingsStore() = default;
  virtual Result<std::optional<std::string>> get_setting(const std::string& key) = 0;
  virtual Status set_setting(const std::string& key, const std::string& value) = 0;
};

// Runners (`orch runner`, docs/adr/0023): registered by name, known by the SHA-256 of their token.
struct RunnerStore {
  virtual ~RunnerStore() = default;
  // kConflict when the name is taken (a revoked runner's too: names are never reused).
  virtual Status register_runner(const RunnerRow& runner) = 0;
  // The runner holding this token, revoked or not (the caller refuses a revoked one).
  virtual Result<std::optional<RunnerRow>> find_runner_by_token(const std::string& token_sha256) = 0;
  virtual Result<std::vector<RunnerRow>> runners() = 0;       // by name
  virtual Status revoke_runner(const std::string& name) = 0;  // kNotFound when there is none
  virtual Status runner_seen(const std::string& name, TimePoint now) = 0;
};

// Reads that only tests make (what an assertion wants to see whole); no component takes this role.
struct StoreProbe {
  virtual ~StoreProbe() = default;
  virtual Result<std::vector<NotificationRow>> due_notifications(TimePoint now, int limit) = 0;  // Telegram's
  virtual Result<std::vector<NotificationRow>> all_notifications() = 0;                          // oldest first
};

// A component that needs several roles takes them once: StoreRoles<TaskStore, JobStore> binds to any one object that
// plays them all (the Store of the wiring, a test's SqliteStore) and hands each role out by type. The component still
// keeps each role as its own typed member, so its header shows which parts of the store it reads and writes.
template <class... Roles>
class StoreRoles {
 public:
  template <class S>
  requires(std::derived_from<S, Roles>&&...) StoreRoles(S& store)
      : roles_(static_cast<Roles&>(store)...) {}  // implicit: call sites pass the store as it is
  template <class Role>
  Role& get() const {
    return std::get<Role&>(roles_);
  }

 private:
  std::tuple<Roles&...> roles_;
};

struct Store : TaskStore,
               BranchHeadStore,
               ProjectStore,
               JobStore,
               InboxStore,
               OutboxStore,
               GateEvaluationStore,
               SettingsStore,
               RunnerStore,
               StoreProbe {};

}  // namespace orch
