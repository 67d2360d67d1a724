#include "engine/budget.h"

#include <cmath>

namespace orch {

std::string format_usd(MicroUsd amount) {
  const bool negative = amount < 0;
  const std::uint64_t m = negative ? 0 - static_cast<std::uint64_t>(amount) : static_cast<std::uint64_t>(amount);
  std::string fraction = std::to_string(m % kMicrosPerUsd);
  fraction.insert(0, 6 - fraction.size(), '0');
  while (fraction.size() > 2 && fraction.back() == '0') fraction.pop_back();
  return (negative ? "-" : "") + std::to_string(m / kMicrosPerUsd) + "." + fraction;
}

std::optional<MicroUsd> usd_to_micros(double usd) {
  if (!std::isfinite(usd) || usd < 0 || usd > 1e9) return std::nullopt;
  return static_cast<MicroUsd>(std::llround(usd * kMicrosPerUsd));
}

std::vector<BudgetLimit> budget_limits(const Config& config, const TaskRow& task, const std::string& agent,
                                       const Spend& spend) {
  std::vector<BudgetLimit> limits;
  if (const ProjectSpec* p = config.find_project(task.project); p && p->budget > 0)
    limits.push_back({"project", "project " + p->name + "'s budget", spend.project, p->budget + task.budget_raise});
  if (auto a = config.agents.find(agent); a != config.agents.end() && a->second.budget_per_task > 0)
    limits.push_back(
        {"task", agent + "'s budget per task", spend.task_agent, a->second.budget_per_task + task.budget_raise});
  return limits;
}

Result<bool> BudgetGuard::after_run(const JobRow& job, const TaskRow& task, const Spend& spend, bool retry_follows) {
  return enforce(job, task, spend, retry_follows);
}

Result<bool> BudgetGuard::before_start(const JobRow& job, const TaskRow& task) {
  if (budget_limits(config_, task, job.agent, Spend{}).empty()) return false;  // no budget: no read
  auto spend = store_.spend_of(task.id, job.agent);
  if (!spend.ok()) return spend.status();
  return enforce(job, task, spend.value(), true);
}

Result<bool> BudgetGuard::enforce(const JobRow& job, const TaskRow& task, const Spend& spend, bool hold_task_limit) {
  if (!task.budget_hold.empty()) return true;
  const TimePoint now = clock_.now();
  const std::string task_key = std::to_string(task.id);
  for (const BudgetLimit& l : budget_limits(config_, task, job.agent, spend)) {
    if (l.percent() < kBudgetWarnPercent) continue;
    // Keyed by the limit: a raise re-arms the warning for the new one.
    const std::string key = "budget-warning:" + task_key + ":" + l.scope + ":" + std::to_string(l.limit);
    const std::string text = task.work_item_key + " has spent " + format_usd(l.spent) + " USD of " + l.name + " (" +
                             format_usd(l.limit) + " USD, " + std::to_string(l.percent()) + " %)";
    auto warned = store_.enqueue_notification(key, text, now);
    if (!warned.ok()) return warned.status();
    if (warned.value()) log_.warn("budget: {}", text);
    if (!l.exhausted() || (l.scope == "task" && !hold_task_limit)) continue;
    const std::string reason = "spent " + format_usd(l.spent) + " USD of " + l.name + " (" + format_usd(l.limit) +
                               " USD): a person lifts the hold (orch task resume " + task.work_item_key +
                               " --raise-budget N)";
    std::vector<OutboxMessage> said = {OutboxMessage{
        std::string(kChannelTelegram), "budget-held:" + task_key + ":" + l.scope + ":" + std::to_string(l.limit),
        task.work_item_key + " is held in " + task.stage + ": " + reason}};
    auto held = store_.hold_task(task.id, reason, now, said);
    if (!held.ok()) return held.status();
    if (held.value()) log_.warn("budget: {} is held in {}: {}", task.work_item_key, task.stage, reason);
    return true;
  }
  return false;
}

}  // namespace orch
