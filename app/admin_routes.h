// app/admin_routes.h: the authenticated POST endpoints of docs/contracts.md "HTTP endpoints": the kill switches,
// replaying a delivery, retrying a blocked task or a failed outbox message (a write-back). Each goes through the
// same function as the CLI (admin_actions.h, InboxProcessor::replay) and answers JSON. Also /readyz (open): one
// check per dependency, 503 naming the failing ones.
// Handlers run on any server thread; everything they touch is thread-safe.
#pragma once

#include <httplib.h>

#include <functional>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/pipeline.h"
#include "engine/secret.h"
#include "engine/stage_engine.h"
#include "engine/store.h"
#include "integrations/worker_pool.h"
#include "reconciler/reconciler.h"
#include "webhooks/inbox_processor.h"

namespace orch {

struct AdminDeps {
  Store& store;
  InboxProcessor& inbox;
  Reconciler& reconciler;
  WorkerPool& pool;
  AttemptPolicy& attempts;
  const Pipeline& pipeline;
  const Config& config;
  StageEngine& engine;
  const Clock& clock;
  spdlog::logger& log;
};

void register_admin_routes(httplib::Server& server, const Secret& admin_token, AdminDeps deps);

}  // namespace orch
