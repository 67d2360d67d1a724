// engine/write_back.h: what orch tells the people outside about a task (docs/adr/0013), as outbox
// messages: Plane comments and state moves, a Gitea review and the `orch/pipeline` commit status. WriteBackPlan
// only decides and words them (plain text; each sender escapes for its destination); the store keeps them with
// the transition or the event that causes them, and the drainers of integrations/write_back_sender.h send them.
//
// Every message has a dedup key "<task id>:<transition id>:<kind>" (the transition being the one that causes it,
// or the one that began the task's current visit): stored twice, it is one message; and it is the Plane comment's
// external_id, so Plane refuses a second copy of a comment whose first answer was lost (409 = delivered).
// Pure and thread-safe: no I/O, no clock.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/pipeline.h"
#include "engine/stage_engine.h"
#include "engine/store.h"

namespace orch {

struct WriteBackOptions {
  bool enabled = true;         // [plane] write_back / ORCH_PLANE_WRITE_BACK: false = no Plane or Gitea writes at all
  std::string public_url;      // orch's own address for people (links to /queue); "" = no link
  std::string gitea_base_url;  // for pull-request links
};

// The Gitea commit status orch keeps on a task's pull request head.
inline constexpr const char* kPipelineStatusContext = "orch/pipeline";

// Payload fields (JSON) of the messages, read by integrations/write_back_sender.cpp.
namespace write_kind {
inline constexpr const char* kComment = "comment";  // plane: project, work_item_id, text
inline constexpr const char* kState = "state";      // plane: project, work_item_id, state (a name)
inline constexpr const char* kReview = "review";    // gitea: repo, pr, event, body
inline constexpr const char* kStatus = "status";  // gitea: repo, branch, sha (fallback), state, description, target_url
}  // namespace write_kind

class WriteBackPlan final : public TransitionEffects {
 public:
  WriteBackPlan(const Config& config, const Pipeline& pipeline, WriteBackOptions options);

  bool enabled() const { return options_.enabled; }

  // Stored with the transition `t` of `before` (StageEngine::advance_stage): the stage's plane_state or the
  // done_state, a comment when it is a rollback, an unblock by the reconciler or the end, the pipeline status.
  std::vector<OutboxMessage> for_transition(const TaskRow& before, const TransitionRequest& t) const override;
  // An agent of the task's current stage exited successfully. In a human-gated stage its summary is posted
  // with what the person must do next; on a post_review stage, the summary is the pull request's review.
  std::vector<OutboxMessage> agent_succeeded(const TaskRow& task, const std::string& summary,
                                             const std::optional<std::string>& verdict) const;
  std::vector<OutboxMessage> pull_request_opened(const TaskRow& task, std::int64_t number) const;
  std::vector<OutboxMessage> ci_failed(const TaskRow& task, const std::string& sha, const std::string& context,
                                       const std::string& state, const std::string& target_url) const;
  std::vector<OutboxMessage> review_verdict(const TaskRow& task, std::int64_t pr, bool approved,
                                            const std::string& reviewer) const;
  std::vector<OutboxMessage> blocked(const TaskRow& task, const std::string& stage, const std::string& reason) const;

 private:
  OutboxMessage comment(const TaskRow& task, const std::string& kind, const std::string& text) const;
  OutboxMessage state_move(const TaskRow& task, const std::string& state) const;
  std::optional<OutboxMessage> pipeline_status(const TaskRow& task, const std::string& state,
                                               const std::string& description) const;
  std::string pull_url(const TaskRow& task, std::int64_t number) const;

  const Config& config_;
  const Pipeline& pipeline_;
  const WriteBackOptions options_;
};

// The plan and the outbox together, for the events that are not transitions (an agent's result, a PR opened, a red
// CI, a review, a block): the messages are stored at once, and the caller retries its step or delivery when that
// fails (the dedup keys make a second store of the same event harmless). WriteBack::off() is the null object of a
// component wired without write-back (tests): every event says nothing.
class WriteBack {
 public:
  WriteBack(OutboxStore& outbox, const WriteBackPlan& plan, const Clock& clock)
      : outbox_(&outbox), plan_(&plan), clock_(&clock) {}
  static WriteBack& off();

  Status agent_succeeded(const TaskRow& task, const std::string& summary, const std::optional<std::string>& verdict);
  Status pull_request_opened(const TaskRow& task, std::int64_t number);
  Status ci_failed(const TaskRow& task, const std::string& sha, const std::string& context, const std::string& state,
                   const std::string& target_url);
  Status review_verdict(const TaskRow& task, std::int64_t pr, bool approved, const std::string& reviewer);
  // Not stored here: the block and what says so go in one transaction (Store::block_task).
  std::vector<OutboxMessage> blocked(const TaskRow& task, const std::string& stage, const std::string& reason) const;

 private:
  WriteBack() = default;  // off()
  Status store(const std::vector<OutboxMessage>& messages);

  OutboxStore* outbox_ = nullptr;  // all three null only in off()
  const WriteBackPlan* plan_ = nullptr;
  const Clock* clock_ = nullptr;
};

}  // namespace orch
