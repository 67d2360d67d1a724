// webhooks/handlers/verdict.cpp: a human's verdict in the tracker (Approved / Rejected) on a task in a human stage.
//
// DESIGN: a verdict is a level (the item *is* Approved), not an edge, and it reaches us more than once: Plane sends
// one delivery per changed field (and sometimes a `state` + `state_id` pair for one change), and the reconciler
// replays items that still sit in Approved or Rejected. An approval is naturally idempotent (the task leaves the
// human stage); a rejection is a rollback into the same stage, so it is applied once per tracker state: the task
// remembers the state id of the last verdict, and only a different state (the human moved the item in between)
// makes the same verdict new again.
#include "webhooks/handlers/handlers.h"

namespace orch {

Result<HandleOutcome> Handlers::handle_verdict(const ProjectSpec& project, const WorkItem& item, bool approved,
                                               const std::string& reason, Cause cause) {
  const char* verdict = approved ? "approval" : "rejection";
  auto found = store_.find_task_by_work_item(item.id);
  if (!found.ok()) return found.status();
  if (!found.value())
    return HandleOutcome::ignored(std::string(verdict) + " for work item " + item.id + " with no task");
  const TaskRow& task = *found.value();
  if (task.project != project.name)
    return HandleOutcome::ignored(task.work_item_key + " belongs to project " + task.project, task.id);

  if (!is_human(task.stage)) {
    log_.info("verdict: {} of {} ignored: {} is not a human stage", verdict, task.work_item_key, task.stage);
    if (Status s = record_tracker_state(task, item.state_id); !s.ok()) return s;
    return HandleOutcome::ignored(
        std::string(verdict) + " ignored: " + task.work_item_key + " is in " + task.stage + ", not a human stage",
        task.id);
  }
  if (!item.state_id.empty() && task.tracker_state == item.state_id)
    return HandleOutcome::noop(task.id, std::string(verdict) + " of " + task.work_item_key + " already applied");

  auto apply = [&]() -> Result<TaskRow> {
    if (!approved) return engine_.rollback(task.id, Rollback::kReject, cause, reason, task.stage);
    AdvanceRequest r;
    r.cause = cause;
    r.expected_from = task.stage;
    r.detail = "approved in the tracker";
    return engine_.advance_stage(task.id, r);
  };
  Result<TaskRow> moved = apply();
  if (!moved.ok()) {
    if (moved.status().code == Code::kConflict)
      return HandleOutcome::noop(task.id, task.work_item_key + " moved meanwhile: " + moved.status().message);
    if (moved.status().code == Code::kInvalid) {  // the stage declares no on_reject edge
      log_.info("verdict: {} of {} ignored: {}", verdict, task.work_item_key, moved.status().message);
      if (Status s = record_tracker_state(task, item.state_id); !s.ok()) return s;
      return HandleOutcome::ignored(moved.status().message, task.id);
    }
    return moved.status();
  }
  // The transition is written first: losing this record (a crash now) can at worst repeat a rejection, while
  // recording first could lose the verdict.
  if (Status s = record_tracker_state(moved.value(), item.state_id); !s.ok()) return s;
  return HandleOutcome::changed(task.id, std::string(approved ? "approved: " : "rejected: ") + task.work_item_key +
                                             " " + task.stage + " -> " + moved.value().stage);
}

}  // namespace orch
