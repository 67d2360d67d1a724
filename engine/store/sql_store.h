// engine/store/sql_store.h: SqlStore<Conn>, the Store methods written once for both SQL dialects. Each method is one
// whole operation on a pooled connection (engine/store/pool.h): its checks, its statements (numbered $1, $2, ...;
// engine/store/sqlite_connection.h renumbers them for SQLite) and its result, read by engine/store/rows.h. What a
// dialect does differently, SQL text or a step, it states in its Dialect<Conn> (engine/store/sql_store_impl.h), in
// its store file (sqlite_store.cpp, pg_store.cpp), with the methods only it implements (claim_delivery).
// Thread-safe: any thread may call any method concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/store.h"
#include "engine/store/pool.h"
#include "engine/write_gate.h"

namespace orch {

template <class Conn>
class SqlStore : public Store {
 public:
  ~SqlStore() override;
  SqlStore(const SqlStore&) = delete;
  SqlStore& operator=(const SqlStore&) = delete;

  // TaskStore
  Result<Claim> create_task_atomic(const NewTask& task, TimePoint now) override;
  Result<std::optional<TaskRow>> find_task(TaskId id) override;
  Result<std::optional<TaskRow>> find_task_by_work_item(const std::string& work_item_id) override;
  Result<std::optional<TaskRow>> find_task_by_key(const std::string& work_item_key) override;
  Result<std::optional<TaskRow>> find_task_by_branch(const std::string& project, const std::string& branch) override;
  Result<std::vector<TaskRow>> tasks_in_stage(const std::string& project, const std::string& stage) override;
  Result<std::vector<TaskRow>> non_terminal_tasks(TaskId after, int limit) override;
  Result<std::vector<TaskRow>> tasks_for_queue(TimePoint done_since) override;
  Result<std::vector<TaskRow>> idle_tasks(TimePoint idle_before, IdleCursor after, int limit) override;
  Result<TaskRow> apply_transition(const TransitionRequest& request) override;
  Status record_facts(TaskId id, const TaskFacts& facts, TimePoint now) override;
  Status set_blocked(TaskId id, bool blocked, const std::string& reason, TimePoint now) override;
  Status block_task(TaskId id, const std::string& reason, TimePoint now,
                    const std::vector<OutboxMessage>& outbox) override;
  Result<bool> hold_task(TaskId id, const std::string& reason, TimePoint now,
                         const std::vector<OutboxMessage>& outbox) override;
  Result<TaskRow> resume_task(TaskId id, MicroUsd raise, const std::string& detail, TimePoint now) override;
  Result<std::vector<TransitionRow>> recent_transitions(int limit) override;
  Result<std::int64_t> count_tasks() override;
  Status record_branch_head(const std::string& repo, const std::string& branch, const std::string& sha,
                            TimePoint now) override;
  Result<std::vector<std::string>> branches_with_head(const std::string& repo, const std::string& sha) override;
  Result<std::optional<ProjectRow>> find_project(const std::string& name) override;
  Status save_project(const ProjectRow& row) override;

  // GateEvaluationStore
  Status record_gate_evaluations(const std::vector<GateEvaluation>& evaluations) override;
  Result<std::vector<GateEvaluation>> current_gate_evaluations() override;

  // JobStore
  Result<std::optional<JobRow>> enqueue_job(const NewJob& job, TimePoint now) override;
  using JobStore::claim_job;
  Result<std::optional<JobRow>> claim_job(const std::string& worker, TimePoint now, const JobLimits& limits,
                                          const ClaimScope& scope) override;
  Status heartbeat_job(JobId id, TimePoint now) override;
  Status heartbeat_claim(JobId id, const std::string& worker, TimePoint now) override;
  Status launched_claim(JobId id, const std::string& worker, TimePoint now) override;
  Status take_over_job(JobId id, const std::string& from, const std::string& to, TimePoint now) override;
  Result<std::optional<JobRow>> find_job(JobId id) override;
  Result<JobRow> request_cancel(JobId id, const std::string& error, TimePoint now) override;
  Status finish_job(JobId id, JobStatus status, const std::string& error, TimePoint now) override;
  Status requeue_job(JobId id, TimePoint now) override;
  Status begin_job_step(JobId id, const std::string& step, TimePoint now) override;
  Status fail_job_step(JobId id, const std::string& error, std::optional<TimePoint> retry_at, TimePoint now) override;
  Result<std::vector<JobRow>> jobs_for_task(TaskId id) override;
  Result<std::vector<JobRow>> jobs_with_status(JobStatus status, int limit) override;
  Result<std::vector<JobRow>> current_visit_jobs() override;
  Result<std::vector<JobRow>> recent_failed_jobs(int limit) override;
  Result<Spend> record_usage(JobId id, const AgentUsage& usage) override;
  Result<Spend> spend_of(TaskId task, const std::string& agent) override;
  Result<std::vector<StageSpend>> spend_by_stage() override;
  Result<std::vector<JobRow>> fail_stale_running(TimePoint heartbeat_before, int limit, const std::string& reason,
                                                 TimePoint now) override;
  Result<std::vector<JobRow>> fail_expired_queued(TimePoint created_before, int limit, const std::string& reason,
                                                  TimePoint now) override;
  Result<std::vector<JobRow>> requeue_undispatched(TimePoint claimed_before, int limit, TimePoint now) override;

  // InboxStore (claim_delivery is each dialect's own)
  Result<InboxInsert> insert_delivery(const NewDelivery& delivery, bool dedup_on_digest) override;
  Result<std::vector<InboxInsert>> insert_deliveries(const std::vector<NewDelivery>& deliveries,
                                                     const std::vector<bool>& dedup_on_digest) override;
  Result<std::optional<DeliveryRow>> next_pending_delivery(DeliverySeq after) override;
  Status retry_delivery(DeliverySeq seq, const std::string& error, TimePoint run_after) override;
  Status finish_delivery(DeliverySeq seq, const DeliveryOutcome& outcome, TimePoint now) override;
  Result<std::optional<DeliveryRow>> find_delivery(const std::string& delivery_id) override;
  Status requeue_delivery(DeliverySeq seq) override;
  Result<InboxCounts> inbox_counts() override;
  Result<std::vector<DeliveryRow>> failed_deliveries(int limit) override;
  Result<std::vector<LedgerEntry>> delivery_ledger(int limit, TaskId task) override;

  // OutboxStore
  Result<bool> enqueue_notification(const std::string& dedup_key, const std::string& text, TimePoint now) override;
  Result<std::vector<NotificationRow>> claim_due_notifications(TimePoint now, Millis lease, int limit) override;
  Status mark_notification_sent(NotificationId id, TimePoint now) override;
  Status mark_notification_retry(NotificationId id, const std::string& error, TimePoint next_attempt) override;
  Status mark_notification_failed(NotificationId id, const std::string& error) override;
  Result<OutboxCounts> outbox_counts() override;
  Result<int> enqueue_messages(const std::vector<OutboxMessage>& messages, TimePoint now) override;
  Result<std::optional<NotificationRow>> claim_next_message(const std::string& channel, TimePoint now,
                                                            Millis lease) override;
  Status retry_failed_message(NotificationId id, TimePoint now) override;
  Result<std::vector<NotificationRow>> messages(const std::string& channel, NotificationStatus status,
                                                int limit) override;
  Result<OutboxCounts> channel_counts(const std::string& channel) override;

  // SettingsStore
  Result<std::optional<std::string>> get_setting(const std::string& key) override;
  Status set_setting(const std::string& key, const std::string& value) override;

  // RunnerStore
  Status register_runner(const RunnerRow& runner) override;
  Result<std::optional<RunnerRow>> find_runner_by_token(const std::string& token_sha256) override;
  Result<std::vector<RunnerRow>> runners() override;
  Status revoke_runner(const std::string& name) override;
  Status runner_seen(const std::string& name, TimePoint now) override;

  // StoreProbe
  Result<std::vector<TransitionRow>> transitions_for_task(TaskId id) override;
  Result<std::vector<NotificationRow>> due_notifications(TimePoint now, int limit) override;
  Result<std::vector<NotificationRow>> all_notifications() override;

 protected:
  SqlStore(int max_connections, typename ConnectionPool<Conn>::Opener open);

  // Runs fn(Conn&) on a pooled connection; every exception becomes a Status (`what` names the operation).
  template <class Fn>
  auto run(const char* what, Fn&& fn) {
    return pool_.run(what, fn);
  }
  // run() inside one write transaction; commits when fn's result is ok, rolls back otherwise.
  template <class Fn>
  auto write(const char* what, Fn&& fn, WriteGate::Priority priority = WriteGate::Priority::kNormal) {
    return pool_.write(what, fn, priority);
  }

  ConnectionPool<Conn> pool_;

 private:
  static int insert_messages(Conn& c, const std::vector<OutboxMessage>& messages, TimePoint now,
                             std::optional<std::int64_t> transition_id);
};

}  // namespace orch
