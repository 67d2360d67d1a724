// webhooks/webhook_routes.h: POST /webhooks/plane and POST /webhooks/gitea. HTTP in: secret configured, size limit,
// content type (JSON; for Gitea also its form content type), signature, JSON syntax, delivery id; then the dedup claim
// and the insert in one transaction, and the answer: 202 {"delivery": id}, or 200 {"duplicate": true}. No domain logic
// here: the InboxProcessor handles what was stored (docs/adr/0002). A refused request writes nothing. With group
// commit, a committer thread (start() .. stop()) writes the deliveries that arrive together in one transaction and
// answers each request only after its commit. register_routes() before the server starts; start() before it accepts,
// stop() after it stopped accepting. Request handlers run on any server thread.
#pragma once

#include <httplib.h>

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <future>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/secret.h"
#include "engine/store.h"
#include "engine/telemetry.h"
#include "webhooks/refusals.h"

namespace orch {

struct WebhookSecrets {
  Secret plane;  // ORCH_PLANE_WEBHOOK_SECRET
  Secret gitea;  // ORCH_GITEA_WEBHOOK_SECRET
  // ORCH_ALLOW_UNSIGNED_WEBHOOKS=1: a source without a secret is accepted unsigned instead of refused with 503.
  // A source with a secret is always verified.
  bool allow_unsigned = false;
};

struct WebhookRouteOptions {
  // [server] max_body_bytes; also set as the server's payload limit. The default fits Plane's largest realistic work
  // item, whose webhook carries the description three times (docs/adr/0009).
  std::size_t max_body_bytes = kDefaultMaxBodyBytes;
  bool group_commit = true;
  std::size_t max_batch = 512;  // deliveries per group-commit transaction
  // The lane of a delivery (NewDelivery::lane) from its source and the project key its body names (Plane's
  // data.project id, Gitea's repository.full_name; "" when absent). The app maps both keys of one configured project
  // to one lane, so that a task's Plane and Gitea events are never handled side by side. Unset: "<source>:<key>".
  std::function<std::string(Source, const std::string& project_key)> lane_of;
  Telemetry* telemetry = &no_telemetry();  // told each group commit's size and time; never null
};

class WebhookRoutes {
 public:
  WebhookRoutes(InboxStore& inbox, const Clock& clock, spdlog::logger& log, WebhookSecrets secrets,
                WebhookRouteOptions options = {});
  ~WebhookRoutes() { stop(); }
  WebhookRoutes(const WebhookRoutes&) = delete;
  WebhookRoutes& operator=(const WebhookRoutes&) = delete;

  // Called after each newly stored delivery (not for duplicates), on the request's thread: e.g. the inbox
  // processor's poke(). Set before the server starts.
  void set_on_stored(std::function<void()> fn) { on_stored_ = std::move(fn); }
  // Registers both routes and the server's payload limit; logs, once, how each source is secured.
  void register_routes(httplib::Server& server);

  // The group committer (a no-op without group commit). Until start() and after stop(), deliveries are answered
  // 503 and nothing is acknowledged. stop() first commits what is already queued, then joins.
  void start();
  void stop();

  // What was refused since this object was made, by source and reason (for /queue).
  const RefusalCounts& refusals() const { return refusals_; }

 private:
  struct Pending {
    NewDelivery delivery;
    bool dedup_on_digest = false;
    std::chrono::steady_clock::time_point queued_at;  // for the queue-wait histogram
    std::promise<Result<InboxInsert>> done;
  };
  void serve(Source source, const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader);
  Result<InboxInsert> store(NewDelivery delivery, bool dedup_on_digest);
  void count_refusal(Source source, Refusal reason, const std::string& error);
  void commit_loop(std::stop_token stop);

  InboxStore& inbox_;
  const Clock& clock_;
  spdlog::logger& log_;
  const WebhookSecrets secrets_;
  const WebhookRouteOptions options_;
  std::function<void()> on_stored_;
  RefusalCounts refusals_;

  std::mutex mu_;
  std::condition_variable_any cv_;
  std::vector<Pending*> queue_;  // guarded by mu_; each entry lives on its waiting request's stack
  bool accepting_ = false;       // guarded by mu_
  std::jthread committer_;       // last member: stopped before the others are destroyed
};

}  // namespace orch
