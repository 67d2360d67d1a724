// DESIGN (F-1, the gate side): a lost CI / pull-request webhook leaves a task idle in a stage whose gate is green.
// Each pass scans the idle tasks (non-terminal, no queued or running job) oldest first from a cursor, and for each
// one past its own stage's grace pre-evaluates the stage's gate, read-only. Green: advance_stage() with
// expected_from = the stage just evaluated, so a webhook that moved the task meanwhile wins and we get a silent
// kConflict. Red: nothing at all (the common case: most idle tasks are waiting on CI or a reviewer). An error
// (Gitea down): the task backs off exponentially, and a run of them ends the pass early, so a dead dependency sees
// a handful of requests per pass instead of one per idle task.
//
// Idle is measured from the later of the task's updated_at and its last job's finish: an agent that ran for an
// hour leaves updated_at an hour old, yet the CI it triggered may be seconds old and its webhook still on the way.
#include "reconciler/gate_side.h"

#include <algorithm>
#include <exception>

namespace orch {
namespace {

// Consecutive unreadable gates after which a pass stops evaluating: the dependency is down, not one task broken.
constexpr int kUnavailableRunToStop = 3;
// Idle rows a pass may read (skipped ones included) per evaluation it may make: bounds the store work when most
// idle tasks sit in human stages.
constexpr int kScanFactor = 4;

}  // namespace

bool RetryBackoff::waiting(const std::string& key, TimePoint now) const {
  auto it = entries_.find(key);
  return it != entries_.end() && now < it->second.until;
}

Seconds RetryBackoff::failed(const std::string& key, TimePoint now) {
  Entry& e = entries_[key];
  ++e.failures;
  Seconds wait = base_;
  for (int i = 1; i < e.failures && wait < cap_; ++i) wait *= 2;
  wait = std::min(wait, cap_);
  e.until = now + wait;
  return wait;
}

void RetryBackoff::prune(TimePoint now) {
  std::erase_if(entries_, [&](const auto& kv) { return kv.second.until + cap_ < now; });
}

GateSide::GateSide(StoreRoles<TaskStore, JobStore, GateEvaluationStore> store, StageEngine& engine, const Clock& clock,
                   spdlog::logger& log, GraceFn grace, GateSideOptions options)
    : tasks_(store.get<TaskStore>()),
      jobs_(store.get<JobStore>()),
      evaluations_(store.get<GateEvaluationStore>()),
      engine_(engine),
      pipeline_(engine.pipeline()),
      clock_(clock),
      log_(log),
      grace_(std::move(grace)),
      options_(options),
      backoff_(options.backoff_base, options.backoff_cap) {}

GateSideReport GateSide::run_once(bool dry_run, const std::function<bool()>& keep_going,
                                  const UnblockListener& on_unblock) {
  GateSideReport report;
  const TimePoint now = clock_.now();
  backoff_.prune(now);

  // Only stages the gate side may move bound the scan: the shortest of their graces.
  std::optional<Seconds> shortest;
  for (const StageSpec& s : pipeline_.stages())
    if (s.gate && !is_human_stage(s)) shortest = std::min(shortest.value_or(grace_(s.name)), grace_(s.name));
  if (!shortest) return report;  // no stage with a machine gate: nothing is ever ours to advance

  const int cap = std::max(1, options_.max_candidates_per_pass);
  const int max_scanned = cap * kScanFactor;
  int unavailable_run = 0;
  int unavailable = 0;
  std::string first_unavailable;
  bool stop = false;
  while (!stop && report.evaluated < cap && report.scanned < max_scanned) {
    auto page = tasks_.idle_tasks(now - *shortest, cursor_, cap);
    if (!page.ok()) {  // the pass cannot go on: say so once, and the next pass tries again from the same cursor
      log_.warn("gate side: cannot list idle tasks: {}", page.status().message);
      report.first_error = "gate side: cannot list idle tasks: " + page.status().message;
      break;
    }
    std::size_t done = 0;
    for (const TaskRow& task : page.value()) {
      if (report.evaluated >= cap || report.scanned >= max_scanned || unavailable_run >= kUnavailableRunToStop) {
        stop = true;
        break;
      }
      if (keep_going && !keep_going()) {  // the cursor stays here: whoever leads next resumes from it
        report.interrupted = true;
        stop = true;
        break;
      }
      ++done;
      ++report.scanned;
      cursor_ = {task.updated_at, task.id};
      const int evaluated_before = report.evaluated;
      Status s;
      try {
        s = reconcile_one(task, now, dry_run, report, on_unblock);
      } catch (const std::exception& e) {  // escaped an adapter: one task, not the pass
        s = internal(e.what());
      }
      if (s.ok()) {
        if (report.evaluated > evaluated_before) unavailable_run = 0;
        continue;
      }
      ++report.failed;
      const Seconds wait = backoff_.failed(std::to_string(task.id), now);
      const std::string what = task.work_item_key + ": " + s.message;
      if (report.first_error.empty()) report.first_error = "gate side: " + what;
      if (s.code == Code::kUnavailable) {
        ++unavailable_run;
        if (unavailable++ == 0) first_unavailable = what;
        log_.debug("gate side: {} not evaluated, next try in {}s", what, wait.count());
      } else {
        unavailable_run = 0;
        log_.warn("gate side: task {} skipped: {} (next try in {}s)", task.work_item_key, s.message, wait.count());
      }
    }
    if (stop) break;
    if (done == page.value().size() && static_cast<int>(page.value().size()) < cap) {
      cursor_ = {};  // reached the newest idle task: the next pass starts again from the oldest
      break;
    }
  }
  // What each red task waits for, as the reconciler saw it. A failed write only leaves /queue.json's reason older.
  if (Status recorded = evaluations_.record_gate_evaluations(verdicts_); !recorded.ok())
    log_.warn("gate side: {} red verdict(s) not recorded: {}", verdicts_.size(), recorded.message);
  verdicts_.clear();
  if (unavailable > 0)
    log_.warn("gate side: {} task(s) could not be evaluated (first: {}); each backs off{}", unavailable,
              first_unavailable, unavailable_run >= kUnavailableRunToStop ? ", pass cut short" : "");
  return report;
}

Status GateSide::reconcile_one(const TaskRow& task, TimePoint now, bool dry_run, GateSideReport& report,
                               const UnblockListener& on_unblock) {
  const StageSpec* spec = pipeline_.stage(task.stage);
  // created has no StageSpec (the tracker side replays its start); a stage without a gate has nothing to read;
  // a human stage moves only on a tracker verdict; a blocked task waits for an operator.
  if (!spec || !spec->gate || is_human_stage(*spec) || task.blocked) {
    ++report.skipped;
    return {};
  }
  auto jobs = jobs_.jobs_for_task(task.id);
  if (!jobs.ok()) return jobs.status();
  TimePoint idle_since = task.updated_at;
  for (const JobRow& j : jobs.value()) {
    if (j.status == JobStatus::kQueued || j.status == JobStatus::kRunning) {  // started since the scan
      ++report.skipped;
      return {};
    }
    if (j.finished_at && *j.finished_at > idle_since) idle_since = *j.finished_at;
  }
  if (!(idle_since < now - grace_(task.stage))) {  // still inside its grace: the webhook may be on its way
    ++report.skipped;
    return {};
  }
  const std::string key = std::to_string(task.id);
  if (backoff_.waiting(key, now)) {
    ++report.backing_off;
    return {};
  }

  ++report.evaluated;
  auto gate = engine_.evaluate_gate(task);
  if (!gate.ok()) return gate.status();
  backoff_.succeeded(key);
  if (!gate.value().green) {
    ++report.red;
    log_.debug("gate side: {} stays in {}: {}", task.work_item_key, task.stage, gate.value().why);
    if (!dry_run) verdicts_.push_back({task.id, task.stage, task.visit, false, gate.value().why, now});
    return {};
  }
  const std::optional<std::string> next = pipeline_.next(task.stage);
  if (!next) return invalid("stage " + task.stage + " has no next stage");
  if (dry_run) {
    report.unblocked.push_back(
        {task.id, task.work_item_key, task.stage, *next, task.visit + 1, "gate", "advance", gate.value().why});
    return {};
  }

  // The row we evaluated may be stale by now. The stage CAS (expected_from) settles a racing webhook; the visit
  // check also catches a task that left this stage and came back to it (a rollback) since the scan.
  auto current = tasks_.find_task(task.id);
  if (!current.ok()) return current.status();
  if (!current.value() || current.value()->stage != task.stage || current.value()->visit != task.visit) {
    log_.debug("gate side: {} moved while its gate was read; leaving it", task.work_item_key);
    return {};
  }
  AdvanceRequest request;
  request.cause = Cause::kReconciler;
  request.to = *next;
  request.expected_from = task.stage;
  request.detail = gate.value().why;
  auto moved = engine_.advance_stage(task.id, request);
  if (!moved.ok()) {
    if (moved.status().code == Code::kConflict) {  // a webhook won the race: it did our job
      log_.debug("gate side: {} already moved: {}", task.work_item_key, moved.status().message);
      return {};
    }
    return moved.status();
  }
  report.unblocked.push_back({task.id, moved.value().work_item_key, task.stage, moved.value().stage,
                              moved.value().visit, "gate", "advance", gate.value().why});
  if (on_unblock) on_unblock(report.unblocked.back());
  return {};
}

}  // namespace orch
