// integrations/worktree_lifecycle.h: the bus subscriber that gives a task its git worktree. A task in a working
// stage (entered, or replayed at start-up) gets its clone, branch and worktree, each only if missing; a task that
// reaches `done` loses its worktree (the branch stays, on the remote and in the clone). Idempotent: a replay, a
// duplicate event or a second instance after a restart finds everything in place and runs no git.
// Thread-safe: stateless over GitWorkspaces, which serialises git per project.
#pragma once

#include "engine/config.h"
#include "engine/event_bus.h"
#include "engine/pipeline.h"
#include "integrations/git.h"

namespace orch {

class WorktreeLifecycle {
 public:
  // Failures are returned to the bus, which logs them; the worker ensures the worktree again before each job.
  WorktreeLifecycle(GitWorkspaces& git, const Config& config, const Pipeline& pipeline)
      : git_(git), config_(config), pipeline_(pipeline) {}

  Status on_transition(const TransitionFired& event);
  // Subscribe before the job scheduler, so that a task's worktree exists before its first job is queued.
  void subscribe_to(EventBus& bus) {
    bus.subscribe("worktree lifecycle", [this](const TransitionFired& e) { return on_transition(e); });
  }

 private:
  GitWorkspaces& git_;
  const Config& config_;
  const Pipeline& pipeline_;
};

}  // namespace orch
