#include "engine/job_scheduler.h"

namespace orch {

Status JobScheduler::on_transition(const TransitionFired& event) {
  if (pipeline_.is_terminal(event.task.stage) || event.task.blocked) return {};
  const AgentSpec* agent = pipeline_.agent_of(event.task.stage);
  if (!agent) return {};
  NewJob job;
  job.task_id = event.task.id;
  job.visit = event.task.visit;
  job.stage = event.task.stage;
  job.agent = agent->name;
  job.attempt = 1;
  job.run_after = clock_.now();
  auto created = jobs_.enqueue_job(job, clock_.now());
  if (!created.ok()) return created.status();
  if (created.value())
    log_.info("jobs: queued {} for {} in {} (job {})", agent->name, event.task.work_item_key, event.task.stage,
              created.value()->id);
  waker_.jobs_enqueued();  // also for a job that was already queued (a replay): it may be claimable now
  return {};
}

void subscribe_audit_log(EventBus& bus, spdlog::logger& log) {
  bus.subscribe("audit log", [&log](const TransitionFired& e) -> Status {
    if (!e.replay)
      log.info("transition: {} {} -> {} ({}){}", e.task.work_item_key, e.from, e.to, cause_name(e.cause),
               e.finished_agent ? " after " + *e.finished_agent : std::string());
    return {};
  });
}

}  // namespace orch
