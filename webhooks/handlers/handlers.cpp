// webhooks/handlers/handlers.cpp: what the handlers share: routing a tracker state, "look again" through the gate,
// and the small predicates over the pipeline. One file per event kind sits beside this one.
#include "webhooks/handlers/handlers.h"

namespace orch {
namespace {

bool mentions_ci(const GateSpec& gate) {
  if (gate.type == GateSpec::Type::kCiGreen) return true;
  for (const GateSpec& child : gate.of)
    if (mentions_ci(child)) return true;
  return false;
}

}  // namespace

const char* outcome_kind_name(HandleOutcome::Kind k) {
  switch (k) {
    case HandleOutcome::Kind::kChanged: return "changed";
    case HandleOutcome::Kind::kNoop: return "noop";
    case HandleOutcome::Kind::kIgnored: return "ignored";
  }
  return "?";
}

bool Handlers::is_human(const std::string& stage) const {
  const StageSpec* s = engine_.pipeline().stage(stage);
  return s && (s->human || (s->gate && gate_is_human(*s->gate)));
}

std::vector<std::string> Handlers::ci_stages() const {
  std::vector<std::string> out;
  for (const StageSpec& s : engine_.pipeline().stages())
    if (s.gate && mentions_ci(*s.gate)) out.push_back(s.name);
  return out;
}

Status Handlers::record_tracker_state(const TaskRow& task, const std::string& state_id) {
  // Only a real change is written: recording bumps updated_at, which the reconciler reads as activity.
  if (state_id.empty() || task.tracker_state == state_id) return {};
  TaskFacts facts;
  facts.tracker_state = state_id;
  return store_.record_facts(task.id, facts, clock_.now());
}

Result<HandleOutcome> Handlers::look_again(const TaskRow& task, Cause cause, const std::string& why) {
  if (engine_.pipeline().is_terminal(task.stage)) return HandleOutcome::noop(task.id, why + "; task is done");
  if (is_human(task.stage)) return HandleOutcome::noop(task.id, why + "; " + task.stage + " waits for a human verdict");
  auto gate = engine_.advance_if_gate_passed(task.id, cause);
  if (!gate.ok()) {
    // Someone else moved the task between our read and our write: they did the work.
    if (gate.status().code == Code::kConflict) return HandleOutcome::noop(task.id, why + "; " + gate.status().message);
    return gate.status();
  }
  const GateAdvance& g = gate.value();
  if (g.advanced)
    return HandleOutcome::changed(
        task.id, task.work_item_key + " " + task.stage + " -> " + g.task.stage + " (" + g.gate.why + ")");
  return HandleOutcome::noop(task.id, why + "; " + task.work_item_key + " stays in " + task.stage + ": " + g.gate.why);
}

Result<HandleOutcome> Handlers::handle_tracker_state(const ProjectSpec& project, const WorkItem& item, Cause cause) {
  auto state = tracker_.classify_state(project, item.state_id);
  if (!state.ok()) return state.status();
  switch (state.value()) {
    case TrackerState::kInProgress: return handle_status_start(project, item, cause);
    case TrackerState::kApproved: return handle_verdict(project, item, true, "", cause);
    case TrackerState::kRejected: return handle_verdict(project, item, false, "rejected in Plane", cause);
    case TrackerState::kOther: break;
  }
  auto found = store_.find_task_by_work_item(item.id);
  if (!found.ok()) return found.status();
  if (!found.value()) return HandleOutcome::ignored("work item " + item.id + " is in a state orch does not act on");
  // Remember it: a later verdict is new only if the tracker state changed since the last one (see handle_verdict).
  if (Status s = record_tracker_state(*found.value(), item.state_id); !s.ok()) return s;
  return HandleOutcome::ignored(found.value()->work_item_key + " moved to a state orch does not act on",
                                found.value()->id);
}

}  // namespace orch
