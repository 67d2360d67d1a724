// engine/store/rows.h: the column lists of the SQL stores and the readers that turn one result row into a model row,
// written once for both dialects. The readers read by position, so each list and its reader sit side by side and
// must change together. A reader takes any Row with null(c), text(c), int64(c), boolean(c), bytes(c) and name(c)
// (engine/store/sqlite_connection.h, pg_connection.h); a value that does not parse throws CorruptRow.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "engine/clock.h"
#include "engine/model.h"
#include "engine/store.h"

namespace orch {

// A row that does not parse (an enum name this binary does not know): a broken invariant, reported as kInternal.
struct CorruptRow : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A parameter that is a byte string (the delivery body: BLOB, BYTEA), not text.
struct Bytes {
  const std::string& bytes;
};

// Column lists are macros so that every statement stays a single string literal: greppable, and one cache entry.
// The _OF forms qualify each column (`ORCH_JOB_COLUMNS_OF("jobs.")`) for statements that join the table.
#define ORCH_TASK_COLUMNS                                                                                         \
  "id, project, work_item_id, work_item_key, title, description, stage, visit, branch, blocked, blocked_reason, " \
  "rejection_reason, pr_number, pr_state, review_state, head_sha, tracker_state, created_at, entered_stage_at, "  \
  "updated_at, spend_micros, budget_raise_micros, budget_hold, budget_hold_at"
#define ORCH_JOB_COLUMNS_OF(t)                                                                                     \
  t "id, " t "task_id, " t "visit, " t "stage, " t "agent, " t "status, " t "attempt, " t "error, " t "worker, " t \
    "created_at, " t "run_after, " t "started_at, " t "heartbeat_at, " t "finished_at, " t "step, " t              \
    "step_attempts, " t "step_error, " t "tokens_in, " t "tokens_out, " t "model, " t "cost_micros, " t            \
    "cancel_requested, " t "launched_at"
#define ORCH_JOB_COLUMNS ORCH_JOB_COLUMNS_OF("")
// A running job back in the queue as if never claimed (a hand-back, start-up recovery, the dispatch rule): its claim,
// its run's times and its launch cleared, in every statement that does it.
#define ORCH_JOB_UNCLAIMED "status = 'queued', worker = '', started_at = NULL, heartbeat_at = NULL, launched_at = NULL"

#define ORCH_DELIVERY_COLUMNS                                                                                  \
  "seq, source, delivery_id, event, body, status, error, attempts, received_at, handled_at, lane, run_after, " \
  "claimed_by, claim_expires_at"
#define ORCH_NOTIFICATION_COLUMNS_OF(t)                                                                                \
  t "id, " t "dedup_key, " t "text, " t "status, " t "attempts, " t "error, " t "created_at, " t "next_attempt_at, " t \
    "sent_at, " t "channel, " t "lane"
#define ORCH_NOTIFICATION_COLUMNS ORCH_NOTIFICATION_COLUMNS_OF("")
#define ORCH_TRANSITION_SELECT                                                                         \
  "SELECT tr.id, tr.task_id, t.work_item_key, tr.from_stage, tr.to_stage, tr.cause, tr.detail, tr.at " \
  "FROM transitions tr JOIN tasks t ON t.id = tr.task_id "
#define ORCH_PROJECT_COLUMNS "name, plane_identifier, tracker_horizon, tracker_full_sweep"
#define ORCH_RUNNER_COLUMNS "name, labels, token_sha256, registered_at, last_seen_at, revoked"
#define ORCH_GATE_EVALUATION_COLUMNS_OF(t) t "task_id, " t "stage, " t "visit, " t "green, " t "why, " t "since"

// ---- columns ----------------------------------------------------------------------------------------------------

template <class Row>
int int32_at(const Row& r, int c) {
  return static_cast<int>(r.int64(c));
}
template <class Row>
TimePoint time_at(const Row& r, int c) {
  return from_millis(r.int64(c));
}
template <class Row>
std::optional<TimePoint> opt_time_at(const Row& r, int c) {
  if (r.null(c)) return std::nullopt;
  return time_at(r, c);
}
template <class E, class Row>
E enum_at(const Row& r, int c, std::optional<E> (*parse)(std::string_view)) {
  std::string text = r.text(c);
  std::optional<E> v = parse(text);
  if (!v) throw CorruptRow(std::string("unknown ") + r.name(c) + " '" + text + "' in the database");
  return *v;
}

// ---- rows -------------------------------------------------------------------------------------------------------

inline constexpr auto read_int0 = [](const auto& r) -> std::int64_t { return r.int64(0); };
inline constexpr auto read_text0 = [](const auto& r) -> std::string { return r.text(0); };

// ORCH_TASK_COLUMNS
inline constexpr auto read_task = [](const auto& r) {
  TaskRow t;
  t.id = r.int64(0);
  t.project = r.text(1);
  t.work_item_id = r.text(2);
  t.work_item_key = r.text(3);
  t.title = r.text(4);
  t.description = r.text(5);
  t.stage = r.text(6);
  t.visit = int32_at(r, 7);
  t.branch = r.text(8);
  t.blocked = r.boolean(9);
  t.blocked_reason = r.text(10);
  t.rejection_reason = r.text(11);
  if (!r.null(12)) t.pr_number = r.int64(12);
  t.pr_state = enum_at(r, 13, parse_pr_state);
  t.review_state = enum_at(r, 14, parse_review_state);
  t.head_sha = r.text(15);
  t.tracker_state = r.text(16);
  t.created_at = time_at(r, 17);
  t.entered_stage_at = time_at(r, 18);
  t.updated_at = time_at(r, 19);
  t.spend = r.int64(20);
  t.budget_raise = r.int64(21);
  t.budget_hold = r.text(22);
  t.budget_hold_at = opt_time_at(r, 23);
  return t;
};

// ORCH_JOB_COLUMNS
inline constexpr auto read_job = [](const auto& r) {
  JobRow j;
  j.id = r.int64(0);
  j.task_id = r.int64(1);
  j.visit = int32_at(r, 2);
  j.stage = r.text(3);
  j.agent = r.text(4);
  j.status = enum_at(r, 5, parse_job_status);
  j.attempt = int32_at(r, 6);
  j.error = r.text(7);
  j.worker = r.text(8);
  j.created_at = time_at(r, 9);
  j.run_after = time_at(r, 10);
  j.started_at = opt_time_at(r, 11);
  j.heartbeat_at = opt_time_at(r, 12);
  j.finished_at = opt_time_at(r, 13);
  j.step = r.text(14);
  j.step_attempts = int32_at(r, 15);
  j.step_error = r.text(16);
  j.tokens_in = r.int64(17);
  j.tokens_out = r.int64(18);
  j.model = r.text(19);
  j.cost = r.int64(20);
  j.cancel_requested = r.text(21);
  j.launched_at = opt_time_at(r, 22);
  return j;
};

// ORCH_DELIVERY_COLUMNS
inline constexpr auto read_delivery = [](const auto& r) {
  DeliveryRow d;
  d.seq = r.int64(0);
  d.source = enum_at(r, 1, parse_source);
  d.delivery_id = r.text(2);
  d.event = r.text(3);
  d.body = r.bytes(4);
  d.status = enum_at(r, 5, parse_delivery_status);
  d.error = r.text(6);
  d.attempts = int32_at(r, 7);
  d.received_at = time_at(r, 8);
  d.handled_at = opt_time_at(r, 9);
  d.lane = r.text(10);
  d.run_after = time_at(r, 11);
  d.claimed_by = r.text(12);
  d.claim_expires_at = opt_time_at(r, 13);
  return d;
};

// ORCH_NOTIFICATION_COLUMNS
inline constexpr auto read_notification = [](const auto& r) {
  NotificationRow n;
  n.id = r.int64(0);
  n.dedup_key = r.text(1);
  n.text = r.text(2);
  n.status = enum_at(r, 3, parse_notification_status);
  n.attempts = int32_at(r, 4);
  n.error = r.text(5);
  n.created_at = time_at(r, 6);
  n.next_attempt_at = time_at(r, 7);
  n.sent_at = opt_time_at(r, 8);
  n.channel = r.text(9);
  n.lane = r.text(10);
  return n;
};

// ORCH_TRANSITION_SELECT
inline constexpr auto read_transition = [](const auto& r) {
  TransitionRow t;
  t.id = r.int64(0);
  t.task_id = r.int64(1);
  t.work_item_key = r.text(2);
  t.from = r.text(3);
  t.to = r.text(4);
  t.cause = enum_at(r, 5, parse_cause);
  t.detail = r.text(6);
  t.at = time_at(r, 7);
  return t;
};

// ORCH_GATE_EVALUATION_COLUMNS_OF
inline constexpr auto read_gate_evaluation = [](const auto& r) {
  GateEvaluation e;
  e.task_id = r.int64(0);
  e.stage = r.text(1);
  e.visit = int32_at(r, 2);
  e.green = r.boolean(3);
  e.why = r.text(4);
  e.since = time_at(r, 5);
  return e;
};

// ORCH_PROJECT_COLUMNS
inline constexpr auto read_project = [](const auto& r) {
  ProjectRow p;
  p.name = r.text(0);
  p.plane_identifier = r.text(1);
  p.tracker_horizon = opt_time_at(r, 2);
  p.tracker_full_sweep = opt_time_at(r, 3);
  return p;
};

// ORCH_RUNNER_COLUMNS. Labels are stored comma-separated (a label never holds a comma: app/runner_registry.h).
inline constexpr auto read_runner = [](const auto& r) {
  RunnerRow row;
  row.name = r.text(0);
  const std::string labels = r.text(1);
  for (std::size_t at = 0; at < labels.size();) {
    std::size_t comma = labels.find(',', at);
    if (comma == std::string::npos) comma = labels.size();
    if (comma > at) row.labels.push_back(labels.substr(at, comma - at));
    at = comma + 1;
  }
  row.token_sha256 = r.text(2);
  row.registered_at = time_at(r, 3);
  row.last_seen_at = opt_time_at(r, 4);
  row.revoked = r.int64(5) != 0;
  return row;
};

}  // namespace orch
