// app/readiness.h: GET /readyz and the checks behind it. Every thread exposes when it last showed life: the
// reconciler and outbox threads their last tick, the inbox processor its last progress, each worker its last claim
// attempt or job heartbeat. The store adds the symptom an operator sees: work that waited too long while a thread
// should have taken it. Each check is "" when healthy, else why not (it names no secret).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <httplib.h>

#include "engine/clock.h"
#include "engine/periodic.h"
#include "engine/store.h"
#include "integrations/worker_pool.h"
#include "reconciler/reconciler.h"
#include "webhooks/inbox_processor.h"

namespace orch {

struct ReadinessCheck {
  std::string name;
  std::function<std::string()> check;
};
// GET /readyz: 200 {"ready":true,"checks":{name:"ok"}} or 503 with each failing check's reason.
void register_readiness(httplib::Server& server, std::vector<ReadinessCheck> checks);

// A thread ticking every `interval` is stalled when its last tick started longer ago than this.
std::chrono::milliseconds stall_threshold(std::chrono::milliseconds interval);

// What `orch serve`'s checks look at; all outlive the checks.
struct ReadinessSources {
  Store& store;
  InboxProcessor& inbox;
  WorkerPool& pool;
  int workers;  // the pool's size
  Reconciler& reconciler;
  Periodic& outbox;      // the Telegram outbox thread
  Periodic& write_back;  // the Plane and Gitea outbox thread
  const Clock& clock;
};
// database, inbox_processor, worker_pool, reconciler, outbox, write_back.
std::vector<ReadinessCheck> serve_readiness_checks(ReadinessSources s);

}  // namespace orch
