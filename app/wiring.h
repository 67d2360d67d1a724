// app/wiring.h: App builds every component of `orch serve` and the CLI, owns them all, and outlives them all.
// Construction order is dependency order; stop() tears the threads down in reverse (HTTP first, so nothing new
// arrives; then the reconciler, the workers, the inbox processor and the outbox). No component below app/
// creates a thread of its own: every thread is started here, in start(), and joined here, in stop().
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <spdlog/logger.h>

#include "app/admin_routes.h"
#include "app/http_server.h"
#include "app/metrics.h"
#include "app/queue_page.h"
#include "app/readiness.h"
#include "app/runner_dispatch.h"
#include "app/runner_routes.h"
#include "app/settings.h"
#include "engine/attempt_policy.h"
#include "engine/clock.h"
#include "engine/event_bus.h"
#include "engine/gates.h"
#include "engine/job_scheduler.h"
#include "engine/layout.h"
#include "engine/periodic.h"
#include "engine/pipeline.h"
#include "engine/store/pg_leader.h"
#include "engine/store/pg_store.h"
#include "engine/store/sqlite_store.h"
#include "engine/stage_engine.h"
#include "integrations/gitea_client.h"
#include "integrations/http_client.h"
#include "integrations/plane_client.h"
#include "integrations/process_runner.h"
#include "integrations/git.h"
#include "integrations/telegram_notifier.h"
#include "integrations/job_runner.h"
#include "integrations/worker_pool.h"
#include "integrations/worktree_lifecycle.h"
#include "integrations/write_back_sender.h"
#include "engine/write_back.h"
#include "reconciler/gate_side.h"
#include "reconciler/reconciler.h"
#include "reconciler/sweeper.h"
#include "reconciler/tracker_side.h"
#include "webhooks/handlers/dispatcher.h"
#include "webhooks/handlers/handlers.h"
#include "webhooks/inbox_processor.h"
#include "webhooks/webhook_routes.h"

namespace orch {

// Forwards the elector's "this replica now leads / no longer leads" to whoever listens (the app pokes the
// reconciler, so that a new leader starts a pass at once). Set before the elector starts, cleared after it stops.
class LeaderListener {
 public:
  void listen(std::function<void(bool)> fn) {
    std::lock_guard lock(mu_);
    fn_ = std::move(fn);
  }
  void notify(bool leading) {
    std::lock_guard lock(mu_);
    if (fn_) fn_(leading);
  }

 private:
  std::mutex mu_;
  std::function<void(bool)> fn_;  // guarded by mu_
};

// The configured store, opened and migrated.
struct OpenedStore {
  std::unique_ptr<Store> store;
  std::string description;  // for logs and `orch migrate`: the SQLite file, or the PostgreSQL target without password
  int version_at_open = 0;  // the schema version found (0: a new database)
  int schema_version = 0;   // the version it is at now
  bool shared = false;      // several replicas may share it (PostgreSQL)
  // The SQLite store's checkpoint thread, for /metrics (empty on PostgreSQL); valid while `store` lives.
  std::function<SqliteCheckpointer::Counts()> checkpoints;
};

// Who runs the reconciler and the sweeper among the store's users: SoleReplica on SQLite, the advisory-lock elector
// on PostgreSQL (whose changes `leader_changed` is told of, on the elector's thread). Built beside the reconciler.
std::unique_ptr<Leadership> make_leadership(const Settings& settings, bool shared,
                                            const std::shared_ptr<LeaderListener>& leader_changed);

// Opens the configured store: the embedded SQLite file under the data directory (created if needed), or the
// PostgreSQL database of ORCH_DATABASE_URL / [store] url.
Result<OpenedStore> open_store(const Settings& settings);

// Every Plane state name write-back moves items to (a stage's plane_state, [plane] done_state) exists in each
// project: kInvalid naming the config line when one does not, kUnavailable when Plane cannot be asked.
Status check_plane_state_names(const Config& config, PlaneClient& plane);

class App {
 public:
  // Builds every component and opens (migrating) the database. Nothing runs until start().
  static Result<std::unique_ptr<App>> open(Settings settings, spdlog::logger& log);
  ~App();

  // Replays non-terminal tasks through the bus, starts the threads, then the HTTP server. Fails (and leaves
  // nothing running) when the listen address is taken.
  Status start();
  void stop();  // idempotent; prompt: every thread waits on a condition variable
  int port() const { return http_.port(); }

  Store& store() { return *store_; }
  StageEngine& engine() { return engine_; }
  const Settings& settings() const { return settings_; }
  // The same code paths the CLI and the admin endpoints use.
  InboxProcessor& inbox() { return inbox_; }
  ReconcilePass& reconcile_pass() { return pass_; }
  Reconciler& reconciler() { return reconciler_; }
  Sweeper& sweeper() { return sweeper_; }
  JobRunner& job_runner() { return job_runner_; }
  AttemptPolicy& attempts() { return attempts_; }
  WorkerPool& pool() { return pool_; }
  const Pipeline& pipeline() const { return pipeline_; }
  Metrics& metrics() { return metrics_; }
  const Leadership& leadership() const { return *leadership_; }

 private:
  App(Settings settings, spdlog::logger& log, OpenedStore store);
  void register_routes();
  void stop_threads();
  Status check_plane_states();  // start-up: the state names orch moves items to exist in Plane

  Settings settings_;
  spdlog::logger& log_;
  SystemClock clock_;
  RealSleeper sleeper_;
  std::unique_ptr<Store> store_;
  std::shared_ptr<LeaderListener> leader_changed_;  // the elector's news, for the reconciler
  std::unique_ptr<Leadership> leadership_;          // make_leadership
  Metrics metrics_;                                 // early: the components below report to it (Telemetry)
  Pipeline pipeline_;
  DataLayout layout_;
  // Plane counts 60 requests a minute per API key, and this process holds one key: one pacer for all its Plane calls.
  RatePacer plane_pacer_;
  HttpClient plane_http_;        // reads: pauses while kPlaneReadReserve requests are left, for the writes
  HttpClient plane_write_http_;  // write-back: may spend the whole allowance (ADR 0013)
  HttpClient gitea_http_;
  HttpClient gitea_review_http_;  // the reviewer's token (ORCH_GITEA_REVIEW_TOKEN, else the main one)
  HttpClient telegram_http_;
  PlaneClient plane_;
  PlaneClient plane_writer_;
  GiteaClient gitea_;
  GiteaClient gitea_reviewer_;
  WriteBackPlan write_back_plan_;
  ProcessRunner processes_;
  GateEvaluator gates_;
  EventBus bus_;
  WriteBack write_back_;
  WriteBackReporter reporter_;
  StageEngine engine_;
  GitWorkspaces git_;
  WorktreeLifecycle lifecycle_;
  AttemptPolicy attempts_;  // the worker's and the sweeper's rule for a failed attempt
  JobRunner job_runner_;
  WorkerPool pool_;
  RunnerDispatch runner_dispatch_;  // wakes the runners' long polls, then pool_
  JobScheduler scheduler_;          // wakes runner_dispatch_ (and so pool_) after each enqueue
  Handlers handlers_;
  Dispatcher dispatcher_;
  InboxProcessor inbox_;
  WebhookRoutes webhook_routes_;
  GateSide gate_side_;
  TrackerSide tracker_side_;
  Sweeper sweeper_;
  ReconcilePass pass_;
  Reconciler reconciler_;
  std::unique_ptr<NotificationSender> sender_;
  OutboxDrainer outbox_;
  Periodic outbox_thread_;
  PlaneWriteSender plane_sender_;
  GiteaWriteSender gitea_sender_;
  OutboxDrainer plane_outbox_;
  OutboxDrainer gitea_outbox_;
  Periodic write_back_thread_;  // drains the Plane and Gitea channels
  QueuePage queue_page_;
  RunnerRoutes runner_routes_;
  HttpServer http_;
  bool started_ = false;
};

}  // namespace orch
