// DESIGN (F-2, the tracker side): a lost Plane webhook leaves a work item In Progress with no task, or Approved /
// Rejected while its task waits in a human stage. Plane is the source of truth, so each pass lists the project's
// work items (the Tracker filters to the configured states) and replays what the task has not seen through the
// Handlers, exactly as the inbox processor would: the create-claim and the stage CAS settle a race with a live
// webhook, and the handlers' own idempotency (the recorded tracker state) keeps a replay from applying a verdict
// twice. This file only decides *whether* to replay; what a replay means lives in webhooks/handlers/.
//
// Budget (Plane: 60 requests a minute per key, no state filter): an incremental pass lists newest-updated first and
// stops at the project's horizon minus the longest grace, so a quiet project costs one page. The horizon is the
// newest updated_at seen, held back to the oldest item this pass had to leave for later (inside its grace, busy,
// failed), so the next pass reaches it again. A full sweep (no horizon) runs on a slower cadence and catches what
// the horizon cannot (an item with no timestamp, a clock skew). Items visited and replays made are both capped.
#include "reconciler/tracker_side.h"

#include <algorithm>
#include <exception>

namespace orch {

struct TrackerSide::ProjectPass {
  bool full = false;
  std::optional<TimePoint> stop_before;      // incremental: items updated before this are behind the horizon
  std::optional<TimePoint> newest;           // newest updated_at seen
  std::optional<TimePoint> deferred_oldest;  // oldest updated_at of an item left for a later pass
  int visited = 0;
  bool budget_hit = false;
  bool interrupted = false;  // leadership lost mid-listing: save nothing

  void defer(const WorkItem& item) {
    if (item.updated_at && (!deferred_oldest || *item.updated_at < *deferred_oldest)) deferred_oldest = item.updated_at;
  }
};

TrackerSide::TrackerSide(const std::vector<ProjectSpec>& projects, const Pipeline& pipeline, Tracker& tracker,
                         Handlers& handlers, StoreRoles<TaskStore, JobStore, ProjectStore> store, const Clock& clock,
                         spdlog::logger& log, GraceFn grace, TrackerSideOptions options)
    : projects_(projects),
      pipeline_(pipeline),
      tracker_(tracker),
      handlers_(handlers),
      tasks_(store.get<TaskStore>()),
      jobs_(store.get<JobStore>()),
      bookmarks_(store.get<ProjectStore>()),
      clock_(clock),
      log_(log),
      grace_(std::move(grace)),
      options_(options),
      backoff_(options.backoff_base, options.backoff_cap) {}

Seconds TrackerSide::longest_grace() const {
  Seconds longest = grace_(std::string(Pipeline::kCreated));
  for (const StageSpec& s : pipeline_.stages()) longest = std::max(longest, grace_(s.name));
  return longest;
}

TrackerSideReport TrackerSide::run_once(bool dry_run, bool full_sweep, const std::function<bool()>& keep_going,
                                        const UnblockListener& on_unblock) {
  TrackerSideReport report;
  const TimePoint now = clock_.now();
  backoff_.prune(now);
  replays_this_pass_ = 0;
  keep_going_ = &keep_going;
  on_unblock_ = &on_unblock;
  struct Reset {
    TrackerSide& side;
    ~Reset() {
      side.keep_going_ = nullptr;
      side.on_unblock_ = nullptr;
    }
  } reset{*this};
  for (const ProjectSpec& project : projects_) {
    if (stopping()) {
      report.interrupted = true;
      break;
    }
    const std::string key = "project:" + project.name;
    if (backoff_.waiting(key, now)) {
      log_.debug("tracker side: project {} backing off", project.name);
      continue;
    }
    Status s;
    try {
      s = reconcile_project(project, now, dry_run, full_sweep, report);
    } catch (const std::exception& e) {  // escaped an adapter: one project, not the pass
      s = internal(e.what());
    }
    if (s.ok()) {
      backoff_.succeeded(key);
      continue;
    }
    ++report.projects_failed;
    const Seconds wait = backoff_.failed(key, now);
    log_.warn("tracker side: project {} skipped: {} (next try in {}s)", project.name, s.message, wait.count());
    if (report.first_error.empty()) report.first_error = "tracker side: project " + project.name + ": " + s.message;
  }
  return report;
}

Status TrackerSide::reconcile_project(const ProjectSpec& project, TimePoint now, bool dry_run, bool force_full,
                                      TrackerSideReport& report) {
  auto row = bookmarks_.find_project(project.name);
  if (!row.ok()) return row.status();
  const std::optional<ProjectRow>& old = row.value();
  const Seconds reach = longest_grace();
  int& since_full = passes_since_full_[project.name];

  ProjectPass pass;
  pass.full = force_full || !old || !old->tracker_horizon || !old->tracker_full_sweep ||
              now - *old->tracker_full_sweep >= options_.full_sweep_interval ||
              (options_.full_sweep_every_passes > 0 && since_full + 1 >= options_.full_sweep_every_passes);
  if (!pass.full) pass.stop_before = *old->tracker_horizon - reach;

  Status listed =
      tracker_.list_work_items(project, /*newest_first=*/true, [&](const WorkItem& item, TrackerState state) {
        if (stopping()) {
          pass.interrupted = true;
          return false;
        }
        if (!pass.full && pass.visited >= options_.max_items_per_project) {
          pass.budget_hit = true;
          return false;
        }
        if (pass.stop_before && item.updated_at && *item.updated_at < *pass.stop_before) return false;  // horizon
        ++pass.visited;
        ++report.visited;
        if (item.updated_at && (!pass.newest || *item.updated_at > *pass.newest)) pass.newest = item.updated_at;
        try {
          return reconcile_item(project, item, state, now, dry_run, pass, report);
        } catch (const std::exception& e) {  // one item, not the project
          ++report.failed;
          pass.defer(item);
          log_.warn("tracker side: {} work item {} skipped: {}", project.name, item.id, e.what());
          if (report.first_error.empty()) report.first_error = "tracker side: work item " + item.id + ": " + e.what();
          return true;
        }
      });
  ++report.projects;
  if (pass.full) ++report.full_sweeps;
  if (!listed.ok()) return listed;  // the horizon stays where it was: the next pass covers this one's ground
  if (pass.interrupted) {           // whoever leads next covers this ground again from the old horizon
    report.interrupted = true;
    return {};
  }
  if (dry_run) return {};
  if (pass.budget_hit) {  // stopped before the horizon: keep it, so the next pass reaches back as far again
    if (!pass.full) ++since_full;
    return {};
  }

  // Re-read: the row may have gained its plane identifier meanwhile; only the tracker fields are ours.
  auto fresh = bookmarks_.find_project(project.name);
  if (!fresh.ok()) return fresh.status();
  ProjectRow next = fresh.value().value_or(ProjectRow{project.name, "", std::nullopt, std::nullopt});
  const std::optional<TimePoint> before = next.tracker_horizon;
  TimePoint horizon = pass.newest.value_or(before.value_or(now));
  if (!pass.full && before) horizon = std::max(horizon, *before);
  if (pass.deferred_oldest) horizon = std::min(horizon, *pass.deferred_oldest + reach);
  next.tracker_horizon = horizon;
  if (pass.full) {
    next.tracker_full_sweep = now;
    since_full = 0;
  } else {
    ++since_full;
  }
  // Silence when in sync: an unchanged horizon is not rewritten.
  if (fresh.value() && before == next.tracker_horizon && fresh.value()->tracker_full_sweep == next.tracker_full_sweep)
    return {};
  return bookmarks_.save_project(next);
}

bool TrackerSide::reconcile_item(const ProjectSpec& project, const WorkItem& item, TrackerState state, TimePoint now,
                                 bool dry_run, ProjectPass& pass, TrackerSideReport& report) {
  auto fail = [&](const Status& s) {
    ++report.failed;
    pass.defer(item);
    const Seconds wait = backoff_.failed("item:" + item.id, now);
    if (s.code == Code::kUnavailable)
      log_.debug("tracker side: {} work item {} not replayed: {} (next try in {}s)", project.name, item.id, s.message,
                 wait.count());
    else
      log_.warn("tracker side: {} work item {} skipped: {} (next try in {}s)", project.name, item.id, s.message,
                wait.count());
    if (report.first_error.empty()) report.first_error = "tracker side: work item " + item.id + ": " + s.message;
    return true;
  };

  auto found = tasks_.find_task_by_work_item(item.id);
  if (!found.ok()) return fail(found.status());
  const std::optional<TaskRow>& task = found.value();
  if (task && task->project != project.name) {  // not this project's task (a misconfiguration): not ours to move
    ++report.in_sync;
    return true;
  }

  // Missing or unparseable updated_at counts as old enough: the create-claim and the verdict's recorded tracker
  // state still keep a replay from doubling anything.
  const std::string stage = task ? task->stage : std::string(Pipeline::kCreated);
  if (item.updated_at && !(*item.updated_at < now - grace_(stage))) {
    ++report.young;
    pass.defer(item);
    return true;
  }
  if (task) {
    auto jobs = jobs_.jobs_for_task(task->id);
    if (!jobs.ok()) return fail(jobs.status());
    for (const JobRow& j : jobs.value()) {
      if (j.status == JobStatus::kQueued || j.status == JobStatus::kRunning) {  // the agent's finish looks again
        ++report.busy;
        pass.defer(item);
        return true;
      }
    }
  }

  Replay what = Replay::kNone;
  if (state == TrackerState::kInProgress) {
    if (!task || task->stage == Pipeline::kCreated)
      what = Replay::kStart;  // no task, or a claim left in created
    else if (!item.state_id.empty() && task->tracker_state != item.state_id)
      what = Replay::kRecord;
  } else if (task && (state == TrackerState::kApproved || state == TrackerState::kRejected)) {
    const StageSpec* spec = pipeline_.stage(task->stage);
    const bool already = !item.state_id.empty() && task->tracker_state == item.state_id;
    if (spec && is_human_stage(*spec) && !already)
      what = state == TrackerState::kApproved ? Replay::kApprove : Replay::kReject;
  }
  if (what == Replay::kNone) {
    ++report.in_sync;
    return true;
  }
  if (backoff_.waiting("item:" + item.id, now)) {
    pass.defer(item);
    return true;
  }
  if (replays_this_pass_ >= options_.max_replays_per_pass) {
    pass.budget_hit = true;
    pass.defer(item);
    return false;
  }
  ++replays_this_pass_;
  if (Status s = replay(project, item, what, task, dry_run, report); !s.ok()) return fail(s);
  backoff_.succeeded("item:" + item.id);
  return true;
}

Status TrackerSide::replay(const ProjectSpec& project, const WorkItem& item, Replay what,
                           const std::optional<TaskRow>& task, bool dry_run, TrackerSideReport& report) {
  const std::string from = task ? task->stage : std::string(Pipeline::kCreated);
  const char* action = what == Replay::kApprove ? "approve" : what == Replay::kReject ? "reject" : "start";
  const char* state = what == Replay::kApprove  ? "approved in Plane"
                      : what == Replay::kReject ? "rejected in Plane"
                                                : "in progress in Plane";
  if (dry_run) {
    if (what == Replay::kRecord) return {};  // remembers the tracker state; no transition to report
    std::optional<std::string> to;
    if (what == Replay::kStart)
      to = pipeline_.first_working_stage();
    else if (what == Replay::kApprove)
      to = pipeline_.next(from);
    else
      to = pipeline_.rollback_target(from, Rollback::kReject);
    if (!to) return {};  // the handler would only record the state
    ++report.replayed;
    std::string key;
    if (task) {
      key = task->work_item_key;
    } else {
      auto identifier = tracker_.project_identifier(project);
      key = identifier.ok() ? identifier.value() + "-" + std::to_string(item.sequence_id) : item.id;
    }
    report.unblocked.push_back(
        {task ? task->id : 0, key, from, *to, task ? task->visit + 1 : 2, "tracker", action, state});
    return {};
  }

  ++report.replayed;
  Result<HandleOutcome> outcome = [&]() -> Result<HandleOutcome> {
    switch (what) {
      case Replay::kStart:
      case Replay::kRecord: return handlers_.handle_status_start(project, item, Cause::kReconciler);
      case Replay::kApprove: return handlers_.handle_verdict(project, item, true, "", Cause::kReconciler);
      case Replay::kReject:
        return handlers_.handle_verdict(project, item, false, "rejected in Plane", Cause::kReconciler);
      case Replay::kNone: break;
    }
    return HandleOutcome::ignored("nothing to replay");
  }();
  if (!outcome.ok()) return outcome.status();
  if (outcome.value().kind != HandleOutcome::Kind::kChanged) {  // a live webhook won, or it was in sync after all
    log_.debug("tracker side: {} {}: {}", action, item.id, outcome.value().reason);
    return {};
  }
  auto after = tasks_.find_task(outcome.value().task_id);
  if (!after.ok()) return after.status();
  if (!after.value()) return internal("task " + std::to_string(outcome.value().task_id) + " vanished after a replay");
  report.unblocked.push_back({after.value()->id, after.value()->work_item_key, from, after.value()->stage,
                              after.value()->visit, "tracker", action, outcome.value().reason});
  if (on_unblock_ && *on_unblock_) (*on_unblock_)(report.unblocked.back());
  return {};
}

}  // namespace orch
