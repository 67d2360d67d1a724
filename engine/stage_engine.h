// engine/stage_engine.h: advance_stage() is the one way a task changes stage. Webhook handlers, agents, the
// reconciler and operators all go through it; each call checks the edge against the Pipeline, writes the task and
// its transition row in one transaction (compare-and-set on the current stage), then publishes TransitionFired.
// Thread-safe: all state is in the Store; concurrent callers on one task are serialised by the CAS (one wins,
// the other gets kConflict).
#pragma once

#include <optional>
#include <string>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/event_bus.h"
#include "engine/gates.h"
#include "engine/pipeline.h"
#include "engine/store.h"

namespace orch {

struct AdvanceRequest {
  Cause cause = Cause::kManual;
  std::optional<std::string> to;              // default: the pipeline's next stage
  std::optional<std::string> expected_from;   // refuse (kConflict) if the task is not here
  std::optional<std::string> finished_agent;  // the agent that finished: must be the current stage's agent
  std::optional<std::string> rejection_reason;
  std::string detail;
  // A person's re-run (cause manual): `to` may be the current stage or an earlier one (Pipeline::rerun_allowed)
  // instead of a declared edge.
  bool rerun = false;
};

struct GateAdvance {
  bool advanced = false;
  GateOutcome gate;  // why it did or did not advance
  TaskRow task;      // after the call
};

// What a transition tells the world outside (write-back, docs/adr/0013): messages stored with the transition, in
// its transaction. Implemented by WriteBackPlan (engine/write_back.h).
struct TransitionEffects {
  virtual ~TransitionEffects() = default;
  virtual std::vector<OutboxMessage> for_transition(const TaskRow& before, const TransitionRequest& t) const = 0;
};
// The null object: a transition tells nobody anything (tests, write-back off at the wiring level).
struct NoEffects final : TransitionEffects {
  std::vector<OutboxMessage> for_transition(const TaskRow&, const TransitionRequest&) const override { return {}; }
};
inline const TransitionEffects& no_effects() {
  static const NoEffects none;
  return none;
}

class StageEngine {
 public:
  StageEngine(TaskStore& store, const Pipeline& pipeline, GateEvaluator& gates, EventBus& bus, const Clock& clock,
              spdlog::logger& log, const TransitionEffects& effects = no_effects())
      : store_(store), pipeline_(pipeline), gates_(gates), bus_(bus), clock_(clock), log_(log), effects_(effects) {}

  Result<TaskRow> advance_stage(TaskId id, const AdvanceRequest& request);

  // Evaluates the current stage's gate (read-only) and advances only when it is green. A stage without a gate
  // passes. kUnavailable when a fact could not be read; a red gate is advanced=false, not an error.
  Result<GateAdvance> advance_if_gate_passed(TaskId id, Cause cause,
                                             std::optional<std::string> finished_agent = std::nullopt,
                                             std::string detail = "");

  // Pre-evaluation without advancing: what advance_if_gate_passed would decide now.
  Result<GateOutcome> evaluate_gate(const TaskRow& task);

  // Takes the declared rollback edge out of the task's stage. kInvalid when the stage declares none.
  Result<TaskRow> rollback(TaskId id, Rollback kind, Cause cause, const std::string& reason,
                           std::optional<std::string> expected_from = std::nullopt);

  // Start-up: publish every non-terminal task as a self-transition so subscribers converge after a restart.
  // Writes no transition rows; subscribers are idempotent, so a second replay changes nothing.
  Result<int> replay_non_terminal();

  const Pipeline& pipeline() const { return pipeline_; }

 private:
  TaskStore& store_;
  const Pipeline& pipeline_;
  GateEvaluator& gates_;
  EventBus& bus_;
  const Clock& clock_;
  spdlog::logger& log_;
  const TransitionEffects& effects_;
};

}  // namespace orch
