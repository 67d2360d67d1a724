// engine/telemetry.h: the Telemetry seam: what the layers below app/ report as it happens (outbound API calls, agent
// runs, handled deliveries, unblocks), so that /metrics can count what the database does not remember. app/metrics
// implements it; a component given none (tests, the CLI) gets NoTelemetry and reports nowhere. Implementations are
// thread-safe: every method may be called from any thread, and must be cheap (a counter, a histogram observation).
#pragma once

#include <cstddef>
#include <string_view>

#include "engine/model.h"

namespace orch {

// How one HTTP attempt to Plane, Gitea or Telegram ended.
enum class ApiOutcome { kOk, kClientError, kRateLimited, kServerError, kNetworkError };
inline const char* api_outcome_name(ApiOutcome o) {
  switch (o) {
    case ApiOutcome::kOk: return "ok";
    case ApiOutcome::kClientError: return "client_error";
    case ApiOutcome::kRateLimited: return "rate_limited";
    case ApiOutcome::kServerError: return "server_error";
    case ApiOutcome::kNetworkError: return "network_error";
  }
  return "unknown";
}

// How one agent process ended: exit 0, exit != 0, timeout or spawn error, stopped (shutdown, or its task moved on).
enum class AgentOutcome { kSucceeded, kFailed, kError, kStopped };
inline const char* agent_outcome_name(AgentOutcome o) {
  switch (o) {
    case AgentOutcome::kSucceeded: return "succeeded";
    case AgentOutcome::kFailed: return "failed";
    case AgentOutcome::kError: return "error";
    case AgentOutcome::kStopped: return "stopped";
  }
  return "unknown";
}

struct Telemetry {
  virtual ~Telemetry() = default;
  // One attempt of an outbound call; `client` is the HttpClient's name ("plane", "gitea", "telegram").
  virtual void api_call(std::string_view client, ApiOutcome outcome, double seconds) = 0;
  // One run of an agent's process, from spawn to exit.
  virtual void agent_run(std::string_view agent, std::string_view stage, AgentOutcome outcome, double seconds) = 0;
  // One delivery handled by the inbox processor (a retry in place is not an outcome yet and is not reported).
  virtual void delivery_handled(Source source, std::string_view event, DeliveryStatus outcome, double seconds) = 0;
  // One unblock by the reconciler: `side` is "gate" or "tracker", `stage` the stage the task left.
  virtual void unblocked(std::string_view side, std::string_view stage) = 0;
  // One reconcile pass that ran on this process (not a dry run, not one skipped by a kill switch or as a follower):
  // `outcome` is "ok", "error" (a side, the sweeper or the store reported an error) or "interrupted" (leadership
  // was lost during the pass).
  virtual void reconcile_pass(std::string_view outcome, double seconds) = 0;
  // One group-commit transaction of the webhook routes: the deliveries it wrote (duplicates included), its time
  // from BEGIN to COMMIT's return (fsync and the wait for the write gate included), and how long the first of its
  // deliveries waited in the committer's queue before that. Their sum over a minute is the committer's busy
  // fraction: near 1, ingest runs at the durable-write ceiling.
  virtual void inbox_commit(std::size_t deliveries, double seconds, double queued_seconds) = 0;
  // One delivery the webhook routes refused (it wrote nothing): `reason` is one of webhooks/refusals.h's names
  // ("too_large", "bad_signature", ...).
  virtual void delivery_refused(Source source, std::string_view reason) = 0;
};

// The null object: reports nowhere. Options default to it, so no component checks for a missing Telemetry.
class NoTelemetry final : public Telemetry {
 public:
  void api_call(std::string_view, ApiOutcome, double) override {}
  void agent_run(std::string_view, std::string_view, AgentOutcome, double) override {}
  void delivery_handled(Source, std::string_view, DeliveryStatus, double) override {}
  void unblocked(std::string_view, std::string_view) override {}
  void reconcile_pass(std::string_view, double) override {}
  void inbox_commit(std::size_t, double, double) override {}
  void delivery_refused(Source, std::string_view) override {}
};
// One shared instance (stateless, so thread-safe).
inline Telemetry& no_telemetry() {
  static NoTelemetry none;
  return none;
}

}  // namespace orch
