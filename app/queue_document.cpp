#include "app/queue_document.h"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "app/runner_registry.h"
#include "engine/budget.h"

namespace orch {
namespace {

using nlohmann::json;

json time_or_null(const std::optional<TimePoint>& t) { return t ? json(format_rfc3339(*t)) : json(nullptr); }

}  // namespace

json queue_task_json(const TaskRow& t) {
  return {{"id", t.id},
          {"project", t.project},
          {"work_item_id", t.work_item_id},
          {"work_item_key", t.work_item_key},
          {"title", t.title},
          {"stage", t.stage},
          {"blocked", t.blocked},
          {"blocked_reason", t.blocked ? json(t.blocked_reason) : json(nullptr)},
          {"branch", t.branch},
          {"pr_number", t.pr_number ? json(*t.pr_number) : json(nullptr)},
          {"pr_state", pr_state_name(t.pr_state)},
          {"head_sha", t.head_sha.empty() ? json(nullptr) : json(t.head_sha)},
          {"rejection_reason", t.rejection_reason.empty() ? json(nullptr) : json(t.rejection_reason)},
          {"entered_stage_at", format_rfc3339(t.entered_stage_at)},
          {"created_at", format_rfc3339(t.created_at)},
          {"updated_at", format_rfc3339(t.updated_at)},
          // Spend budgets (docs/adr/0021).
          {"spend_usd", micros_to_usd(t.spend)},
          {"budget_raise_usd", micros_to_usd(t.budget_raise)},
          {"budget_hold", t.budget_hold.empty() ? json(nullptr) : json(t.budget_hold)}};
}

json queue_job_json(const JobRow& j) {
  return {{"id", j.id},
          {"task_id", j.task_id},
          {"visit", j.visit},
          {"stage", j.stage},
          {"agent", j.agent},
          {"status", job_status_name(j.status)},
          {"attempt", j.attempt},
          {"created_at", format_rfc3339(j.created_at)},
          {"started_at", time_or_null(j.started_at)},
          {"heartbeat_at", time_or_null(j.heartbeat_at)},
          {"finished_at", time_or_null(j.finished_at)},
          {"error", j.error.empty() ? json(nullptr) : json(j.error)},
          // The follow-up steps after the agent exited 0 (ADR 0010): "" before; always strings and an int.
          {"step", j.step},
          {"step_attempts", j.step_attempts},
          {"step_error", j.step_error},
          // What its agent's runs reported in usage.json (docs/adr/0021); 0 and "" when nothing.
          {"cost_usd", micros_to_usd(j.cost)},
          {"tokens_in", j.tokens_in},
          {"tokens_out", j.tokens_out},
          {"model", j.model},
          // Who holds it (a worker id, or a runner's claim "runner:<name>/…"); "" when queued.
          {"worker", j.worker},
          // A person's cancel (docs/adr/0023): why, or null.
          {"cancel_requested", j.cancel_requested.empty() ? json(nullptr) : json(j.cancel_requested)},
          // When its runner said the agent's process started (null before, and on the server's own pool).
          {"launched_at", time_or_null(j.launched_at)}};
}

json queue_transition_json(const TransitionRow& t) {
  return {{"task_id", t.task_id},
          {"work_item_key", t.work_item_key},
          {"from", t.from},
          {"to", t.to},
          {"cause", cause_name(t.cause)},
          {"detail", t.detail},
          {"at", format_rfc3339(t.at)}};
}

json queue_ledger_json(const LedgerEntry& e) {
  return {{"source", source_name(e.source)},
          {"delivery_id", e.delivery_id},
          {"event", e.event},
          {"outcome", e.duplicate ? "duplicate" : delivery_status_name(e.status)},
          {"detail", e.detail},
          {"duplicate_of", e.duplicate ? json(e.duplicate_of) : json(nullptr)},
          {"attempts", e.attempts},
          {"task_id", e.task_id ? json(e.task_id) : json(nullptr)},
          {"work_item_key", e.work_item_key.empty() ? json(nullptr) : json(e.work_item_key)},
          {"received_at", format_rfc3339(e.received_at)},
          {"handled_at", time_or_null(e.handled_at)}};
}

namespace {

// A write-back's row, without its text: the text holds tracker titles and agent output (attacker-influenced and
// possibly long); the operator needs to know which write it is, not its words.
json write_json(const NotificationRow& n) {
  json text = json::parse(n.text, nullptr, false);
  json kind = text.is_object() && text.contains("kind") && text["kind"].is_string() ? text["kind"] : json(nullptr);
  return {{"id", n.id},
          {"channel", n.channel},
          {"kind", kind},
          {"key", n.dedup_key},
          {"attempts", n.attempts},
          {"error", n.error},
          {"created_at", format_rfc3339(n.created_at)},
          {"next_attempt_at", format_rfc3339(n.next_attempt_at)}};
}

constexpr int kWriteListLimit = 50;

// The Plane and Gitea channels together: counts summed, each list newest first across both, at most 50.
Result<json> write_back_json(Store& store, bool enabled) {
  std::int64_t pending_count = 0, failed_count = 0;
  std::vector<NotificationRow> failed, pending;
  for (std::string_view channel : {kChannelPlane, kChannelGitea}) {
    auto counts = store.channel_counts(std::string(channel));
    if (!counts.ok()) return counts.status();
    pending_count += counts.value().pending;
    failed_count += counts.value().failed;
    for (auto [status, into] :
         {std::pair{NotificationStatus::kFailed, &failed}, std::pair{NotificationStatus::kPending, &pending}}) {
      auto rows = store.messages(std::string(channel), status, kWriteListLimit);
      if (!rows.ok()) return rows.status();
      into->insert(into->end(), rows.value().begin(), rows.value().end());
    }
  }
  json wb = {{"enabled", enabled}, {"pending", pending_count}, {"failed", failed_count}};
  for (auto [field, rows] : {std::pair{"failed_writes", &failed}, std::pair{"pending_writes", &pending}}) {
    // Ids grow with time across channels (one table), so newest first is the highest id first.
    std::sort(rows->begin(), rows->end(),
              [](const NotificationRow& a, const NotificationRow& b) { return a.id > b.id; });
    if (rows->size() > static_cast<std::size_t>(kWriteListLimit)) rows->resize(kWriteListLimit);
    wb[field] = json::array();
    for (const NotificationRow& n : *rows) wb[field].push_back(write_json(n));
  }
  return wb;
}

}  // namespace

QueueDefaults queue_defaults(const Settings& s) {
  QueueDefaults d{s.reconciler.enabled,
                  s.reconciler.plane_enabled,
                  static_cast<long long>(s.reconciler.interval.count()),
                  s.plane_write_back,
                  {},
                  s.config.jobs.heartbeat_stale};
  for (const ProjectSpec& p : s.config.projects)
    if (p.budget > 0) d.project_budgets[p.name] = p.budget;
  return d;
}

WaitingRules waiting_rules(const Settings& settings, const Pipeline& pipeline) {
  std::map<std::string, PlaneStateNames> states;
  for (const ProjectSpec& p : settings.config.projects) states[p.name] = p.plane_states;
  return WaitingRules{pipeline, [&settings](const std::string& stage) { return settings.grace_for(stage); },
                      job_limits(settings.config), std::move(states)};
}

json waiting_json(const std::optional<Waiting>& w) {
  if (!w) return nullptr;
  return {{"reason", w->reason}, {"text", w->text}, {"since", format_rfc3339(w->since)}};
}

json queue_runners_json(const std::vector<RunnerRow>& runners, const std::vector<JobRow>& running, TimePoint now,
                        std::chrono::seconds heartbeat_stale) {
  json out = json::array();
  for (const RunnerRow& r : runners) {
    const bool online = runner_online(r, now, heartbeat_stale);
    json job = nullptr;
    for (const JobRow& j : running)
      if (is_claim_of(j.worker, r.name)) job = j.id;
    out.push_back({{"name", r.name},
                   {"labels", r.labels},
                   {"state", online ? "online" : "offline"},
                   {"last_heartbeat_at", r.last_seen_at ? json(format_rfc3339(*r.last_seen_at)) : json(nullptr)},
                   {"job_id", job},
                   {"revoked", r.revoked}});
  }
  return out;
}

Result<json> queue_document(Store& store, TimePoint now, const QueueDefaults& defaults, const WaitingRules& rules,
                            const Leadership* leadership) {
  json doc;
  doc["generated_at"] = format_rfc3339(now);

  auto tasks = store.tasks_for_queue(now - std::chrono::hours(24));
  if (!tasks.ok()) return tasks.status();
  std::vector<JobRow> active[2];  // running, queued: oldest first
  doc["jobs"] = json::array();
  for (int i = 0; i < 2; ++i) {
    auto jobs = store.jobs_with_status(i == 0 ? JobStatus::kRunning : JobStatus::kQueued, 500);
    if (!jobs.ok()) return jobs.status();
    active[i] = std::move(jobs).value();
    for (const JobRow& j : active[i]) doc["jobs"].push_back(queue_job_json(j));
  }

  // Why each task waits: its current visit's jobs, the gate side's last word and the queue as the claim sees it.
  auto visit_jobs = store.current_visit_jobs();
  if (!visit_jobs.ok()) return visit_jobs.status();
  auto evaluations = store.current_gate_evaluations();
  if (!evaluations.ok()) return evaluations.status();
  std::map<TaskId, std::vector<JobRow>> jobs_of;
  for (JobRow& j : visit_jobs.value()) jobs_of[j.task_id].push_back(std::move(j));
  std::map<TaskId, const GateEvaluation*> gate_of;
  for (const GateEvaluation& e : evaluations.value()) gate_of[e.task_id] = &e;
  std::map<TaskId, std::string> project_of;
  for (const TaskRow& t : tasks.value()) project_of[t.id] = t.project;
  const JobQueueView queue(active[0], active[1], [&](TaskId id) {
    auto it = project_of.find(id);
    return it == project_of.end() ? std::string() : it->second;
  });
  static const std::vector<JobRow> kNoJobs;
  doc["tasks"] = json::array();
  for (const TaskRow& t : tasks.value()) {
    json row = queue_task_json(t);
    auto jobs = jobs_of.find(t.id);
    auto gate = gate_of.find(t.id);
    row["waiting"] = waiting_json(explain_waiting(t, jobs == jobs_of.end() ? kNoJobs : jobs->second,
                                                  gate == gate_of.end() ? nullptr : gate->second, queue, rules, now));
    doc["tasks"].push_back(std::move(row));
  }
  auto runners = store.runners();
  if (!runners.ok()) return runners.status();
  doc["runners"] = queue_runners_json(runners.value(), active[0], now, defaults.heartbeat_stale);

  auto failed = store.recent_failed_jobs(20);
  if (!failed.ok()) return failed.status();
  for (const JobRow& j : failed.value()) doc["jobs"].push_back(queue_job_json(j));

  // Spend per project (with its budget) and per project and stage (docs/adr/0021).
  auto stage_spend = store.spend_by_stage();
  if (!stage_spend.ok()) return stage_spend.status();
  std::map<std::string, MicroUsd> by_project;
  for (const auto& [project, budget] : defaults.project_budgets) by_project[project];
  json stages = json::array();
  for (const StageSpend& s : stage_spend.value()) {
    by_project[s.project] += s.spend;
    stages.push_back({{"project", s.project}, {"stage", s.stage}, {"spend_usd", micros_to_usd(s.spend)}});
  }
  json projects = json::array();
  for (const auto& [project, spend] : by_project) {
    auto budget = defaults.project_budgets.find(project);
    projects.push_back(
        {{"project", project},
         {"spend_usd", micros_to_usd(spend)},
         {"budget_usd",
          budget == defaults.project_budgets.end() ? json(nullptr) : json(micros_to_usd(budget->second))}});
  }
  doc["spend"] = {{"projects", std::move(projects)}, {"stages", std::move(stages)}};

  json reconciler = {{"enabled", defaults.enabled},       {"plane_enabled", defaults.plane_enabled},
                     {"interval_s", defaults.interval_s}, {"last_pass_started_at", nullptr},
                     {"last_pass_duration_s", nullptr},   {"unblocked_total", 0},
                     {"last_unblocked", nullptr},         {"last_error", nullptr}};
  auto flag = [&](const char* key, const char* field) -> Status {
    auto v = store.get_setting(key);
    if (!v.ok()) return v.status();
    if (v.value()) reconciler[field] = *v.value() == "1";
    return {};
  };
  if (Status s = flag(kSettingReconcileEnabled, "enabled"); !s.ok()) return s;
  if (Status s = flag(kSettingReconcilePlaneEnabled, "plane_enabled"); !s.ok()) return s;
  auto snapshot = store.get_setting(kSettingReconcileSnapshot);
  if (!snapshot.ok()) return snapshot.status();
  if (snapshot.value()) {
    json snap = json::parse(*snapshot.value(), nullptr, false);
    if (snap.is_object())
      for (const auto& [k, v] : snap.items())
        if (k != "enabled" && k != "plane_enabled") reconciler[k] = v;
  }
  if (leadership) {
    const std::string leader = leadership->leader_id();
    reconciler["leader"] = leader.empty() ? json(nullptr) : json(leader);
    reconciler["replica"] = leadership->replica_id();
    reconciler["leading"] = leadership->is_leader();
  }
  doc["reconciler"] = reconciler;

  auto counts = store.inbox_counts();
  if (!counts.ok()) return counts.status();
  json inbox = {{"received", counts.value().received}, {"pending", counts.value().pending},
                {"handled", counts.value().handled},   {"ignored", counts.value().ignored},
                {"failed", counts.value().failed},     {"failed_deliveries", json::array()}};
  auto failed_deliveries = store.failed_deliveries(50);
  if (!failed_deliveries.ok()) return failed_deliveries.status();
  for (const DeliveryRow& d : failed_deliveries.value())
    inbox["failed_deliveries"].push_back({{"source", source_name(d.source)},
                                          {"delivery_id", d.delivery_id},
                                          {"event", d.event},
                                          {"error", d.error},
                                          {"received_at", format_rfc3339(d.received_at)}});
  auto ledger = store.delivery_ledger(kQueueLedgerLimit, 0);
  if (!ledger.ok()) return ledger.status();
  inbox["ledger"] = json::array();
  for (const LedgerEntry& e : ledger.value()) inbox["ledger"].push_back(queue_ledger_json(e));
  doc["inbox"] = inbox;

  auto transitions = store.recent_transitions(200);
  if (!transitions.ok()) return transitions.status();
  doc["transitions"] = json::array();
  for (const TransitionRow& t : transitions.value()) doc["transitions"].push_back(queue_transition_json(t));

  auto outbox = store.outbox_counts();
  if (!outbox.ok()) return outbox.status();
  doc["notifications"] = {
      {"pending", outbox.value().pending}, {"sent", outbox.value().sent}, {"failed", outbox.value().failed}};

  auto write_back = write_back_json(store, defaults.write_back_enabled);
  if (!write_back.ok()) return write_back.status();
  doc["write_back"] = std::move(write_back).value();
  return doc;
}

}  // namespace orch
