// engine/model.h: the domain model shared by every layer: tasks, jobs, deliveries, transitions, notifications.
// Closed sets are enum classes, converted to text only at the SQL and JSON edges (the *_name / parse_* pairs).
// Stage names are config data: they travel as strings validated against the Pipeline (engine/pipeline.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/clock.h"

namespace orch {

using TaskId = std::int64_t;
using JobId = std::int64_t;
// Money as whole millionths of a US dollar: sums over many runs stay exact (engine/budget.h, docs/adr/0021).
using MicroUsd = std::int64_t;
using DeliverySeq = std::int64_t;
using NotificationId = std::int64_t;

inline constexpr std::string_view kStageCreated = "created";
inline constexpr std::string_view kStageDone = "done";

// Why a stage changed; every transition row carries one.
enum class Cause { kWebhook, kAgent, kReconciler, kManual };
const char* cause_name(Cause c);
std::optional<Cause> parse_cause(std::string_view s);

enum class JobStatus { kQueued, kRunning, kSucceeded, kFailed };
const char* job_status_name(JobStatus s);
std::optional<JobStatus> parse_job_status(std::string_view s);

enum class Source { kPlane, kGitea };
const char* source_name(Source s);
std::optional<Source> parse_source(std::string_view s);

enum class DeliveryStatus { kPending, kHandled, kIgnored, kFailed };
const char* delivery_status_name(DeliveryStatus s);
std::optional<DeliveryStatus> parse_delivery_status(std::string_view s);

enum class NotificationStatus { kPending, kSent, kFailed };
const char* notification_status_name(NotificationStatus s);
std::optional<NotificationStatus> parse_notification_status(std::string_view s);

// The tracker's verdict on a task in a human stage, as last seen (webhook or poll).
enum class PrState { kNone, kOpen, kClosed, kMerged };
const char* pr_state_name(PrState s);
std::optional<PrState> parse_pr_state(std::string_view s);

enum class ReviewState { kNone, kApproved, kChangesRequested };
const char* review_state_name(ReviewState s);
std::optional<ReviewState> parse_review_state(std::string_view s);

// What a new task is created from: the tracker issue. Title and description are attacker-controlled text:
// they go into the database and the agent's JSON file, never into a path, a branch or a command line.
struct NewTask {
  std::string project;        // config project name
  std::string work_item_id;   // Plane issue uuid: unique across tasks
  std::string work_item_key;  // e.g. SHOP-42
  std::string title;
  std::string description;
  std::string branch;  // derived from the sanitised key / id, never the title
};

struct TaskRow {
  TaskId id = 0;
  std::string project;
  std::string work_item_id;
  std::string work_item_key;
  std::string title;
  std::string description;
  std::string stage;
  int visit = 1;  // bumped by every transition: a job belongs to one visit of a stage (see NewJob)
  std::string branch;
  bool blocked = false;
  std::string blocked_reason;
  std::string rejection_reason;
  std::optional<std::int64_t> pr_number;
  PrState pr_state = PrState::kNone;
  ReviewState review_state = ReviewState::kNone;
  std::string head_sha;
  std::string tracker_state;  // last known Plane state id, "" when unknown
  TimePoint created_at{};
  TimePoint entered_stage_at{};
  TimePoint updated_at{};
  MicroUsd spend = 0;         // what its agents' runs reported (usage.json), summed
  MicroUsd budget_raise = 0;  // what people added to its limits (`orch task resume --raise-budget`)
  std::string budget_hold;    // why it is held for its budget ("" = not held): the claim skips its jobs
  std::optional<TimePoint> budget_hold_at;
};

struct Claim {
  TaskRow task;
  bool created = false;  // true only for the one caller that won the create-claim
};

// Facts learned from Gitea / Plane events; each present field overwrites the stored one. Bumps updated_at.
struct TaskFacts {
  std::optional<std::int64_t> pr_number;
  std::optional<PrState> pr_state;
  std::optional<ReviewState> review_state;
  std::optional<std::string> head_sha;
  std::optional<std::string> tracker_state;
};

struct TransitionRow {
  std::int64_t id = 0;
  TaskId task_id = 0;
  std::string work_item_key;
  std::string from;
  std::string to;
  Cause cause = Cause::kManual;
  std::string detail;
  TimePoint at{};
};

struct JobRow {
  JobId id = 0;
  TaskId task_id = 0;
  int visit = 1;
  std::string stage;
  std::string agent;
  JobStatus status = JobStatus::kQueued;
  int attempt = 1;
  std::string error;
  std::string worker;  // who claimed it: "<pid>/<n>"
  TimePoint created_at{};
  TimePoint run_after{};  // not claimable before this (retry backoff)
  std::optional<TimePoint> started_at;
  std::optional<TimePoint> heartbeat_at;
  std::optional<TimePoint> finished_at;
  // The follow-up steps after the agent exited 0 (ADR 0010): "" while the agent has not succeeded; then the step the
  // job is at ("push", "open_pr", "gate"), the last one it went through once it succeeded, or the one it failed in.
  std::string step;
  int step_attempts = 0;   // failed tries of `step`; 0 when it has just begun
  std::string step_error;  // the last failed try's error, "" if none
  // What its agent's runs reported (usage.json), summed over its runs (a run again after a restart adds).
  std::int64_t tokens_in = 0;
  std::int64_t tokens_out = 0;
  std::string model;  // the last one reported, "" if none
  MicroUsd cost = 0;
  // A person asked to cancel it (`orch job cancel`, docs/adr/0023): why, "" if nobody did. Its worker or runner stops
  // the agent at the next heartbeat; the job then fails as cancelled and its task is blocked, never retried.
  std::string cancel_requested;
  // When its agent's process started, as its runner reported it; unset before, and for the server's own pool, whose
  // workers launch in-process. The dispatch rule (reconciler/sweeper.h) requeues a runner claim that never gets here.
  std::optional<TimePoint> launched_at;
};

// A runner's claims are job worker ids "runner:<name>/<random>" (docs/adr/0023); the server's pool's are
// "<replica>/<pid>/<n>".
inline constexpr std::string_view kRunnerClaimPrefix = "runner:";

// One run's usage as the agent reported it in ORCH_OUTPUT_DIR/usage.json (integrations/agent_usage.h).
struct AgentUsage {
  std::int64_t tokens_in = 0;
  std::int64_t tokens_out = 0;
  std::string model;
  MicroUsd cost = 0;
};

// What the budgets of an agent's runs on a task are checked against (engine/budget.h).
struct Spend {
  MicroUsd task = 0;        // every run on the task
  MicroUsd task_agent = 0;  // the agent's runs on the task
  MicroUsd project = 0;     // every run of the task's project
};

// Spend summed per project and stage, for /queue.json and /metrics.
struct StageSpend {
  std::string project;
  std::string stage;
  MicroUsd spend = 0;
};

// What the reconciler's gate side last concluded about a task's gate in one visit of a stage: the pre-evaluation
// that /queue.json's `waiting` reports (engine/waiting.h), so the page never forms a second opinion of its own.
struct GateEvaluation {
  TaskId task_id = 0;
  std::string stage;
  int visit = 0;
  bool green = false;
  std::string why;    // GateOutcome::why: "ci failure on abc1234"
  TimePoint since{};  // the first evaluation of this visit with this outcome and reason
};

// How many jobs may run at once, counted over every process that shares the store (replicas, runners): in all
// (`[jobs] max_running`), per project (`[[projects]] max_running`) and per agent (`[agents.X] max_running`).
// 0 or absent = no limit. The claim enforces them (JobStore::claim_job), so they hold across processes.
struct JobLimits {
  int max_running = 0;
  std::map<std::string, int> per_project;
  std::map<std::string, int> per_agent;
  bool any() const { return max_running > 0 || !per_project.empty() || !per_agent.empty(); }
};

// Which queued jobs a claimer may take (docs/adr/0023). A job whose agent has not run yet (step "") is `fresh`:
// taken when `fresh` and its agent is one of `agents` (any agent when `any_agent`). A job in a follow-up step (push,
// open_pr, gate; ADR 0010) is taken only when `steps`: those run on the server, never on a runner.
// The server's pool: every step, and the fresh jobs of the agents without `runs_on`. A runner: the fresh jobs of the
// agents whose `runs_on` names one of its labels, no step.
struct ClaimScope {
  bool fresh = true;
  bool any_agent = true;
  std::vector<std::string> agents;  // when !any_agent
  bool steps = true;
};

// A registered runner (`orch runner register`). Only the SHA-256 of its token is stored.
struct RunnerRow {
  std::string name;
  std::vector<std::string> labels;
  std::string token_sha256;  // hex
  TimePoint registered_at{};
  std::optional<TimePoint> last_seen_at;  // its last claim, heartbeat or report
  bool revoked = false;
};

// (task_id, visit, attempt) is unique: enqueueing the first attempt of the current visit twice, by a replay or
// a restart, creates one job; a rollback into the same stage is a new visit and so gets a new job.
struct NewJob {
  TaskId task_id = 0;
  int visit = 1;
  std::string stage;
  std::string agent;
  int attempt = 1;
  TimePoint run_after{};
};

struct NewDelivery {
  Source source = Source::kPlane;
  std::string delivery_id;  // the sender's id header
  std::string event;        // X-Plane-Event or X-Gitea-Event-Type
  std::string body_digest;  // hex sha256 of the raw body: Plane retries carry a new id but the same bytes
  std::string body;
  TimePoint received_at{};
  // Deliveries of one lane are handled one at a time, in arrival order (InboxStore::claim_delivery). The webhook
  // route sets it to the project the delivery belongs to, so that one task's events never run side by side.
  std::string lane = {};
};

struct DeliveryRow {
  DeliverySeq seq = 0;  // arrival order
  Source source = Source::kPlane;
  std::string delivery_id;
  std::string event;
  std::string body;
  DeliveryStatus status = DeliveryStatus::kPending;
  std::string error;  // failure message or the reason it was ignored
  int attempts = 0;
  TimePoint received_at{};
  std::optional<TimePoint> handled_at;
  std::string lane;
  TimePoint run_after{};                      // not claimable before this (retry backoff); received_at at first
  std::string claimed_by;                     // "" unless a processor holds it now
  std::optional<TimePoint> claim_expires_at;  // the claim lapses then (its holder died): claimable again
};

// What handling a delivery concluded (InboxStore::finish_delivery): the ledger on /queue and `orch explain` show it.
struct DeliveryOutcome {
  DeliveryStatus status = DeliveryStatus::kHandled;
  std::string error;   // the failure message or the reason it was ignored; "" when handled
  TaskId task_id = 0;  // the task it was about; 0 when none (an unknown project, a work item with no task)
  std::string detail;  // what it changed or concluded, whatever the status
};

// One line of the delivery ledger, newest first: a stored delivery with its outcome, or an arrival refused as a
// duplicate of a stored one (then event, status and task are the original's).
struct LedgerEntry {
  Source source = Source::kPlane;
  std::string delivery_id;
  std::string event;
  DeliveryStatus status = DeliveryStatus::kPending;
  bool duplicate = false;
  std::string duplicate_of;  // the stored original's delivery id, for a duplicate
  std::string detail;        // why it was ignored or failed, else what it changed; "" for a duplicate
  int attempts = 0;
  TaskId task_id = 0;  // 0 when it was about no task, or is still pending
  std::string work_item_key;
  TimePoint received_at{};
  std::optional<TimePoint> handled_at;
};

struct InboxInsert {
  DeliverySeq seq = 0;
  bool duplicate = false;
};

struct InboxCounts {
  std::int64_t received = 0, pending = 0, handled = 0, ignored = 0, failed = 0;
};

// The outbox's channels (docs/adr/0013): who sends a row. Telegram rows hold plain text; Plane and Gitea rows hold
// one write as JSON (integrations/write_back.h).
inline constexpr std::string_view kChannelTelegram = "telegram";
inline constexpr std::string_view kChannelPlane = "plane";
inline constexpr std::string_view kChannelGitea = "gitea";

// In an OutboxMessage's dedup key, this is replaced by the id of the transition the message belongs to: the one
// written in the same transaction (TransitionRequest::outbox), else the task's latest one.
inline constexpr std::string_view kTransitionPlaceholder = "{transition}";
std::string resolve_outbox_key(std::string_view key, std::int64_t transition_id);

// A message to store in the outbox, in the same transaction as what causes it.
struct OutboxMessage {
  std::string channel;    // kChannel*
  std::string dedup_key;  // unique across the outbox: enqueued twice, it is one message; may hold the placeholder
  std::string text;
  // Messages of one lane are sent one at a time, in the order they were stored (a work item's comments appear in
  // the order of its events). "" = no order (Telegram).
  std::string lane = {};
  TaskId task_id = 0;  // whose latest transition fills the placeholder outside a transition; 0 = none
};

struct NotificationRow {
  NotificationId id = 0;
  std::string dedup_key;  // the same key enqueued twice is one notification
  std::string channel = std::string(kChannelTelegram);
  std::string lane;
  std::string text;
  NotificationStatus status = NotificationStatus::kPending;
  int attempts = 0;
  std::string error;
  TimePoint created_at{};
  TimePoint next_attempt_at{};
  std::optional<TimePoint> sent_at;
};

struct OutboxCounts {
  std::int64_t pending = 0, sent = 0, failed = 0;
};

}  // namespace orch
