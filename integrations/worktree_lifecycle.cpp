#include "integrations/worktree_lifecycle.h"

namespace orch {

Status WorktreeLifecycle::on_transition(const TransitionFired& event) {
  const TaskRow& task = event.task;
  const ProjectSpec* project = config_.find_project(task.project);
  if (!project) return invalid("task " + task.work_item_key + " names unknown project '" + task.project + "'");
  if (pipeline_.is_terminal(task.stage)) return git_.remove_worktree(*project, task);
  // `created` has no work to do yet; every declared stage is a working stage (its agent runs in the worktree).
  if (!pipeline_.stage(task.stage)) return {};
  auto made = git_.ensure_worktree(*project, task);
  if (!made.ok()) return made.status();
  return {};
}

}  // namespace orch
