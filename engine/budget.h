// engine/budget.h: spend budgets (docs/adr/0021). An agent may report what a run cost (ORCH_OUTPUT_DIR/usage.json,
// integrations/agent_usage.h); the store adds it to the job and its task (JobStore::record_usage). Two limits apply
// to an agent's runs on a task: its project's `budget_usd` (every run of the project) and the agent's
// `budget_usd_per_task` (that agent's runs on this one task). A person's raise (`orch task resume KEY --raise-budget
// N`) adds N to both, for that task only. At 80 % of a limit one notification; at 100 % the task is held
// (`budget_exhausted`): the claim skips its jobs until a person resumes it (TaskStore::resume_task). Never silent:
// the hold is an audit row, a notification and the task's waiting reason. Stateless over the store; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/store.h"

namespace orch {

inline constexpr MicroUsd kMicrosPerUsd = 1'000'000;
inline constexpr int kBudgetWarnPercent = 80;

// "0.50", "12.00", "0.000125": two decimals, more only when the amount has them (at most six).
std::string format_usd(MicroUsd amount);
// A dollar amount from a config or a person as micro-USD, rounded to the nearest; nullopt unless finite, >= 0 and at
// most a billion.
std::optional<MicroUsd> usd_to_micros(double usd);
inline double micros_to_usd(MicroUsd amount) { return static_cast<double>(amount) / kMicrosPerUsd; }

// One limit as it stands for a task: its name for people, what was spent against it and the limit with the task's
// raise.
struct BudgetLimit {
  std::string scope;  // "project" or "task" (the agent's budget per task); dedup keys name it
  std::string name;   // "project shop's budget", "developer's budget per task"
  MicroUsd spent = 0;
  MicroUsd limit = 0;
  int percent() const { return limit > 0 ? static_cast<int>(spent * 100 / limit) : 0; }
  bool exhausted() const { return spent >= limit; }
};

// The limits that apply to `agent`'s runs on `task` (none configured: empty), with the spends `spend`.
std::vector<BudgetLimit> budget_limits(const Config& config, const TaskRow& task, const std::string& agent,
                                       const Spend& spend);

class BudgetGuard {
 public:
  BudgetGuard(Store& store, const Config& config, const Clock& clock, spdlog::logger& log)
      : store_(store), config_(config), clock_(clock), log_(log) {}

  // After a run of `job` whose usage brought the spends to `spend`: one notification per limit at 80 % (and per
  // raise), and the hold for an exhausted limit when its agent would run again (`retry_follows`: the run failed) or
  // it is the project's (no agent of the project may start). True when the task is held.
  Result<bool> after_run(const JobRow& job, const TaskRow& task, const Spend& spend, bool retry_follows);
  // Before the agent of a claimed `job` starts: an exhausted limit holds the task (the caller puts the job back in
  // the queue, where the claim skips it). True when the task is held.
  Result<bool> before_start(const JobRow& job, const TaskRow& task);

 private:
  Result<bool> enforce(const JobRow& job, const TaskRow& task, const Spend& spend, bool hold_task_limit);

  Store& store_;
  const Config& config_;
  const Clock& clock_;
  spdlog::logger& log_;
};

}  // namespace orch
