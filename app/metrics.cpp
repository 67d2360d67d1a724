// DESIGN: counters that must not miss an event are fed by hooks (requests, transitions); everything that is state
// (queues, switches, the last reconcile pass) is read from the store when Prometheus scrapes, so a second process
// (the CLI) changing it is reflected too. Passes are counted and timed as they end (Telemetry), on the replica that
// ran them; orch_reconcile_unblocks_total follows the snapshot's running total, which every replica and the CLI
// share (orch_reconcile_unblocks_by_stage_total counts this replica's unblocks as they happen).
#include "app/metrics.h"

#include <chrono>

#include <nlohmann/json.hpp>
#include <prometheus/text_serializer.h>

#include "app/auth.h"
#include "app/runner_registry.h"
#include "engine/budget.h"
#include "engine/clock.h"
#include "engine/setting_keys.h"
#include "webhooks/refusals.h"

namespace orch {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

thread_local std::chrono::steady_clock::time_point request_started;

// A bounded label: the route, never the raw path (ids in admin paths would grow the series without bound).
std::string route_of(const std::string& path) {
  if (path == "/webhooks/plane" || path == "/webhooks/gitea" || path == "/queue" || path == "/queue.json" ||
      path == "/metrics" || path == "/healthz" || path == "/readyz")
    return path;
  if (path.rfind("/admin/reconcile/", 0) == 0) return "/admin/reconcile";
  if (path.rfind("/admin/deliveries/", 0) == 0) return "/admin/deliveries/replay";
  if (path.rfind("/admin/tasks/", 0) == 0) return "/admin/tasks/retry";
  if (path.rfind("/admin/outbox/", 0) == 0) return "/admin/outbox/retry";
  return "other";
}

}  // namespace

Metrics::Metrics(Store& store, const Leadership& leadership)
    : store_(store),
      leadership_(leadership),
      registry_(std::make_shared<prometheus::Registry>()),
      deliveries_(BuildCounter()
                      .Name("orch_webhook_deliveries_received_total")
                      .Help("Webhook requests by source and outcome (stored, duplicate, refused)")
                      .Register(*registry_)),
      refused_(BuildCounter()
                   .Name("orch_webhook_refused_total")
                   .Help("Webhook deliveries refused (nothing stored) by source and reason (not_configured, "
                         "too_large, unsupported_media_type, missing_signature, bad_signature, malformed, "
                         "missing_header, unreadable, store_unavailable)")
                   .Register(*registry_)),
      request_seconds_(BuildHistogram()
                           .Name("orch_http_request_duration_seconds")
                           .Help("Time to answer an HTTP request, by route (webhook routes include the commit)")
                           .Register(*registry_)),
      transitions_(BuildCounter()
                       .Name("orch_transitions_total")
                       .Help("Stage transitions by from, to and cause")
                       .Register(*registry_)),
      api_calls_(BuildCounter()
                     .Name("orch_api_calls_total")
                     .Help("Outbound HTTP attempts to Plane, Gitea and Telegram by client and outcome (ok, "
                           "client_error, rate_limited, server_error, network_error); each retry counts")
                     .Register(*registry_)),
      api_call_seconds_(BuildHistogram()
                            .Name("orch_api_call_duration_seconds")
                            .Help("Duration of one outbound HTTP attempt, by client")
                            .Register(*registry_)),
      agent_run_seconds_(BuildHistogram()
                             .Name("orch_agent_run_duration_seconds")
                             .Help("Duration of one agent process run, by agent, stage and outcome (succeeded, "
                                   "failed, error, stopped)")
                             .Register(*registry_)),
      handling_seconds_(BuildHistogram()
                            .Name("orch_delivery_handling_duration_seconds")
                            .Help("Time the inbox processor took to handle one stored delivery, by source, event "
                                  "and outcome (handled, ignored, failed)")
                            .Register(*registry_)),
      unblocks_by_stage_(BuildCounter()
                             .Name("orch_reconcile_unblocks_by_stage_total")
                             .Help("Tasks this server's reconciler unblocked, by side (gate, tracker) and the stage "
                                   "they left")
                             .Register(*registry_)),
      jobs_(BuildGauge().Name("orch_jobs").Help("Jobs by status (queued, running)").Register(*registry_)),
      inbox_(BuildGauge().Name("orch_inbox_deliveries").Help("Stored deliveries by status").Register(*registry_)),
      notifications_(
          BuildGauge().Name("orch_notifications").Help("Outbox notifications by status").Register(*registry_)),
      outbox_messages_(BuildGauge()
                           .Name("orch_outbox_messages")
                           .Help("Outbox messages by channel (telegram, plane, gitea) and status (pending, sent, "
                                 "failed)")
                           .Register(*registry_)),
      spend_(BuildGauge()
                 .Name("orch_spend_usd")
                 .Help("US dollars the agents' runs reported (usage.json), by project and stage")
                 .Register(*registry_)),
      runners_(BuildGauge()
                   .Name("orch_runners")
                   .Help("Registered runners by state: online (seen within heartbeat_stale, not revoked) or offline")
                   .Register(*registry_)),
      runner_jobs_(BuildGauge().Name("orch_runner_jobs_running").Help("Running jobs by runner").Register(*registry_)),
      outbox_depth_(BuildGauge()
                        .Name("orch_notification_outbox_depth")
                        .Help("Notifications waiting to be sent")
                        .Register(*registry_)
                        .Add({})),
      reconcile_enabled_(BuildGauge()
                             .Name("orch_reconcile_enabled")
                             .Help("1 when the reconciler kill switch is on")
                             .Register(*registry_)
                             .Add({})),
      reconcile_plane_enabled_(BuildGauge()
                                   .Name("orch_reconcile_plane_enabled")
                                   .Help("1 when the reconciler's tracker side is on")
                                   .Register(*registry_)
                                   .Add({})),
      reconcile_last_pass_(BuildGauge()
                               .Name("orch_reconcile_last_pass_timestamp_seconds")
                               .Help("Unix time the last reconcile pass started (0: never)")
                               .Register(*registry_)
                               .Add({})),
      reconcile_passes_(BuildCounter()
                            .Name("orch_reconcile_passes_total")
                            .Help("Reconcile passes this replica ran, by outcome (ok, error, interrupted)")
                            .Register(*registry_)),
      reconcile_pass_seconds_(
          BuildHistogram()
              .Name("orch_reconcile_pass_duration_seconds")
              .Help("Duration of the reconcile passes this replica ran")
              .Register(*registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60})),
      inbox_commit_seconds_(BuildHistogram()
                                .Name("orch_inbox_commit_duration_seconds")
                                .Help("Duration of one group-commit transaction of the webhook routes, fsync "
                                      "included; a rate of the sum near 1 means ingest runs at its write ceiling")
                                .Register(*registry_)
                                .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                                                 0.025, 0.05, 0.1, 0.25, 1})),
      inbox_commit_deliveries_(
          BuildHistogram()
              .Name("orch_inbox_commit_deliveries")
              .Help("Deliveries written by one group-commit transaction of the webhook routes")
              .Register(*registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512})),
      inbox_commit_queued_seconds_(
          BuildHistogram()
              .Name("orch_inbox_commit_queue_wait_seconds")
              .Help("How long the first delivery of one group commit waited in the committer's queue before the "
                    "transaction began (the commit before it, and the write gate, kept it waiting)")
              .Register(*registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                               0.25, 1})),
      checkpoints_(BuildCounter()
                       .Name("orch_store_checkpoints_total")
                       .Help("The SQLite checkpoint thread's rounds, those that let the log start over (restart), "
                             "and the commits that checkpointed in place because the thread fell behind (in_place)")
                       .Register(*registry_)),
      checkpoint_hold_seconds_(BuildCounter()
                                   .Name("orch_store_checkpoint_hold_seconds_total")
                                   .Help("Time the SQLite checkpoint thread held the write gate (its last phase, "
                                         "between two commits): writers may have waited behind it")
                                   .Register(*registry_)),
      checkpoint_hold_max_seconds_(BuildGauge()
                                       .Name("orch_store_checkpoint_hold_max_seconds")
                                       .Help("The longest the SQLite checkpoint thread held the write gate")
                                       .Register(*registry_)),
      reconcile_unblocks_(BuildCounter()
                              .Name("orch_reconcile_unblocks_total")
                              .Help("Tasks the reconciler unblocked (lost webhooks), from its snapshot")
                              .Register(*registry_)
                              .Add({})),
      store_up_(BuildGauge()
                    .Name("orch_store_up")
                    .Help("1 when the last scrape could read the database")
                    .Register(*registry_)
                    .Add({})),
      leading_(BuildGauge()
                   .Name("orch_leader")
                   .Help("1 when this replica leads (runs the reconciler and the sweeper), 0 when it follows")
                   .Register(*registry_)
                   .Add({{"replica", leadership.replica_id()}})),
      leader_info_(BuildGauge()
                       .Name("orch_leader_info")
                       .Help("The replica that leads, as this one last saw it (absent when none is known)")
                       .Register(*registry_)) {
  // Every outcome is exposed from the start (at 0), so that rate() and alerts see a series before the first pass.
  for (const char* outcome : {"ok", "error", "interrupted"}) reconcile_passes_.Add({{"outcome", outcome}});
  for (Source source : {Source::kPlane, Source::kGitea})
    for (std::size_t r = 0; r < kRefusalKinds; ++r)
      refused_.Add({{"source", source_name(source)}, {"reason", refusal_name(static_cast<Refusal>(r))}});
}

void Metrics::subscribe_to(EventBus& bus) {
  bus.subscribe("metrics", [this](const TransitionFired& e) {
    if (!e.replay) transitions_.Add({{"from", e.from}, {"to", e.to}, {"cause", cause_name(e.cause)}}).Increment();
    return Status{};
  });
}

void Metrics::observe_request(const std::string& path, int status, double seconds) {
  std::string route = route_of(path);
  static const prometheus::Histogram::BucketBoundaries kBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                                0.1,   0.25,   0.5,   1,    2.5};
  request_seconds_.Add({{"route", route}}, kBuckets).Observe(seconds);
  if (route == "/webhooks/plane" || route == "/webhooks/gitea") {
    const char* outcome = status == 202 ? "stored" : status == 200 ? "duplicate" : "refused";
    deliveries_.Add({{"source", route.substr(10)}, {"outcome", outcome}}).Increment();
  }
}

namespace {
const prometheus::Histogram::BucketBoundaries kApiBuckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
const prometheus::Histogram::BucketBoundaries kAgentBuckets{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200};
const prometheus::Histogram::BucketBoundaries kHandlingBuckets{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                               0.05,   0.1,   0.25,   0.5,   1,    5};

// A bounded label: event names come from a request header, so anything unexpected is "other".
std::string event_label(Source source, std::string_view event) {
  static const char* const kPlane[] = {"issue", "issue_comment", "project", "cycle", "module"};
  static const char* const kGitea[] = {"push",
                                       "pull_request",
                                       "pull_request_sync",
                                       "pull_request_review_approved",
                                       "pull_request_review_rejected",
                                       "pull_request_review_comment",
                                       "status",
                                       "create",
                                       "delete"};
  if (source == Source::kPlane) {
    for (const char* e : kPlane)
      if (event == e) return e;
  } else {
    for (const char* e : kGitea)
      if (event == e) return e;
  }
  return "other";
}
}  // namespace

void Metrics::api_call(std::string_view client, ApiOutcome outcome, double seconds) {
  api_calls_.Add({{"client", std::string(client)}, {"outcome", api_outcome_name(outcome)}}).Increment();
  api_call_seconds_.Add({{"client", std::string(client)}}, kApiBuckets).Observe(seconds);
}

void Metrics::agent_run(std::string_view agent, std::string_view stage, AgentOutcome outcome, double seconds) {
  agent_run_seconds_
      .Add({{"agent", std::string(agent)}, {"stage", std::string(stage)}, {"outcome", agent_outcome_name(outcome)}},
           kAgentBuckets)
      .Observe(seconds);
}

void Metrics::delivery_handled(Source source, std::string_view event, DeliveryStatus outcome, double seconds) {
  handling_seconds_
      .Add({{"source", source_name(source)},
            {"event", event_label(source, event)},
            {"outcome", delivery_status_name(outcome)}},
           kHandlingBuckets)
      .Observe(seconds);
}

void Metrics::unblocked(std::string_view side, std::string_view stage) {
  unblocks_by_stage_.Add({{"side", std::string(side)}, {"stage", std::string(stage)}}).Increment();
}

void Metrics::inbox_commit(std::size_t deliveries, double seconds, double queued_seconds) {
  inbox_commit_seconds_.Observe(seconds);
  inbox_commit_queued_seconds_.Observe(queued_seconds);
  inbox_commit_deliveries_.Observe(static_cast<double>(deliveries));
}

void Metrics::delivery_refused(Source source, std::string_view reason) {
  refused_.Add({{"source", source_name(source)}, {"reason", std::string(reason)}}).Increment();
}

void Metrics::reconcile_pass(std::string_view outcome, double seconds) {
  reconcile_passes_.Add({{"outcome", std::string(outcome)}}).Increment();
  reconcile_pass_seconds_.Observe(seconds);
}

void Metrics::instrument(httplib::Server& server) {
  server.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    request_started = std::chrono::steady_clock::now();
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // The logger runs after the response was written, on the thread that routed the request.
  server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - request_started;
    observe_request(req.path, res.status, took.count());
  });
}

void Metrics::register_routes(httplib::Server& server, const Secret& token) {
  server.Get("/metrics", require_token_if_set(token, [this](const httplib::Request&, httplib::Response& res) {
               res.set_content(scrape(), "text/plain; version=0.0.4; charset=utf-8");
             }));
}

void Metrics::collect_from_store() {
  bool up = true;
  std::vector<JobRow> running;
  for (JobStatus s : {JobStatus::kQueued, JobStatus::kRunning}) {
    auto jobs = store_.jobs_with_status(s, 1000000);
    if (jobs.ok()) {
      jobs_.Add({{"status", job_status_name(s)}}).Set(static_cast<double>(jobs.value().size()));
      if (s == JobStatus::kRunning) running = std::move(jobs).value();
    } else {
      up = false;
    }
  }
  // Runners (docs/adr/0023): by state, and each one's running jobs (its claims are "runner:<name>/...").
  if (auto runners = store_.runners(); runners.ok()) {
    const TimePoint now = SystemClock().now();
    double online = 0, offline = 0;
    for (const RunnerRow& r : runners.value()) {
      (runner_online(r, now, runner_stale_) ? online : offline) += 1;
      double jobs = 0;
      for (const JobRow& j : running) jobs += is_claim_of(j.worker, r.name) ? 1 : 0;
      runner_jobs_.Add({{"runner", r.name}}).Set(jobs);
    }
    runners_.Add({{"state", "online"}}).Set(online);
    runners_.Add({{"state", "offline"}}).Set(offline);
  } else {
    up = false;
  }
  if (auto c = store_.inbox_counts(); c.ok()) {
    inbox_.Add({{"status", "pending"}}).Set(static_cast<double>(c.value().pending));
    inbox_.Add({{"status", "handled"}}).Set(static_cast<double>(c.value().handled));
    inbox_.Add({{"status", "ignored"}}).Set(static_cast<double>(c.value().ignored));
    inbox_.Add({{"status", "failed"}}).Set(static_cast<double>(c.value().failed));
  } else {
    up = false;
  }
  if (auto c = store_.outbox_counts(); c.ok()) {
    notifications_.Add({{"status", "pending"}}).Set(static_cast<double>(c.value().pending));
    notifications_.Add({{"status", "sent"}}).Set(static_cast<double>(c.value().sent));
    notifications_.Add({{"status", "failed"}}).Set(static_cast<double>(c.value().failed));
    outbox_depth_.Set(static_cast<double>(c.value().pending));
  } else {
    up = false;
  }
  for (std::string_view channel : {kChannelTelegram, kChannelPlane, kChannelGitea}) {
    auto c = store_.channel_counts(std::string(channel));
    if (!c.ok()) {
      up = false;
      continue;
    }
    const std::string ch(channel);
    outbox_messages_.Add({{"channel", ch}, {"status", "pending"}}).Set(static_cast<double>(c.value().pending));
    outbox_messages_.Add({{"channel", ch}, {"status", "sent"}}).Set(static_cast<double>(c.value().sent));
    outbox_messages_.Add({{"channel", ch}, {"status", "failed"}}).Set(static_cast<double>(c.value().failed));
  }
  if (auto spend = store_.spend_by_stage(); spend.ok()) {
    for (const StageSpend& s : spend.value())
      spend_.Add({{"project", s.project}, {"stage", s.stage}}).Set(micros_to_usd(s.spend));
  } else {
    up = false;
  }
  auto flag = [&](const char* key, prometheus::Gauge& g) {
    auto v = store_.get_setting(key);
    if (!v.ok()) {
      up = false;
      return;
    }
    if (v.value()) g.Set(*v.value() == "1" ? 1 : 0);
  };
  reconcile_enabled_.Set(1);  // the start-up default unless a switch was persisted
  reconcile_plane_enabled_.Set(1);
  flag(kSettingReconcileEnabled, reconcile_enabled_);
  flag(kSettingReconcilePlaneEnabled, reconcile_plane_enabled_);
  auto snapshot = store_.get_setting(kSettingReconcileSnapshot);
  if (!snapshot.ok()) {
    up = false;
  } else if (snapshot.value()) {
    auto snap = nlohmann::json::parse(*snapshot.value(), nullptr, false);
    if (snap.is_object()) {
      std::string started = snap.value("last_pass_started_at", std::string());
      if (auto t = parse_rfc3339(started))
        reconcile_last_pass_.Set(std::chrono::duration<double>(t->time_since_epoch()).count());
      if (snap["unblocked_total"].is_number()) {
        double total = snap["unblocked_total"].get<double>();
        if (total > unblocked_seen_) reconcile_unblocks_.Increment(total - unblocked_seen_);
        unblocked_seen_ = total;
      }
    }
  }
  store_up_.Set(up ? 1 : 0);

  leading_.Set(leadership_.is_leader() ? 1 : 0);
  const std::string leader = leadership_.leader_id();
  if (leader != leader_seen_) {
    if (!leader_seen_.empty()) leader_info_.Remove(&leader_info_.Add({{"leader", leader_seen_}}));
    if (!leader.empty()) leader_info_.Add({{"leader", leader}}).Set(1);
    leader_seen_ = leader;
  }
}

void Metrics::watch_checkpoints(std::function<SqliteCheckpointer::Counts()> read) {
  std::lock_guard lock(scrape_mu_);
  read_checkpoints_ = std::move(read);
}

void Metrics::collect_checkpoints() {
  if (!read_checkpoints_) return;
  const SqliteCheckpointer::Counts now = read_checkpoints_();
  SqliteCheckpointer::Counts& seen = checkpoints_seen_;
  // The thread's counts only grow; the counters take what grew since the last scrape.
  checkpoints_.Add({{"kind", "round"}}).Increment(static_cast<double>(now.rounds - seen.rounds));
  checkpoints_.Add({{"kind", "restart"}}).Increment(static_cast<double>(now.restarts - seen.restarts));
  checkpoints_.Add({{"kind", "in_place"}}).Increment(static_cast<double>(now.in_place - seen.in_place));
  checkpoint_hold_seconds_.Add({}).Increment(now.held_seconds - seen.held_seconds);
  checkpoint_hold_max_seconds_.Add({}).Set(now.max_held_seconds);
  seen = now;
}

std::string Metrics::scrape() {
  std::lock_guard lock(scrape_mu_);
  collect_from_store();
  collect_checkpoints();
  prometheus::TextSerializer serializer;
  return serializer.Serialize(registry_->Collect());
}

}  // namespace orch
