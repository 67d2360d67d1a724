// integrations/worktree_lifecycle.h: the bus subscriber that cleans up a task's git worktree: a task that reaches
// `done` loses its worktree (the branch stays, on the remote and in the clone). Worktrees are made by the worker,
// before each job (JobRunner, GitWorkspaces::ensure_worktree), not here. Idempotent: a replay, a duplicate event or
// a second instance after a restart finds nothing to remove and runs no git.
// Thread-safe: stateless over GitWorkspaces, which serialises git per project.
#pragma once

#include "engine/config.h"
#include "engine/event_bus.h"
#include "engine/pipeline.h"
#include "integrations/git.h"

namespace orch {

class WorktreeLifecycle {
 public:
  // Failures are returned to the bus, which logs them.
  WorktreeLifecycle(GitWorkspaces& git, const Config& config, const Pipeline& pipeline)
      : git_(git), config_(config), pipeline_(pipeline) {}

  Status on_transition(const TransitionFired& event);
  void subscribe_to(EventBus& bus) {
    bus.subscribe("worktree lifecycle", [this](const TransitionFired& e) { return on_transition(e); });
  }

 private:
  GitWorkspaces& git_;
  const Config& config_;
  const Pipeline& pipeline_;
};

}  // namespace orch
