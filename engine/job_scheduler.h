// engine/job_scheduler.h: the bus subscriber that enqueues the entered stage's agent, then wakes the local workers
// itself (JobWaker), so no subscriber depends on the order of the others. Idempotent by construction: the job key is
// (task, visit, attempt 1), so the start-up replay and a duplicate event find the job and add none.
// Thread-safe (stateless over the Store).
#pragma once

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/event_bus.h"
#include "engine/pipeline.h"
#include "engine/store.h"

namespace orch {

// Told after a job was enqueued, so that an idle worker claims it now rather than at its next poll: the local
// WorkerPool. The null object is for processes without a pool (the CLI); pools elsewhere poll.
struct JobWaker {
  virtual ~JobWaker() = default;
  virtual void jobs_enqueued() = 0;
};
struct NoWaker final : JobWaker {
  void jobs_enqueued() override {}
};
inline JobWaker& no_waker() {
  static NoWaker none;
  return none;
}

class JobScheduler {
 public:
  JobScheduler(JobStore& jobs, const Pipeline& pipeline, const Clock& clock, spdlog::logger& log,
               JobWaker& waker = no_waker())
      : jobs_(jobs), pipeline_(pipeline), clock_(clock), log_(log), waker_(waker) {}
  Status on_transition(const TransitionFired& event);
  void subscribe_to(EventBus& bus) {
    bus.subscribe("job scheduler", [this](const TransitionFired& e) { return on_transition(e); });
  }

 private:
  JobStore& jobs_;
  const Pipeline& pipeline_;
  const Clock& clock_;
  spdlog::logger& log_;
  JobWaker& waker_;
};

// The audit subscriber: one log line per real transition (the row itself is written by the store).
void subscribe_audit_log(EventBus& bus, spdlog::logger& log);

}  // namespace orch
