// engine/store/sqlite_store.h: SqliteStore, the embedded SQLite implementation of the Store seam (one file, WAL mode).
// Every public method is one transaction on a pooled connection and returns errors as values: SQLITE_BUSY past the
// busy timeout is kUnavailable, anything else kInternal; no exception escapes. Thread-safe: any thread may call any
// method concurrently, and several processes (the server and the CLI) may open the same file at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/store.h"
#include "engine/write_gate.h"

namespace orch {

struct SqliteStoreOptions {
  // One connection per concurrent caller, opened on demand; callers beyond this wait for a free one.
  int max_connections = 16;
  // How long a write waits for another process's write lock before giving up with kUnavailable.
  std::chrono::milliseconds busy_timeout{5000};
  // This process's writers: inbox inserts (what webhook senders wait for) go first; see engine/write_gate.h.
  WriteGate::Timing writers{};
  // SQLite's auto-checkpoint threshold (PRAGMA wal_autocheckpoint): the commit that leaves the log this many pages
  // long copies it into the database file, in place. 32 000 pages (128 MiB of WAL at most): the inbox's random-key
  // indexes rewrite the same pages many times between two checkpoints, and each is copied once per checkpoint; fewer,
  // larger checkpoints measured faster than checkpoints on a thread of their own (docs/adr/0008).
  int checkpoint_pages = 32000;
};

class SqliteStore final : public Store {
 public:
  // The schema version this binary writes (PRAGMA user_version); migrations only ever move forward.
  static constexpr int kSchemaVersion = 6;

  // Opens (creating the file if needed, not its directory) and migrates to kSchemaVersion in one transaction.
  // kInvalid when the file's schema is newer than this binary.
  static Result<std::unique_ptr<SqliteStore>> open(const std::string& path, SqliteStoreOptions options = {});
  // The file's schema version without migrating or creating anything (for `orch status`); kNotFound if no file.
  static Result<int> schema_version(const std::string& path);

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  const std::string& path() const { return path_; }
  // The schema version found at open(), before migrating: 0 for a fresh file (what `orch migrate` reports).
  int version_at_open() const { return version_at_open_; }
  // EXPLAIN QUERY PLAN of the idle-task scan, one detail per line: proves the scan is an index range.
  Result<std::string> idle_tasks_plan();
  // EXPLAIN QUERY PLAN of claim_delivery: proves that a claim seeks the lane heads instead of scanning the backlog.
  Result<std::string> claim_delivery_plan();

  struct Conn;  // opaque: one sqlite3 connection and its prepared-statement cache (defined in sqlite_store.cpp)

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
  class Lease;  // RAII: a pooled connection, handed back on destruction

  SqliteStore(std::string path, SqliteStoreOptions options);
  std::unique_ptr<Conn> open_connection() const;  // throws SQLite::Exception
  Lease acquire();                                // throws when a new connection cannot be opened
  void release(std::unique_ptr<Conn> conn);
  // Runs fn(Conn&) on a pooled connection, turning every exception into a Status (`what` names the operation).
  template <class Fn>
  auto run(const char* what, Fn&& fn);
  // run() inside BEGIN IMMEDIATE; commits when fn's result is ok, rolls back otherwise.
  template <class Fn>
  auto write(const char* what, Fn&& fn, WriteGate::Priority priority = WriteGate::Priority::kNormal);
  static int insert_messages(Conn& c, const std::vector<OutboxMessage>& messages, TimePoint now,
                             std::optional<std::int64_t> transition_id);

  const std::string path_;
  const SqliteStoreOptions options_;
  int version_at_open_ = 0;

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<Conn>> idle_;  // guarded by pool_mu_
  int open_connections_ = 0;                 // guarded by pool_mu_: idle plus leased

  // Serialises this process's writers before they reach SQLite's file lock: they queue here instead of polling the
  // lock through the busy handler's sleeps, acknowledging writes first. Other processes still meet us at the file lock.
  WriteGate write_gate_;
};

}  // namespace orch
