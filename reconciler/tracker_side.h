// reconciler/tracker_side.h: TrackerSide (F-2) polls Plane per project and replays the In Progress / Approved /
// Rejected events the webhooks lost through the very Handlers the webhook path calls; in sync, it stays silent.
// Paging is newest-updated first and stops at the project's horizon (the last pass's newest item minus the
// longest grace), with a full sweep on a slower cadence; the horizon is kept in the projects table.
// Not thread-safe: owned and called only by the reconciler thread (or one `orch reconcile --once`).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/facts.h"
#include "engine/pipeline.h"
#include "engine/store.h"
#include "reconciler/gate_side.h"
#include "webhooks/handlers/handlers.h"

namespace orch {

struct TrackerSideOptions {
  // Request budget of an incremental pass: work items visited per project (Plane allows 60 requests a minute per
  // key; pages hold up to 100 items, so 500 items is about 5 list requests plus the replays' own calls).
  int max_items_per_project = 500;
  // Handler replays per pass over all projects; the rest wait for the next pass (the horizon waits for them).
  int max_replays_per_pass = 100;
  // A full sweep (no horizon, no item budget) at least this often, and every N passes when N > 0.
  Seconds full_sweep_interval{std::chrono::hours(1)};
  int full_sweep_every_passes = 0;
  // A project whose work items cannot be listed (Plane down, 429 after the client's own retries) backs off.
  Seconds backoff_base{60};
  Seconds backoff_cap{std::chrono::minutes(30)};
};

struct TrackerSideReport {
  int projects = 0;         // projects listed this pass
  int projects_failed = 0;  // could not be listed, or their horizon not read / saved
  int full_sweeps = 0;
  int visited = 0;                 // work items in a configured state
  int young = 0;                   // updated inside the grace: the webhook may still be on its way
  int busy = 0;                    // its task has a queued or running job
  int in_sync = 0;                 // nothing to do
  int replayed = 0;                // handler calls made (or, in a dry run, that would be made)
  int failed = 0;                  // items whose replay failed (retried next pass)
  std::vector<Unblock> unblocked;  // replays that changed a stage (dry run: transitions it would make)
  std::string first_error;
  bool interrupted = false;  // keep_going() said stop (leadership lost): horizons were left where they were
};

class TrackerSide {
 public:
  // `store`'s ProjectStore role keeps each project's horizon (its bookmark).
  TrackerSide(const std::vector<ProjectSpec>& projects, const Pipeline& pipeline, Tracker& tracker, Handlers& handlers,
              StoreRoles<TaskStore, JobStore, ProjectStore> store, const Clock& clock, spdlog::logger& log,
              GraceFn grace, TrackerSideOptions options = {});

  // One pass over every project. Never throws: a failing project or item is logged and skipped. full_sweep forces a
  // sweep of every project (the CLI's --once); dry_run calls no handler and saves no horizon.
  // keep_going is asked before each project and each work item; false ends the pass at once, saving no horizon.
  // on_unblock, when set, hears each replay that changed a stage right after it was made.
  TrackerSideReport run_once(bool dry_run = false, bool full_sweep = false,
                             const std::function<bool()>& keep_going = {}, const UnblockListener& on_unblock = {});

 private:
  enum class Replay { kNone, kStart, kRecord, kApprove, kReject };
  struct ProjectPass;

  Status reconcile_project(const ProjectSpec& project, TimePoint now, bool dry_run, bool force_full,
                           TrackerSideReport& report);
  // Returns false when the pass must stop listing this project (replay budget spent).
  bool reconcile_item(const ProjectSpec& project, const WorkItem& item, TrackerState state, TimePoint now, bool dry_run,
                      ProjectPass& pass, TrackerSideReport& report);
  Status replay(const ProjectSpec& project, const WorkItem& item, Replay what, const std::optional<TaskRow>& task,
                bool dry_run, TrackerSideReport& report);
  Seconds longest_grace() const;

  const std::vector<ProjectSpec>& projects_;
  const Pipeline& pipeline_;
  Tracker& tracker_;
  Handlers& handlers_;
  TaskStore& tasks_;
  JobStore& jobs_;
  ProjectStore& bookmarks_;
  const Clock& clock_;
  spdlog::logger& log_;
  const GraceFn grace_;
  const TrackerSideOptions options_;
  RetryBackoff backoff_;                          // keyed by project name
  std::map<std::string, int> passes_since_full_;  // by project name
  int replays_this_pass_ = 0;
  const std::function<bool()>* keep_going_ = nullptr;  // set for the duration of run_once
  const UnblockListener* on_unblock_ = nullptr;        // likewise
  bool stopping() const { return keep_going_ && *keep_going_ && !(*keep_going_)(); }
};

}  // namespace orch
