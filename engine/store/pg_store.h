// engine/store/pg_store.h: PgStore, the PostgreSQL implementation of the Store seam, which several replicas share.
// Behaves as SqliteStore does, method for method; every public method is one transaction on a pooled libpq
// connection and returns errors as values: a lost connection, a server shutting down, a serialization failure, a
// deadlock, a lock or statement timeout are kUnavailable (retry later), anything else kInternal; no exception
// escapes. Thread-safe: any thread may call any method concurrently, and any number of processes may share the DB.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/store.h"

namespace orch {

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

class PgStore final : public Store {
 public:
  // The schema version this binary writes (the orch_schema table); migrations only ever move forward.
  static constexpr int kSchemaVersion = 6;

  // Connects to `url` (a libpq URI or key=value string) and migrates to kSchemaVersion in one transaction under an
  // advisory lock, so that replicas opening at once migrate once. kInvalid when the database's schema is newer
  // than this binary, kUnavailable when the server cannot be reached.
  static Result<std::unique_ptr<PgStore>> open(const std::string& url, PgStoreOptions options = {});
  // The database's schema version without migrating or creating anything; kNotFound if orch never created it.
  static Result<int> schema_version(const std::string& url);
  // `url` without its password, for logs and error messages: postgresql://user@host:port/dbname.
  static std::string redact(const std::string& url);

  ~PgStore() override;
  PgStore(const PgStore&) = delete;
  PgStore& operator=(const PgStore&) = delete;

  const std::string& redacted_url() const { return redacted_url_; }
  // The schema version found at open(), before migrating: 0 for a fresh database (what `orch migrate` reports).
  int version_at_open() const { return version_at_open_; }
  // EXPLAIN of the idle-task scan: proves the scan is a range over the partial index tasks_idle.
  Result<std::string> idle_tasks_plan();
  // EXPLAIN ANALYZE of claim_delivery as `claimer` at `now`, with its buffer counts, run in a transaction that is
  // rolled back (nothing is claimed): proves that a claim reads the lane heads, not the backlog behind them.
  Result<std::string> claim_delivery_plan(const std::string& claimer, TimePoint now, Millis lease);

  struct Conn;  // opaque: one libpq connection and its prepared statements (defined in pg_store.cpp)

  // TaskStore
  Result<Claim> create_task_atomic(const NewTask& task, TimePoint now) override;
  Result<std::optional<TaskRow>> find_task(TaskId id) override;
  Result<std::optional<TaskRow>> find_task_by_work_item(const std::string& work_item_id) override;
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
  Result<std::vector<TransitionRow>> transitions_for_task(TaskId id) override;
  Result<std::vector<TransitionRow>> recent_transitions(int limit) override;
  Result<std::int64_t> count_tasks() override;
  Status record_branch_head(const std::string& repo, const std::string& branch, const std::string& sha,
                            TimePoint now) override;
  Result<std::vector<std::string>> branches_with_head(const std::string& repo, const std::string& sha) override;
  Result<std::optional<ProjectRow>> find_project(const std::string& name) override;
  Status save_project(const ProjectRow& row) override;

  // JobStore
  Result<std::optional<JobRow>> enqueue_job(const NewJob& job, TimePoint now) override;
  Result<std::optional<JobRow>> claim_job(const std::string& worker, TimePoint now) override;
  Status heartbeat_job(JobId id, TimePoint now) override;
  Status finish_job(JobId id, JobStatus status, const std::string& error, TimePoint now) override;
  Status requeue_job(JobId id, TimePoint now) override;
  Status begin_job_step(JobId id, const std::string& step, TimePoint now) override;
  Status fail_job_step(JobId id, const std::string& error, std::optional<TimePoint> retry_at, TimePoint now) override;
  Result<std::optional<JobRow>> find_job(JobId id) override;
  Result<std::vector<JobRow>> jobs_for_task(TaskId id) override;
  Result<std::vector<JobRow>> jobs_with_status(JobStatus status, int limit) override;
  Result<std::vector<JobRow>> recent_failed_jobs(int limit) override;
  Result<std::vector<JobRow>> fail_stale_running(TimePoint heartbeat_before, int limit, const std::string& reason,
                                                 TimePoint now) override;
  Result<std::vector<JobRow>> fail_expired_queued(TimePoint created_before, int limit, const std::string& reason,
                                                  TimePoint now) override;

  // InboxStore
  Result<InboxInsert> insert_delivery(const NewDelivery& delivery, bool dedup_on_digest) override;
  Result<std::vector<InboxInsert>> insert_deliveries(const std::vector<NewDelivery>& deliveries,
                                                     const std::vector<bool>& dedup_on_digest) override;
  Result<std::optional<DeliveryRow>> next_pending_delivery(DeliverySeq after) override;
  Result<std::optional<DeliveryRow>> claim_delivery(const std::string& claimer, TimePoint now, Millis lease,
                                                    std::stop_token stop = {}) override;
  Status retry_delivery(DeliverySeq seq, const std::string& error, TimePoint run_after) override;
  Status finish_delivery(DeliverySeq seq, DeliveryStatus status, const std::string& error, TimePoint now) override;
  Result<std::optional<DeliveryRow>> find_delivery(const std::string& delivery_id) override;
  Status requeue_delivery(DeliverySeq seq) override;
  Result<InboxCounts> inbox_counts() override;
  Result<std::vector<DeliveryRow>> failed_deliveries(int limit) override;

  // OutboxStore
  Result<bool> enqueue_notification(const std::string& dedup_key, const std::string& text, TimePoint now) override;
  Result<std::vector<NotificationRow>> due_notifications(TimePoint now, int limit) override;
  Result<std::vector<NotificationRow>> claim_due_notifications(TimePoint now, Millis lease, int limit) override;
  Status mark_notification_sent(NotificationId id, TimePoint now) override;
  Status mark_notification_retry(NotificationId id, const std::string& error, TimePoint next_attempt) override;
  Status mark_notification_failed(NotificationId id, const std::string& error) override;
  Result<std::vector<NotificationRow>> all_notifications() override;
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

 private:
  class Lease;  // RAII: a pooled connection, handed back (or, when broken, closed) on destruction

  PgStore(std::string url, PgStoreOptions options);
  std::unique_ptr<Conn> open_connection() const;  // throws when the server cannot be reached
  Lease acquire();                                // throws when a new connection cannot be opened
  void release(std::unique_ptr<Conn> conn);
  // Runs fn(Conn&) on a pooled connection, turning every exception into a Status (`what` names the operation).
  template <class Fn>
  auto run(const char* what, Fn&& fn);
  // run() inside BEGIN ... COMMIT; commits when fn's result is ok, rolls back otherwise.
  template <class Fn>
  auto write(const char* what, Fn&& fn);
  static int insert_messages(Conn& c, const std::vector<OutboxMessage>& messages, TimePoint now,
                             std::optional<std::int64_t> transition_id);

  const std::string url_;           // may hold a password: never logged, never in a message
  const std::string redacted_url_;  // what messages name instead
  const PgStoreOptions options_;
  int version_at_open_ = 0;

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<Conn>> idle_;  // guarded by pool_mu_
  int open_connections_ = 0;                 // guarded by pool_mu_: idle plus leased
};

}  // namespace orch
