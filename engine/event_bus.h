// engine/event_bus.h: the in-process bus on which advance_stage() publishes TransitionFired.
// Subscribers do the side effects (job scheduler, worktree lifecycle, audit, metrics, notifier) and must be
// idempotent: the start-up replay publishes every non-terminal task again as a self-transition.
// subscribe() only during wiring, before any thread publishes; publish() is then thread-safe and runs the
// subscribers in order on the caller's thread. A failing subscriber is logged and the others still run.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "engine/model.h"
#include "engine/status.h"

namespace orch {

struct TransitionFired {
  TaskRow task;  // the task after the transition
  std::string from;
  std::string to;
  Cause cause = Cause::kManual;
  std::optional<std::string> finished_agent;
  bool replay = false;  // start-up self-transition: nothing changed, subscribers converge
};

class EventBus {
 public:
  using Subscriber = std::function<Status(const TransitionFired&)>;
  explicit EventBus(spdlog::logger& log) : log_(log) {}
  void subscribe(std::string name, Subscriber fn) { subscribers_.push_back({std::move(name), std::move(fn)}); }
  void publish(const TransitionFired& event) const;

 private:
  struct Entry {
    std::string name;
    Subscriber fn;
  };
  spdlog::logger& log_;
  std::vector<Entry> subscribers_;  // written only before threads start
};

}  // namespace orch
