// app/metrics.h: /metrics in the Prometheus text format. Counters are fed as things happen (webhook requests through
// the HTTP server's routing hooks, transitions through an EventBus subscriber); the rest is read from the Store at
// scrape time (jobs by status, inbox and outbox depth, the reconciler's snapshot), so no layer below app/ knows
// about metrics. Thread-safe: the hooks run on any server thread, the subscriber on any publishing thread.
#pragma once

#include <httplib.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "engine/event_bus.h"
#include "engine/secret.h"
#include "engine/leadership.h"
#include "engine/store.h"
#include "engine/store/sqlite_checkpointer.h"
#include "engine/telemetry.h"

namespace orch {

class Metrics final : public Telemetry {
 public:
  Metrics(Store& store, const Leadership& leadership);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Counts transitions by from / to / cause (start-up replays are not transitions and are not counted).
  void subscribe_to(EventBus& bus);
  // Times every request by route, and counts webhook deliveries by source and outcome (stored / duplicate /
  // refused). Installs the server's pre-routing handler and logger: call once, before the server starts.
  void instrument(httplib::Server& server);
  // GET /metrics: open when `token` is empty (ORCH_METRICS_TOKEN unset), bearer / basic otherwise.
  void register_routes(httplib::Server& server, const Secret& token);

  // The SQLite store's checkpoint thread, read at each scrape (the orch_store_checkpoint* series exist only then).
  void watch_checkpoints(std::function<SqliteCheckpointer::Counts()> read);

  // A runner not seen within `heartbeat_stale` counts as offline in orch_runners ([jobs] heartbeat_stale).
  void set_runner_stale(std::chrono::seconds heartbeat_stale) { runner_stale_ = heartbeat_stale; }

  // The exposition text, after refreshing what is read from the store.
  std::string scrape();

  void observe_request(const std::string& path, int status, double seconds);

  // Telemetry: fed by the HTTP clients, the job runner, the inbox processor and the reconcile pass.
  void api_call(std::string_view client, ApiOutcome outcome, double seconds) override;
  void agent_run(std::string_view agent, std::string_view stage, AgentOutcome outcome, double seconds) override;
  void delivery_handled(Source source, std::string_view event, DeliveryStatus outcome, double seconds) override;
  void unblocked(std::string_view side, std::string_view stage) override;
  void reconcile_pass(std::string_view outcome, double seconds) override;
  void inbox_commit(std::size_t deliveries, double seconds, double queued_seconds) override;
  void delivery_refused(Source source, std::string_view reason) override;

 private:
  void collect_from_store();
  void collect_checkpoints();  // with scrape_mu_ held

  Store& store_;
  const Leadership& leadership_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& deliveries_;
  prometheus::Family<prometheus::Counter>& refused_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Family<prometheus::Counter>& transitions_;
  prometheus::Family<prometheus::Counter>& api_calls_;
  prometheus::Family<prometheus::Histogram>& api_call_seconds_;
  prometheus::Family<prometheus::Histogram>& agent_run_seconds_;
  prometheus::Family<prometheus::Histogram>& handling_seconds_;
  prometheus::Family<prometheus::Counter>& unblocks_by_stage_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& inbox_;
  prometheus::Family<prometheus::Gauge>& notifications_;
  prometheus::Family<prometheus::Gauge>& outbox_messages_;  // by channel and status
  prometheus::Family<prometheus::Gauge>& spend_;            // US dollars agents reported, by project and stage
  prometheus::Family<prometheus::Gauge>& runners_;          // registered runners by state (online, offline)
  prometheus::Family<prometheus::Gauge>& runner_jobs_;      // running jobs by runner
  std::chrono::seconds runner_stale_{150};
  prometheus::Gauge& outbox_depth_;
  prometheus::Gauge& reconcile_enabled_;
  prometheus::Gauge& reconcile_plane_enabled_;
  prometheus::Gauge& reconcile_last_pass_;
  prometheus::Family<prometheus::Counter>& reconcile_passes_;
  prometheus::Histogram& reconcile_pass_seconds_;
  prometheus::Histogram& inbox_commit_seconds_;
  prometheus::Histogram& inbox_commit_deliveries_;
  prometheus::Histogram& inbox_commit_queued_seconds_;
  prometheus::Family<prometheus::Counter>& checkpoints_;
  prometheus::Family<prometheus::Counter>& checkpoint_hold_seconds_;
  prometheus::Family<prometheus::Gauge>& checkpoint_hold_max_seconds_;
  prometheus::Counter& reconcile_unblocks_;
  prometheus::Gauge& store_up_;
  prometheus::Gauge& leading_;                          // labelled with this replica's id
  prometheus::Family<prometheus::Gauge>& leader_info_;  // {leader="<id>"} 1, for the one replica last seen leading

  std::mutex scrape_mu_;       // one collect at a time
  double unblocked_seen_ = 0;  // guarded by scrape_mu_
  std::string leader_seen_;    // guarded by scrape_mu_: the leader_info_ series present now
  std::function<SqliteCheckpointer::Counts()> read_checkpoints_;  // guarded by scrape_mu_
  SqliteCheckpointer::Counts checkpoints_seen_;                   // guarded by scrape_mu_: counted so far
};

}  // namespace orch
