// webhooks/handlers/status_start.cpp: a work item moved to In Progress: create its task and start the pipeline.
//
// DESIGN: the create-claim (unique work item id, one transaction) decides who creates; only the winner advances
// created -> first stage, and that transition's subscriber enqueues the first job. A caller that finds the task
// still in `created` (the winner crashed between claim and advance) advances it too: the stage compare-and-set
// lets exactly one caller through, so a race between them still makes one transition and one job.
#include "engine/layout.h"
#include "webhooks/handlers/handlers.h"

namespace orch {

Result<HandleOutcome> Handlers::handle_status_start(const ProjectSpec& project, const WorkItem& item, Cause cause) {
  if (item.id.empty()) return invalid("work item without an id");
  auto existing = store_.find_task_by_work_item(item.id);
  if (!existing.ok()) return existing.status();

  TaskRow task;
  bool won = false;
  if (existing.value()) {
    task = *existing.value();
  } else {
    auto identifier = tracker_.project_identifier(project);  // cached by the Plane client
    if (!identifier.ok()) return identifier.status();
    NewTask t;
    t.project = project.name;
    t.work_item_id = item.id;
    t.work_item_key = identifier.value() + "-" + std::to_string(item.sequence_id);
    t.title = item.name;
    t.description = item.description;
    t.branch = branch_for(t.work_item_key, item.id);  // from the key, never from the (attacker-controlled) title
    auto claim = store_.create_task_atomic(t, clock_.now());
    if (!claim.ok()) return claim.status();
    task = claim.value().task;
    won = claim.value().created;
    if (!won) return HandleOutcome::noop(task.id, task.work_item_key + " was created by a concurrent caller");
  }

  if (task.stage != kStageCreated) {
    if (Status s = record_tracker_state(task, item.state_id); !s.ok()) return s;
    return HandleOutcome::noop(task.id, task.work_item_key + " already exists in " + task.stage);
  }

  AdvanceRequest start;
  start.cause = cause;
  start.to = engine_.pipeline().first_working_stage();
  start.expected_from = std::string(kStageCreated);
  start.detail = "work item in progress";
  auto moved = engine_.advance_stage(task.id, start);
  if (!moved.ok()) {
    if (moved.status().code == Code::kConflict)
      return HandleOutcome::noop(task.id, task.work_item_key + " was started by a concurrent caller");
    return moved.status();
  }
  if (Status s = record_tracker_state(moved.value(), item.state_id); !s.ok()) return s;
  std::string why = (won ? "created " : "recovered ") + task.work_item_key + " (" + task.branch + ") and started " +
                    moved.value().stage;
  return HandleOutcome::changed(task.id, why);
}

}  // namespace orch
