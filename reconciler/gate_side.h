// reconciler/gate_side.h: GateSide (F-1) advances tasks idle past their stage's grace whose gates are green.
// It goes through StageEngine::advance_if_gate_passed() (so through advance_stage(), with expected_from: a racing
// webhook wins cleanly), never advances a human stage, and writes and logs nothing when nothing changed.
// Not thread-safe: owned and called only by the reconciler thread (or one `orch reconcile --once`).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/pipeline.h"
#include "engine/stage_engine.h"
#include "engine/store.h"

namespace orch {

// The grace of a stage (Settings::grace_for in the app: override, else the stage's own, else the default).
using GraceFn = std::function<Seconds(const std::string& stage)>;

// One transition the reconciler made (or, in a dry run, would make): a lost event recovered.
struct Unblock {
  TaskId task_id = 0;         // 0 in a dry run of a start: the task does not exist yet
  std::string work_item_key;  // e.g. SHOP-42
  std::string from;           // the stage it was stuck in ("created" for a start)
  std::string to;
  int visit = 0;       // the task's visit after the transition: with task_id, names this one transition
  std::string via;     // "gate" or "tracker"
  std::string action;  // "advance", "start", "approve", "reject"
  std::string why;     // the gate's reason or the tracker state
};

// Told each transition the moment it is made (not in a dry run), so what it triggers (the unblock notification)
// is queued before the next task is touched: a replica killed mid-pass loses at most the one in flight.
using UnblockListener = std::function<void(const Unblock&)>;

// Per-key exponential backoff on the injected clock, in memory: failure n waits min(cap, base * 2^(n-1)).
// A restart forgets it, which only costs one early retry.
class RetryBackoff {
 public:
  RetryBackoff(Seconds base, Seconds cap) : base_(base), cap_(cap) {}
  bool waiting(const std::string& key, TimePoint now) const;
  Seconds failed(const std::string& key, TimePoint now);  // records a failure; returns the wait before the next try
  void succeeded(const std::string& key) { entries_.erase(key); }
  // Forgets keys whose wait ended more than a cap ago (a task that finished, a project removed from the config).
  void prune(TimePoint now);
  std::size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    int failures = 0;
    TimePoint until{};
  };
  Seconds base_, cap_;
  std::map<std::string, Entry> entries_;
};

struct GateSideOptions {
  // Gate evaluations per pass (each costs Gitea requests). The scan resumes at its cursor on the next pass, so a
  // thousand idle tasks are spread over passes instead of hitting Gitea in one burst. Evaluations are sequential.
  int max_candidates_per_pass = 500;
  Seconds backoff_base{60};
  Seconds backoff_cap{std::chrono::minutes(30)};
};

struct GateSideReport {
  int scanned = 0;                 // idle rows read from the store
  int evaluated = 0;               // gate pre-evaluations made
  int red = 0;                     // evaluated and red: silence
  int skipped = 0;                 // human stage, no gate, blocked, inside its grace, active job
  int backing_off = 0;             // skipped because an earlier evaluation failed and its backoff has not run out
  int failed = 0;                  // evaluation or advance errors (each backs off)
  std::vector<Unblock> unblocked;  // advanced (dry run: would advance)
  std::string first_error;         // for the snapshot's last_error; "" when none
  bool interrupted = false;        // keep_going() said stop (leadership lost) before the pass was done
};

class GateSide {
 public:
  // The red verdicts of a pass are recorded in `evaluations` at its end, in one transaction (not in a dry run): what
  // /queue.json's `waiting` reports.
  GateSide(StoreRoles<TaskStore, JobStore, GateEvaluationStore> store, StageEngine& engine, const Clock& clock,
           spdlog::logger& log, GraceFn grace, GateSideOptions options = {});

  // One bounded pass. Never throws: a failing task is logged, backed off and skipped. With dry_run it evaluates
  // and reports what it would advance, and writes nothing.
  // keep_going is asked before each task; false ends the pass at once (this replica stopped leading).
  // on_unblock, when set, hears each advance right after it was made (before the next task).
  GateSideReport run_once(bool dry_run = false, const std::function<bool()>& keep_going = {},
                          const UnblockListener& on_unblock = {});

 private:
  Status reconcile_one(const TaskRow& task, TimePoint now, bool dry_run, GateSideReport& report,
                       const UnblockListener& on_unblock);

  TaskStore& tasks_;
  JobStore& jobs_;
  GateEvaluationStore& evaluations_;
  std::vector<GateEvaluation> verdicts_;  // this pass's red verdicts, recorded at its end
  StageEngine& engine_;
  const Pipeline& pipeline_;
  const Clock& clock_;
  spdlog::logger& log_;
  const GraceFn grace_;
  const GateSideOptions options_;
  IdleCursor cursor_;     // where the next pass resumes the idle scan; {} = from the oldest
  RetryBackoff backoff_;  // keyed by task id
};

}  // namespace orch
