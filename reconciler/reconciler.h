// reconciler/reconciler.h: ReconcilePass is one reconcile pass (switches, gate side, tracker side, sweeper, the
// unblock log line / notification / counters, the status snapshot); Reconciler runs it every interval on its own
// thread. ReconcilePass is not thread-safe (one caller: the thread, or `orch reconcile --once`); Reconciler's
// start()/stop() are for its owner only, poke() may be called from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/periodic.h"
#include "engine/leadership.h"
#include "engine/store.h"
#include "engine/telemetry.h"
#include "reconciler/gate_side.h"
#include "reconciler/sweeper.h"
#include "reconciler/tracker_side.h"

namespace orch {

// The start-up defaults (Settings::reconciler: env over config). The persisted switches in the settings table
// (`orch reconcile enable|disable [--plane]`, the admin endpoints) win over enabled / plane_enabled when present.
struct ReconcileDefaults {
  bool enabled = true;
  bool plane_enabled = true;
  bool notify_unblock = true;
  Seconds interval{60};  // only reported in the snapshot; the Reconciler thread takes its own interval
};

struct PassOptions {
  bool dry_run = false;     // evaluate and report each transition it would make; change nothing
  bool full_sweep = false;  // the tracker side ignores its horizons (the CLI's --once)
};

struct PassReport {
  bool enabled = false;  // the switches as this pass read them
  bool plane_enabled = false;
  bool ran = false;          // false: switched off, not the leader, or the switches could not be read
  bool leader = true;        // false: another replica leads, so this one did nothing
  bool interrupted = false;  // this replica stopped leading during the pass: the rest was left to the next leader
  GateSideReport gate;
  std::optional<TrackerSideReport> tracker;  // absent: switched off or no tracker side wired
  std::optional<SweepReport> sweep;          // absent: no sweeper wired, or a dry run
  std::vector<Unblock> unblocked;            // both sides, in order (a dry run: what it would do)
  std::string error;                         // the pass's first error, "" when none
  // Deliveries acknowledged but not yet handled when the pass began. While there are any, both sides wait: the
  // event is not lost, only queued, and replaying it now would report a lost webhook that was never lost.
  std::int64_t deferred_for_inbox = 0;

  // One line per entry of `unblocked`: "would advance SHOP-1 from development to review (ci success on 3f9a0c5)",
  // "would start SHOP-42 (created -> analysis)", "would approve SHOP-7 (analysis -> development)", ... In a real
  // pass the same lines without "would" ("advanced SHOP-1 ...").
  std::vector<std::string> lines(bool dry_run) const;
};

// What a pass works with; all outlive it.
struct ReconcileParts {
  // Settings: the kill switches, the snapshot. Outbox: a notification per unblock. Inbox: deliveries acknowledged but
  // not handled yet: while there are any, the sides wait.
  StoreRoles<SettingsStore, OutboxStore, InboxStore> store;
  GateSide& gate;
  TrackerSide* tracker = nullptr;  // genuinely optional: no Plane configured
  Sweeper* sweeper = nullptr;      // genuinely optional: sweeping done elsewhere (tests of one side)
  // A pass runs only on the leader and stops at once, between tasks, when this replica stops leading. One node (and
  // the CLI) passes SoleReplica, which always leads.
  const Leadership& leadership;
  Telemetry& telemetry = no_telemetry();  // told each unblock by side and stage, and each pass
};

class ReconcilePass {
 public:
  ReconcilePass(ReconcileParts parts, const Clock& clock, spdlog::logger& log, ReconcileDefaults defaults);

  // One pass. Never throws; each side contains its own failures. Reads the switches first (so a flip from another
  // process applies on the next pass); when enabled: gate side, tracker side if plane-enabled, then the sweeper.
  // Per unblock: one info log line "reconciler: <key> <stage> unblocked (lost webhook) via gate|tracker", one
  // outbox notification (dedup key "unblock:<task id>:<visit>") when notify_unblock, and unblocked_total and
  // last_unblocked of the snapshot updated, each at once. At the end, the rest of the snapshot JSON under
  // kSettingReconcileSnapshot. A dry run writes nothing at all (no snapshot, no sweep, no horizon).
  PassReport run_once(PassOptions options = {});

 private:
  bool read_switch(const char* key, bool fallback, bool& ok);
  void report_unblock(const Unblock& u, TimePoint now, PassReport& report);
  void count_unblock(const Unblock& u);
  void write_snapshot(TimePoint started, const PassReport& report);

  const ReconcileParts parts_;
  SettingsStore& settings_;
  OutboxStore& outbox_;
  InboxStore& inbox_;
  const Clock& clock_;
  spdlog::logger& log_;
  const ReconcileDefaults defaults_;
};

// Runs pass.run_once() every `interval` on its own thread (engine/periodic.h), from start() until stop(); poke()
// runs a pass now (e.g. after a kill switch was flipped through the admin endpoint). Started after the worker pool
// and stopped before it.
class Reconciler {
 public:
  Reconciler(ReconcilePass& pass, std::chrono::milliseconds interval, spdlog::logger& log);
  ~Reconciler() { stop(); }
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  void start() { periodic_.start(); }
  void stop() { periodic_.stop(); }  // idempotent; prompt (a condition variable, not a sleep); joins
  void poke() { periodic_.poke(); }
  bool running() const { return periodic_.running(); }
  // Steady-clock time the last pass started: readiness spots a stalled thread with it.
  std::chrono::steady_clock::time_point last_tick() const { return periodic_.last_tick(); }
  std::chrono::milliseconds interval() const { return periodic_.interval(); }

 private:
  void tick();

  ReconcilePass& pass_;
  spdlog::logger& log_;
  Periodic periodic_;  // last member: its thread stops before the others go
};

}  // namespace orch
