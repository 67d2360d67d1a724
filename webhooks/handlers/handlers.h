// webhooks/handlers/handlers.h: what an event means for a task. The inbox processor calls these for webhooks and the
// reconciler replays lost events through the very same functions, so there is one code path per event kind.
// Every stage change goes through StageEngine (advance_stage / advance_if_gate_passed / rollback); an event only
// says "look again": gates re-read the truth from Gitea and Plane. Every handler is idempotent: a duplicate or
// replayed event, or two racing callers, end in the same rows as one call.
// Thread-safe: all state is in the Store; the claim and the stage CAS settle races.
#pragma once

#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/facts.h"
#include "engine/stage_engine.h"
#include "engine/store.h"
#include "engine/write_back.h"

namespace orch {

struct HandleOutcome {
  enum class Kind {
    kChanged,  // a task changed stage (or was created and started): the reconciler counts this as an unblock
    kNoop,     // understood and in sync: facts may have been recorded, no stage moved
    kIgnored,  // not for us: unknown project or task, uninteresting event, a verdict outside a human stage, ...
  };
  Kind kind = Kind::kNoop;
  std::string reason;  // why: "created SHOP-42 and started analysis", "unknown task", ...
  TaskId task_id = 0;  // 0 when no task is involved

  static HandleOutcome changed(TaskId id, std::string why) { return {Kind::kChanged, std::move(why), id}; }
  static HandleOutcome noop(TaskId id, std::string why) { return {Kind::kNoop, std::move(why), id}; }
  static HandleOutcome ignored(std::string why, TaskId id = 0) { return {Kind::kIgnored, std::move(why), id}; }
};
const char* outcome_kind_name(HandleOutcome::Kind k);

class Handlers {
 public:
  // `write_back` stores what a red CI and a review verdict tell the people in Plane (docs/adr/0013).
  Handlers(StoreRoles<TaskStore, BranchHeadStore> store, StageEngine& engine, Tracker& tracker, CodeHost& code_host,
           const Config& config, const Clock& clock, spdlog::logger& log, WriteBack& write_back = WriteBack::off())
      : store_(store.get<TaskStore>()),
        heads_(store.get<BranchHeadStore>()),
        engine_(engine),
        tracker_(tracker),
        code_host_(code_host),
        config_(config),
        clock_(clock),
        log_(log),
        write_back_(write_back) {}

  // ---- Plane ----

  // The work item is In Progress. No task yet: the atomic create-claim (key <identifier>-<sequence_id>, branch from
  // the key, never the title) and, for the claim winner only, created -> first working stage (which enqueues its
  // agent). A task left in `created` by a crash between claim and advance is advanced now (the stage CAS lets one
  // caller win). Any other existing task: noop.
  Result<HandleOutcome> handle_status_start(const ProjectSpec& project, const WorkItem& item, Cause cause);

  // The work item is Approved (approved=true) or Rejected. For a task in a human stage: advance, or take the
  // stage's on_reject edge keeping `reason` for the agent. Idempotent through the task's recorded tracker state:
  // a verdict already applied for that same Plane state (a duplicate delivery, Plane's state/state_id pair, a
  // reconciler replay of an item still in Rejected) changes nothing. Not in a human stage, or unknown: ignored.
  Result<HandleOutcome> handle_verdict(const ProjectSpec& project, const WorkItem& item, bool approved,
                                       const std::string& reason, Cause cause);

  // Classifies item.state_id with the Tracker and routes: In Progress -> start, Approved / Rejected -> verdict
  // (reason "rejected in Plane"); any other state is recorded on a known task and otherwise ignored.
  Result<HandleOutcome> handle_tracker_state(const ProjectSpec& project, const WorkItem& item, Cause cause);

  // ---- Gitea ----

  // A commit status (Gitea sends no branch): sha -> task through (1) branch heads recorded from push / PR events,
  // (2) open PRs on Gitea whose head is the sha, (3) the single task of the project in a CI-gated stage. Zero or
  // several candidates resolve nothing (ignored, logged at info). Then advance_if_gate_passed: the gate reads CI.
  // A failure or error on the task's branch is also said in Plane (once per head and visit).
  Result<HandleOutcome> handle_ci_status(const ProjectSpec& project, const std::string& sha, const std::string& state,
                                         const std::string& context, Cause cause, const std::string& target_url = "");

  // Pull request opened / synchronized / closed (merged or not) / reopened: records the PR number, head sha and
  // state on the task of the head branch and the branch head, then advance_if_gate_passed.
  Result<HandleOutcome> handle_pull_request(const ProjectSpec& project, const std::string& action,
                                            const PullRequestInfo& pr, Cause cause);

  // A review: approved -> record, then advance_if_gate_passed; changes requested -> record, then the stage's
  // on_changes_requested edge when it declares one (else advance_if_gate_passed, which stays red).
  // The verdict is said in Plane, with the reviewer's login.
  Result<HandleOutcome> handle_review(const ProjectSpec& project, const PullRequestInfo& pr, bool approved, Cause cause,
                                      const std::string& reviewer = "");

  // A push to a branch: records the branch head (and the head sha of the branch's task).
  Result<HandleOutcome> handle_push(const ProjectSpec& project, const std::string& branch, const std::string& sha,
                                    Cause cause);

 private:
  Result<std::optional<TaskRow>> task_for_branch(const ProjectSpec& project, const PullRequestInfo& pr);
  Result<std::vector<TaskRow>> tasks_for_sha(const ProjectSpec& project, const std::string& sha, std::string& route);
  // advance_if_gate_passed, except for human stages (only a tracker verdict moves those: human gates stay human,
  // docs/design.md invariant 8).
  Result<HandleOutcome> look_again(const TaskRow& task, Cause cause, const std::string& why);
  Status record_tracker_state(const TaskRow& task, const std::string& state_id);
  bool is_human(const std::string& stage) const;
  std::vector<std::string> ci_stages() const;

  TaskStore& store_;
  BranchHeadStore& heads_;
  StageEngine& engine_;
  Tracker& tracker_;
  CodeHost& code_host_;
  const Config& config_;
  const Clock& clock_;
  spdlog::logger& log_;
  WriteBack& write_back_;
};

}  // namespace orch
