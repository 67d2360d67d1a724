// Why it is built this way: one pass = switches -> gate side -> tracker side -> sweeper -> what an operator sees. The
// sides decide and act; this file only makes their unblocks visible (a log line, an outbox notification whose dedup key
// names the one transition, so a repeated pass or a second process cannot double it) and keeps the snapshot that /queue
// and `orch status` read. The switches are re-read from the settings table every pass, so `orch reconcile disable` run
// against the same database takes effect on the server's next pass without a restart.
#include "reconciler/reconciler.h"

#include <exception>
#include <optional>

#include <nlohmann/json.hpp>

// Only for the setting keys, which /queue.json and the kill-switch CLI share with us (header-only constants).
#include "engine/setting_keys.h"
#include "integrations/telegram_notifier.h"

namespace orch {

std::vector<std::string> PassReport::lines(bool dry_run) const {
  std::vector<std::string> out;
  for (const Unblock& u : unblocked) {
    std::string verb;
    if (u.action == "advance")
      verb = dry_run ? "would advance" : "advanced";
    else if (u.action == "start")
      verb = dry_run ? "would start" : "started";
    else if (u.action == "approve")
      verb = dry_run ? "would approve" : "approved";
    else
      verb = dry_run ? "would reject" : "rejected";
    if (u.action == "advance")
      out.push_back(verb + " " + u.work_item_key + " from " + u.from + " to " + u.to + " (" + u.why + ") via " + u.via);
    else
      out.push_back(verb + " " + u.work_item_key + " (" + u.from + " -> " + u.to + ") via " + u.via);
  }
  return out;
}

ReconcilePass::ReconcilePass(ReconcileParts parts, const Clock& clock, spdlog::logger& log, ReconcileDefaults defaults)
    : parts_(parts),
      settings_(parts.store.get<SettingsStore>()),
      outbox_(parts.store.get<OutboxStore>()),
      inbox_(parts.store.get<InboxStore>()),
      clock_(clock),
      log_(log),
      defaults_(defaults) {}

bool ReconcilePass::read_switch(const char* key, bool fallback, bool& ok) {
  auto v = settings_.get_setting(key);
  if (!v.ok()) {
    ok = false;
    log_.warn("reconciler: cannot read {}: {}; skipping this pass", key, v.status().message);
    return false;
  }
  if (!v.value()) return fallback;
  const std::string& s = *v.value();
  if (s == "1" || s == "true") return true;
  if (s == "0" || s == "false") return false;
  log_.warn("reconciler: {} is '{}', not 1 or 0; using the start-up default", key, s);
  return fallback;
}

PassReport ReconcilePass::run_once(PassOptions options) {
  PassReport report;
  const std::function<bool()> leading = [this] { return parts_.leadership.is_leader(); };
  if (!leading()) {  // another replica reconciles; this one only serves webhooks and runs jobs
    report.leader = false;
    return report;
  }
  const TimePoint started = clock_.now();
  bool ok = true;
  report.enabled = read_switch(kSettingReconcileEnabled, defaults_.enabled, ok);
  report.plane_enabled = ok && read_switch(kSettingReconcilePlaneEnabled, defaults_.plane_enabled, ok);
  // Unsure whether the operator switched us off: do nothing rather than override a kill switch.
  if (!ok || !report.enabled) return report;
  report.ran = true;
  auto note = [&](const std::string& error) {
    if (report.error.empty() && !error.empty()) report.error = error;
  };

  // The webhook path is behind, not broken: what is pending in the inbox will be handled through the same
  // handlers. Reconciling now would race it and count its events as lost. The inbox drains on its own (a failing
  // delivery ends as failed after its retries), so this defers the sides by at most that long.
  {
    auto counts = inbox_.inbox_counts();
    if (!counts.ok()) {
      note("inbox: " + counts.status().message);
    } else if (counts.value().pending > 0) {
      report.deferred_for_inbox = counts.value().pending;
      log_.debug("reconciler: {} deliveries pending in the inbox; gate and tracker sides wait",
                 report.deferred_for_inbox);
    }
  }
  const bool sides = report.deferred_for_inbox == 0;

  // Each transition is made visible the moment it is made, not at the end of the pass: a replica killed in the
  // middle of a long pass has queued the notification of every transition but (at most) the one in flight.
  UnblockListener on_unblock;
  if (!options.dry_run) on_unblock = [&](const Unblock& u) { report_unblock(u, clock_.now(), report); };

  if (sides) try {
      report.gate = parts_.gate.run_once(options.dry_run, leading, on_unblock);
    } catch (const std::exception& e) {
      log_.warn("reconciler: gate side failed: {}", e.what());
      note(std::string("gate side: ") + e.what());
    }
  note(report.gate.first_error);
  for (const Unblock& u : report.gate.unblocked) report.unblocked.push_back(u);

  if (sides && parts_.tracker && report.plane_enabled && leading()) {
    try {
      report.tracker = parts_.tracker->run_once(options.dry_run, options.full_sweep, leading, on_unblock);
      note(report.tracker->first_error);
      for (const Unblock& u : report.tracker->unblocked) report.unblocked.push_back(u);
    } catch (const std::exception& e) {
      log_.warn("reconciler: tracker side failed: {}", e.what());
      note(std::string("tracker side: ") + e.what());
    }
  }

  report.interrupted = report.gate.interrupted || (report.tracker && report.tracker->interrupted) || !leading();
  if (report.interrupted) log_.warn("reconciler: this replica stopped leading during the pass; the pass stops here");
  if (options.dry_run) return report;  // changes nothing: no sweep, no notification, no snapshot

  // What was done was reported as it happened (on_unblock), even when leadership was lost: the transitions happened.
  if (parts_.sweeper && !report.interrupted) {
    try {
      report.sweep = parts_.sweeper->run_once();
      if (report.sweep->errors > 0) note("sweeper: " + std::to_string(report.sweep->errors) + " rule(s) failed");
    } catch (const std::exception& e) {
      log_.warn("reconciler: sweeper failed: {}", e.what());
      note(std::string("sweeper: ") + e.what());
    }
  }
  write_snapshot(started, report);
  {
    const char* outcome = report.interrupted ? "interrupted" : report.error.empty() ? "ok" : "error";
    parts_.telemetry.reconcile_pass(outcome, std::chrono::duration<double>(clock_.now() - started).count());
  }
  return report;
}

void ReconcilePass::report_unblock(const Unblock& u, TimePoint now, PassReport& report) {
  log_.info("reconciler: {} {} unblocked (lost webhook) via {}", u.work_item_key, u.from, u.via);
  parts_.telemetry.unblocked(u.via, u.from);
  count_unblock(u);
  if (!defaults_.notify_unblock) return;
  const std::string key = "unblock:" + std::to_string(u.task_id) + ":" + std::to_string(u.visit);
  // Plain text: the outbox stores it as is and the sender escapes it (integrations/telegram_notifier.h).
  const std::string text = u.work_item_key + " unblocked (lost webhook): " + u.from + " → " + u.to + " via " + u.via;
  auto queued = outbox_.enqueue_notification(key, text, now);
  if (!queued.ok()) {
    log_.warn("reconciler: cannot queue the unblock notification for {}: {}", u.work_item_key, queued.status().message);
    if (report.error.empty()) report.error = "notification for " + u.work_item_key + ": " + queued.status().message;
  }
}

namespace {

// The stored snapshot as an object ({} when absent or unreadable as JSON); nullopt when the store cannot be read.
std::optional<nlohmann::json> read_snapshot(SettingsStore& settings, spdlog::logger& log) {
  auto previous = settings.get_setting(kSettingReconcileSnapshot);
  if (!previous.ok()) {
    log.warn("reconciler: cannot read the status snapshot: {}", previous.status().message);
    return std::nullopt;
  }
  nlohmann::json old =
      previous.value() ? nlohmann::json::parse(*previous.value(), nullptr, false) : nlohmann::json::object();
  return old.is_object() ? old : nlohmann::json::object();
}

}  // namespace

// The total survives restarts and is shared with `orch reconcile --once`: read, add, write, at each unblock, so
// that a replica killed in the middle of a pass has counted every transition it made but (at most) the one in flight.
void ReconcilePass::count_unblock(const Unblock& u) {
  auto snap = read_snapshot(settings_, log_);
  if (!snap) return;
  (*snap)["unblocked_total"] = snap->value("unblocked_total", 0LL) + 1;
  (*snap)["last_unblocked"] = u.work_item_key;
  if (Status s = settings_.set_setting(kSettingReconcileSnapshot, snap->dump()); !s.ok())
    log_.warn("reconciler: cannot count the unblock of {} in the status snapshot: {}", u.work_item_key, s.message);
}

void ReconcilePass::write_snapshot(TimePoint started, const PassReport& report) {
  using nlohmann::json;
  auto old = read_snapshot(settings_, log_);
  if (!old) return;
  // Already counted, one by one, by count_unblock().
  const long long total = old->value("unblocked_total", 0LL);
  const json last_unblocked = old->contains("last_unblocked") ? (*old)["last_unblocked"] : json(nullptr);

  const auto duration = std::chrono::duration<double>(clock_.now() - started).count();
  json snap = {{"last_pass_started_at", format_rfc3339(started)},
               {"last_pass_duration_s", duration},
               {"unblocked_total", total},
               {"last_unblocked", last_unblocked},
               {"last_error", report.error.empty() ? json(nullptr) : json(report.error)},
               {"interval_s", static_cast<long long>(defaults_.interval.count())}};
  if (Status s = settings_.set_setting(kSettingReconcileSnapshot, snap.dump()); !s.ok())
    log_.warn("reconciler: cannot write the status snapshot: {}", s.message);
}

Reconciler::Reconciler(ReconcilePass& pass, std::chrono::milliseconds interval, spdlog::logger& log)
    : pass_(pass), log_(log), periodic_("reconciler", interval, [this] { tick(); }) {}

void Reconciler::tick() {
  try {
    (void)pass_.run_once();
  } catch (const std::exception& e) {  // run_once contains its failures; this keeps the thread alive regardless
    log_.error("reconciler: pass failed: {}", e.what());
  }
}

}  // namespace orch
