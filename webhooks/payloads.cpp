#include "webhooks/payloads.h"

#include <nlohmann/json.hpp>

namespace orch {
namespace {

using json = nlohmann::json;

Result<json> parse_object(std::string_view body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid("body is not valid JSON");
  if (!j.is_object()) return invalid("body is not a JSON object");
  return j;
}

// The member `key` of `obj`, which must be an object; `path` names it in errors.
Result<const json*> member(const json& obj, const char* key, const std::string& path) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return invalid("missing field " + path);
  return &*it;
}

Result<std::string> string_at(const json& obj, const char* key, const std::string& path) {
  auto m = member(obj, key, path);
  if (!m.ok()) return m.status();
  if (!m.value()->is_string()) return invalid("field " + path + " is not a string");
  return m.value()->get<std::string>();
}

Result<const json*> object_at(const json& obj, const char* key, const std::string& path) {
  auto m = member(obj, key, path);
  if (!m.ok()) return m.status();
  if (!m.value()->is_object()) return invalid("field " + path + " is not an object");
  return m;
}

Result<std::int64_t> int_at(const json& obj, const char* key, const std::string& path) {
  auto m = member(obj, key, path);
  if (!m.ok()) return m.status();
  if (!m.value()->is_number_integer()) return invalid("field " + path + " is not an integer");
  return m.value()->get<std::int64_t>();
}

std::string optional_string(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<std::string> repo_of(const json& body) {
  auto repo = object_at(body, "repository", "repository");
  if (!repo.ok()) return repo.status();
  return string_at(*repo.value(), "full_name", "repository.full_name");
}

}  // namespace

PlaneAction parse_plane_action(std::string_view a) {
  if (a == "created" || a == "create") return PlaneAction::kCreated;
  if (a == "updated" || a == "update") return PlaneAction::kUpdated;
  if (a == "deleted" || a == "delete") return PlaneAction::kDeleted;
  return PlaneAction::kOther;
}

bool PlaneIssueEvent::may_change_state() const {
  if (action == PlaneAction::kCreated) return true;
  if (action != PlaneAction::kUpdated) return false;
  if (!has_activity) return true;
  return field == "state" || field == "state_id";
}

Result<PlaneIssueEvent> parse_plane_issue(std::string_view body) {
  auto parsed = parse_object(body);
  if (!parsed.ok()) return parsed.status();
  const json& j = parsed.value();
  PlaneIssueEvent e;
  auto action = string_at(j, "action", "action");
  if (!action.ok()) return action.status();
  e.action_text = action.value();
  e.action = parse_plane_action(e.action_text);

  auto data = object_at(j, "data", "data");
  if (!data.ok()) return data.status();
  const json& d = *data.value();
  auto id = string_at(d, "id", "data.id");
  if (!id.ok()) return id.status();
  e.item.id = id.value();
  if (e.action == PlaneAction::kDeleted) return e;  // a delete may carry nothing but the id

  auto project = string_at(d, "project", "data.project");
  if (!project.ok()) return project.status();
  e.item.project_id = project.value();
  auto seq = int_at(d, "sequence_id", "data.sequence_id");
  if (!seq.ok()) return seq.status();
  e.item.sequence_id = seq.value();
  // data.state is an object {id, name, color, group} in webhooks; a bare id is accepted too.
  auto state = member(d, "state", "data.state");
  if (!state.ok()) return state.status();
  if (state.value()->is_string()) {
    e.item.state_id = state.value()->get<std::string>();
  } else if (state.value()->is_object()) {
    auto sid = string_at(*state.value(), "id", "data.state.id");
    if (!sid.ok()) return sid.status();
    e.item.state_id = sid.value();
    e.state_name = optional_string(*state.value(), "name");
  } else {
    return invalid("field data.state is neither an object nor an id");
  }
  e.item.name = optional_string(d, "name");
  e.item.description = optional_string(d, "description_stripped");
  if (e.item.description.empty()) e.item.description = optional_string(d, "description_html");
  if (std::string updated = optional_string(d, "updated_at"); !updated.empty())
    e.item.updated_at = parse_rfc3339(updated);

  if (auto act = j.find("activity"); act != j.end() && act->is_object()) {
    e.has_activity = true;
    e.field = optional_string(*act, "field");
    if (auto actor = act->find("actor"); actor != act->end() && actor->is_object())
      e.actor_id = optional_string(*actor, "id");
  }
  return e;
}

GiteaEvent classify_gitea_event(std::string_view t) {
  if (t == "push") return GiteaEvent::kPush;
  // pull_request_sync is Event-Type for new commits on the PR head; X-Gitea-Event says pull_request for all of them.
  if (t == "pull_request" || t == "pull_request_sync") return GiteaEvent::kPullRequest;
  if (t == "pull_request_review_approved" || t == "pull_request_approved") return GiteaEvent::kReviewApproved;
  if (t == "pull_request_review_rejected" || t == "pull_request_rejected") return GiteaEvent::kReviewRejected;
  if (t == "status") return GiteaEvent::kStatus;
  return GiteaEvent::kOther;
}

const char* gitea_event_name(GiteaEvent e) {
  switch (e) {
    case GiteaEvent::kPush: return "push";
    case GiteaEvent::kPullRequest: return "pull_request";
    case GiteaEvent::kReviewApproved: return "review_approved";
    case GiteaEvent::kReviewRejected: return "review_rejected";
    case GiteaEvent::kStatus: return "status";
    case GiteaEvent::kOther: return "other";
  }
  return "other";
}

bool GiteaPush::deleted() const { return !after.empty() && after.find_first_not_of('0') == std::string::npos; }

Result<GiteaPush> parse_gitea_push(std::string_view body) {
  auto parsed = parse_object(body);
  if (!parsed.ok()) return parsed.status();
  const json& j = parsed.value();
  GiteaPush p;
  auto repo = repo_of(j);
  if (!repo.ok()) return repo.status();
  p.repo = repo.value();
  auto ref = string_at(j, "ref", "ref");
  if (!ref.ok()) return ref.status();
  p.ref = ref.value();
  constexpr std::string_view kHeads = "refs/heads/";
  if (p.ref.compare(0, kHeads.size(), kHeads) == 0) p.branch = p.ref.substr(kHeads.size());
  auto after = string_at(j, "after", "after");
  if (!after.ok()) return after.status();
  p.after = after.value();
  return p;
}

Result<GiteaPullRequestEvent> parse_gitea_pull_request(std::string_view body) {
  auto parsed = parse_object(body);
  if (!parsed.ok()) return parsed.status();
  const json& j = parsed.value();
  GiteaPullRequestEvent e;
  auto repo = repo_of(j);
  if (!repo.ok()) return repo.status();
  e.repo = repo.value();
  auto action = string_at(j, "action", "action");
  if (!action.ok()) return action.status();
  e.action = action.value();
  auto pr = object_at(j, "pull_request", "pull_request");
  if (!pr.ok()) return pr.status();
  const json& p = *pr.value();
  auto number = int_at(p, "number", "pull_request.number");
  if (!number.ok()) {
    number = int_at(j, "number", "number");
    if (!number.ok()) return number.status();
  }
  e.pr.number = number.value();
  auto state = string_at(p, "state", "pull_request.state");
  if (!state.ok()) return state.status();
  e.pr.open = state.value() == "open";
  if (auto m = p.find("merged"); m != p.end() && m->is_boolean()) e.pr.merged = m->get<bool>();
  auto head = object_at(p, "head", "pull_request.head");
  if (!head.ok()) return head.status();
  auto head_ref = string_at(*head.value(), "ref", "pull_request.head.ref");
  if (!head_ref.ok()) return head_ref.status();
  e.pr.head_ref = head_ref.value();
  auto head_sha = string_at(*head.value(), "sha", "pull_request.head.sha");
  if (!head_sha.ok()) return head_sha.status();
  e.pr.head_sha = head_sha.value();
  if (auto base = p.find("base"); base != p.end() && base->is_object()) e.pr.base_ref = optional_string(*base, "ref");
  e.pr.html_url = optional_string(p, "html_url");
  if (auto sender = j.find("sender"); sender != j.end() && sender->is_object())
    e.sender = optional_string(*sender, "login");
  return e;
}

Result<GiteaStatusEvent> parse_gitea_status(std::string_view body) {
  auto parsed = parse_object(body);
  if (!parsed.ok()) return parsed.status();
  const json& j = parsed.value();
  GiteaStatusEvent s;
  auto repo = repo_of(j);
  if (!repo.ok()) return repo.status();
  s.repo = repo.value();
  auto sha = string_at(j, "sha", "sha");
  if (!sha.ok()) return sha.status();
  s.sha = sha.value();
  auto state = string_at(j, "state", "state");
  if (!state.ok()) return state.status();
  s.state = state.value();
  s.context = optional_string(j, "context");
  s.target_url = optional_string(j, "target_url");
  return s;
}

}  // namespace orch
