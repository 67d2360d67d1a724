#include "engine/stage_engine.h"

namespace orch {

Result<TaskRow> StageEngine::advance_stage(TaskId id, const AdvanceRequest& request) {
  auto found = store_.find_task(id);
  if (!found.ok()) return found.status();
  if (!found.value()) return not_found("task " + std::to_string(id) + " does not exist");
  const TaskRow& task = *found.value();
  const std::string from = task.stage;
  if (request.expected_from && *request.expected_from != from)
    return conflict("task " + task.work_item_key + " is in " + from + ", not " + *request.expected_from);
  if (pipeline_.is_terminal(from)) return conflict("task " + task.work_item_key + " is already done");
  if (request.finished_agent) {
    const StageSpec* stage = pipeline_.stage(from);
    if (!stage || stage->agent != *request.finished_agent)
      return conflict("agent " + *request.finished_agent + " finished, but task " + task.work_item_key + " is in " +
                      from);
  }
  std::string to;
  if (request.to) {
    to = *request.to;
  } else if (auto n = pipeline_.next(from)) {
    to = *n;
  } else {
    return invalid("stage " + from + " has no next stage");
  }
  if (request.rerun) {
    if (request.cause != Cause::kManual) return invalid("only a person re-runs a stage");
    if (!pipeline_.rerun_allowed(from, to))
      return invalid("task " + task.work_item_key + " is in " + from + ": it can re-run " + from +
                     " or an earlier stage, not " + to);
  } else if (!pipeline_.allowed(from, to)) {
    return invalid("transition " + from + " -> " + to + " is not declared in the pipeline");
  }

  TransitionRequest write;
  write.task_id = id;
  write.from = from;
  write.to = to;
  write.cause = request.cause;
  write.detail = request.detail;
  write.rejection_reason = request.rejection_reason;
  write.now = clock_.now();
  write.outbox = effects_.for_transition(task, write);
  auto updated = store_.apply_transition(write);
  if (!updated.ok()) return updated.status();

  TransitionFired event{updated.value(), from, to, request.cause, request.finished_agent, false};
  bus_.publish(event);
  return updated;
}

Result<GateOutcome> StageEngine::evaluate_gate(const TaskRow& task) {
  const StageSpec* stage = pipeline_.stage(task.stage);
  if (!stage) return GateOutcome{task.stage == Pipeline::kCreated, "no gate on " + task.stage};
  if (!stage->gate) return GateOutcome{true, "stage " + stage->name + " has no gate"};
  return gates_.evaluate(*stage->gate, task);
}

Result<GateAdvance> StageEngine::advance_if_gate_passed(TaskId id, Cause cause,
                                                        std::optional<std::string> finished_agent, std::string detail) {
  auto found = store_.find_task(id);
  if (!found.ok()) return found.status();
  if (!found.value()) return not_found("task " + std::to_string(id) + " does not exist");
  GateAdvance result;
  result.task = *found.value();
  if (pipeline_.is_terminal(result.task.stage)) {
    result.gate = {false, "task is done"};
    return result;
  }
  auto gate = evaluate_gate(result.task);
  if (!gate.ok()) return gate.status();
  result.gate = gate.value();
  if (!result.gate.green) return result;

  AdvanceRequest request;
  request.cause = cause;
  request.expected_from = result.task.stage;
  request.finished_agent = std::move(finished_agent);
  request.detail = detail.empty() ? result.gate.why : detail;
  auto moved = advance_stage(id, request);
  if (!moved.ok()) return moved.status();
  result.advanced = true;
  result.task = moved.value();
  return result;
}

Result<TaskRow> StageEngine::rollback(TaskId id, Rollback kind, Cause cause, const std::string& reason,
                                      std::optional<std::string> expected_from) {
  auto found = store_.find_task(id);
  if (!found.ok()) return found.status();
  if (!found.value()) return not_found("task " + std::to_string(id) + " does not exist");
  const TaskRow& task = *found.value();
  auto target = pipeline_.rollback_target(task.stage, kind);
  if (!target)
    return invalid("stage " + task.stage + " declares no " +
                   (kind == Rollback::kReject ? "on_reject" : "on_changes_requested") + " edge");
  AdvanceRequest request;
  request.cause = cause;
  request.to = *target;
  request.expected_from = expected_from ? expected_from : std::optional<std::string>(task.stage);
  request.rejection_reason = reason;
  request.detail = kind == Rollback::kReject ? "rejected" : "changes requested";
  return advance_stage(id, request);
}

Result<int> StageEngine::replay_non_terminal() {
  constexpr int kPage = 500;
  TaskId after = 0;
  int replayed = 0;
  while (true) {
    auto page = store_.non_terminal_tasks(after, kPage);
    if (!page.ok()) return page.status();
    for (const TaskRow& task : page.value()) {
      bus_.publish(TransitionFired{task, task.stage, task.stage, Cause::kManual, std::nullopt, true});
      ++replayed;
    }
    if (static_cast<int>(page.value().size()) < kPage) break;
    after = page.value().back().id;
  }
  return replayed;
}

}  // namespace orch
