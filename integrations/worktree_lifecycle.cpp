#include "integrations/worktree_lifecycle.h"

namespace orch {

Status WorktreeLifecycle::remove(const TaskRow& task) {
  const ProjectSpec* project = config_.find_project(task.project);
  if (!project) return invalid("task " + task.work_item_key + " names unknown project '" + task.project + "'");
  // The worktree is made where it is used: the worker ensures it before each job (docs/adr/0006). Making it here
  // would put a clone on the thread that handles webhooks, on every replica's start-up replay, and on a replica
  // that may not be the one whose worker runs the job.
  if (pipeline_.is_terminal(task.stage)) return git_.remove_worktree(*project, task);
  return {};
}

}  // namespace orch
