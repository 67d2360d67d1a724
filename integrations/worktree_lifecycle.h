// integrations/worktree_lifecycle.h: cleans up a task's git worktree: a task that reaches `done` loses its worktree
// (the branch stays, on the remote and in the clone). The bus subscriber only hands the task to the worker pool; a
// worker runs the git (remove), never the thread that handles webhooks. Worktrees are made by the worker too, before
// each job (JobRunner, GitWorkspaces::ensure_worktree). Idempotent: a replay, a duplicate event or a second instance
// after a restart finds nothing to remove and runs no git. Thread-safe: stateless over GitWorkspaces, which
// serialises git per project.
#pragma once

#include "engine/config.h"
#include "engine/event_bus.h"
#include "engine/pipeline.h"
#include "integrations/git.h"
#include "integrations/worker_pool.h"

namespace orch {

class WorktreeLifecycle {
 public:
  WorktreeLifecycle(GitWorkspaces& git, const Config& config, const Pipeline& pipeline)
      : git_(git), config_(config), pipeline_(pipeline) {}

  // Removes the worktree of a task in a terminal stage now (git); nothing for any other task.
  Status remove(const TaskRow& task);
  // A task that reaches a terminal stage has its worktree removed by one of `pool`'s workers.
  void subscribe_to(EventBus& bus, WorkerPool& pool) {
    bus.subscribe("worktree lifecycle", [this, &pool](const TransitionFired& e) {
      if (pipeline_.is_terminal(e.task.stage)) pool.remove_worktree_later(e.task);
      return Status{};
    });
  }

 private:
  GitWorkspaces& git_;
  const Config& config_;
  const Pipeline& pipeline_;
};

}  // namespace orch
