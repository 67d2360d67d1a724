// app/queue_document.h: the /queue.json document (a contract: docs/contracts.md "/queue.json"; fields are only ever
// added). Built from the database alone, so `orch status --json` prints the same thing without a server.
#pragma once

#include <map>

#include <nlohmann/json.hpp>

#include "app/settings.h"
#include "engine/clock.h"
#include "engine/leadership.h"
#include "engine/setting_keys.h"
#include "engine/store.h"
#include "engine/waiting.h"

namespace orch {

struct QueueDefaults {  // what the reconcile block says before the reconciler ever wrote a snapshot
  bool enabled = true;
  bool plane_enabled = true;
  long long interval_s = 60;
  bool write_back_enabled = true;                   // Settings::plane_write_back: the write_back block's `enabled`
  std::map<std::string, MicroUsd> project_budgets;  // `budget_usd` of each project that has one: the spend block's
  std::chrono::seconds heartbeat_stale{150};        // [jobs] heartbeat_stale: a runner unseen longer is offline
};

// Each task carries `waiting` (engine/waiting.h, by `rules`). With `leadership`, the reconcile block also says which
// replica leads (`leader`), which one answered (`replica`) and whether that is the leader (`leading`); the reconciler
// and the sweeper run only on the leader.
Result<nlohmann::json> queue_document(Store& store, TimePoint now, const QueueDefaults& defaults,
                                      const WaitingRules& rules, const Leadership* leadership = nullptr);

// The waiting rules of these settings: the reconciler's graces, the claim's limits, the Plane state names.
// The settings' defaults for the document (the reconciler's start-up switches and interval, write-back, budgets).
QueueDefaults queue_defaults(const Settings& settings);
WaitingRules waiting_rules(const Settings& settings, const Pipeline& pipeline);

// One row of /queue.json's `tasks` (without `waiting`), `jobs` and `transitions`: `orch explain` prints the same.
nlohmann::json queue_task_json(const TaskRow& t);
nlohmann::json queue_job_json(const JobRow& j);
nlohmann::json queue_transition_json(const TransitionRow& t);
// One entry of /queue.json's `inbox.ledger`: {source, delivery_id, event, outcome (pending|handled|ignored|failed|
// duplicate), detail, duplicate_of, attempts, task_id, work_item_key, received_at, handled_at}.
nlohmann::json queue_ledger_json(const LedgerEntry& e);
// How many ledger entries /queue.json carries (newest first).
inline constexpr int kQueueLedgerLimit = 100;

// /queue.json's `runners`: [{name, labels, state (online|offline), last_heartbeat_at, job_id, revoked}], by name. A
// runner is online when it was seen (a claim, heartbeat or report) within `heartbeat_stale` and is not revoked;
// job_id is the job running on one of its claims, or null. `running` is the running jobs.
nlohmann::json queue_runners_json(const std::vector<RunnerRow>& runners, const std::vector<JobRow>& running,
                                  TimePoint now, std::chrono::seconds heartbeat_stale);

// /queue.json's `waiting` of one task: {"reason", "text", "since"}, or null.
nlohmann::json waiting_json(const std::optional<Waiting>& w);

}  // namespace orch
