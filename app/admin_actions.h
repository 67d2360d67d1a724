// app/admin_actions.h: the operator's write actions, shared by the CLI (`orch reconcile enable|disable [--plane]`)
// and the admin endpoints (/admin/...), so both doors do exactly the same thing to the same rows.
// Stateless; thread-safe as the Store is.
#pragma once

#include "engine/attempt_policy.h"
#include "engine/clock.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/pipeline.h"
#include "engine/stage_engine.h"
#include "engine/store.h"

namespace orch {

// Persists the kill switch (kSettingReconcileEnabled, or kSettingReconcilePlaneEnabled when plane_only). A running
// reconciler reads it at the start of its next pass; the admin endpoint also pokes it so that this is now.
Status set_reconcile_switch(SettingsStore& settings, bool enable, bool plane_only);

// Gives a blocked task one more attempt: enqueues the next attempt number of the current visit with its stage's
// agent, then clears `blocked`. kNotFound: no such task; kConflict: not blocked; kInvalid: its stage has no agent.
Result<JobRow> retry_blocked_task(Store& store, const Pipeline& pipeline, TaskId id, TimePoint now);

// A person re-runs a stage (`orch task rerun KEY [--stage S]`, POST /admin/tasks/{id}/rerun): the task enters
// `stage` (default: its current one) again through advance_stage with cause manual (an audit row), so the stage's
// agent gets the first job of the new visit. A job still running is never killed: it finishes, its result no longer
// counts, and the claim starts the new job only after it (one running job per task; docs/adr/0019).
// kNotFound: no task; kConflict: done; kInvalid: not a working stage, a human stage, a stage without an agent, or a
// stage after the current one.
Result<TaskRow> rerun_stage(StageEngine& engine, TaskStore& tasks, const Pipeline& pipeline, TaskId id,
                            const std::optional<std::string>& stage);
// Whether rerun_stage accepts `stage` as its target (kInvalid with the reason: a human stage, no agent); the /queue
// page shows its Re-run button by the same rule.
Status rerunnable(const StageSpec& stage);

// A person lets a task held for its budget go on (`orch task resume KEY [--raise-budget N]`, POST
// /admin/tasks/{id}/resume; docs/adr/0021): its limits are raised by `raise` for this task, the hold lifted with an
// audit row, and its queued job becomes claimable. kNotFound: no task; kConflict: not held and no raise; kInvalid:
// the raise would leave a limit spent (the message says what it has spent and what it needs), or is negative.
Result<TaskRow> resume_held_task(Store& store, const Config& config, TaskId id, MicroUsd raise, TimePoint now);

// Gives a failed outbox message (a write-back, or a Telegram notification) a fresh attempt budget, due now; its
// channel's drainer sends it on its next round. kNotFound: no such message; kConflict: not failed.
// A person cancels job `id` (docs/adr/0023), saying `why`: a queued job fails at once and its task is blocked; a
// running one keeps running until its worker or runner sees the intent at its next heartbeat, stops the agent's
// process group (SIGTERM, [jobs] cancel_grace, SIGKILL), checks that nothing of the group is left, and fails it as
// cancelled; its task is then blocked. Never retried. The job's row after the request; kConflict when it is finished.
Result<JobRow> cancel_job(JobStore& jobs, AttemptPolicy& attempts, JobId id, const std::string& why, TimePoint now);

Status retry_outbox_message(OutboxStore& outbox, NotificationId id, TimePoint now);

}  // namespace orch
