// webhooks/payloads.h: the few fields orch reads from Plane and Gitea webhook bodies (docs/wire-formats.md §1.2
// and §2.3), parsed into small structs. Tolerant of everything it does not read; a missing or mistyped field it
// does read is kInvalid naming the field ("data.state.id"). Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "engine/facts.h"
#include "engine/status.h"

namespace orch {

// ---- Plane (CE webhooks v1) ----

enum class PlaneAction { kCreated, kUpdated, kDeleted, kOther };
// "created"/"updated"/"deleted" (current CE) and the legacy "create"/"update"/"delete".
PlaneAction parse_plane_action(std::string_view action);

struct PlaneIssueEvent {
  PlaneAction action = PlaneAction::kOther;
  std::string action_text;  // as sent, for logs
  WorkItem item;            // from `data`: id, project, sequence_id, name, description_stripped, state.id, updated_at
  std::string state_name;   // data.state.name, for logs only
  std::string field;        // activity.field; "" when null (created) or when there is no activity (legacy)
  bool has_activity = false;
  std::string actor_id;  // activity.actor.id; "" when absent

  // A state change (field `state` from the API, `state_id` from the web UI), a created issue (it may already be
  // in a state), or a legacy update without an activity block (it does not say which field changed).
  bool may_change_state() const;
};

// Parses an `issue` event body.
Result<PlaneIssueEvent> parse_plane_issue(std::string_view body);

// ---- Gitea ----

// Dispatch on X-Gitea-Event-Type; the coarse X-Gitea-Event values are understood too, for old senders.
enum class GiteaEvent { kPush, kPullRequest, kReviewApproved, kReviewRejected, kStatus, kOther };
GiteaEvent classify_gitea_event(std::string_view event_type);
const char* gitea_event_name(GiteaEvent e);

struct GiteaPush {
  std::string repo;    // repository.full_name
  std::string ref;     // refs/heads/<b> or refs/tags/<t>
  std::string branch;  // <b> for a branch ref, "" otherwise
  std::string after;   // the new tip; all zeros when the ref was deleted
  bool deleted() const;
};
Result<GiteaPush> parse_gitea_push(std::string_view body);

// The pull_request family (opened, synchronized, closed, reopened, edited, ...) and the review events, which
// carry the same PullRequestPayload.
struct GiteaPullRequestEvent {
  std::string repo;    // repository.full_name
  std::string action;  // "opened", "synchronized", "closed", "reviewed", ...
  PullRequestInfo pr;  // number, open (state == "open"), merged, head.ref, head.sha, base.ref, html_url
  std::string sender;  // sender.login: for a review, the reviewer; "" when absent
};
Result<GiteaPullRequestEvent> parse_gitea_pull_request(std::string_view body);

struct GiteaStatusEvent {
  std::string repo;  // repository.full_name
  std::string sha;
  std::string state;       // pending, success, error, failure, warning, skipped
  std::string context;     // e.g. ci/build
  std::string target_url;  // the CI run's page; "" when absent
};
Result<GiteaStatusEvent> parse_gitea_status(std::string_view body);

}  // namespace orch
