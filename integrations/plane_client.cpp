// DESIGN: Plane's cursor pagination ignores the cursor's value and computes offset = page * per_page, with
// per_page defaulting to 1000 when absent; so every request of a listing carries the same explicit per_page,
// and the loop follows next_page_results, never the presence of next_cursor (which is still set on the last
// page). Only one page is held in memory: items are visited as each page arrives.
#include "integrations/plane_client.h"

namespace orch {

namespace {

using nlohmann::json;

std::string str_or_empty(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

// One page of a paginated listing: validated envelope. `what` names the call for messages.
struct Page {
  json results;
  bool more = false;
  std::string next_cursor;
};

Result<Page> parse_page(const HttpResponse& r, const std::string& what) {
  auto parsed = parse_json_body(r, what);
  if (!parsed.ok()) return parsed.status();
  json& j = parsed.value();
  if (!j.is_object() || !j.contains("results") || !j["results"].is_array())
    return unavailable(what + ": malformed page: no results array");
  Page p;
  p.results = std::move(j["results"]);
  auto more = j.find("next_page_results");
  p.more = more != j.end() && more->is_boolean() && more->get<bool>();
  p.next_cursor = str_or_empty(j, "next_cursor");
  if (p.more && p.next_cursor.empty()) return unavailable(what + ": malformed page: more results but no next_cursor");
  return p;
}

std::string state_names(const std::map<std::string, std::string>& by_name) {
  std::string out;
  for (const auto& [name, id] : by_name) out += (out.empty() ? "" : ", ") + name;
  return out.empty() ? "none" : out;
}

}  // namespace

Result<WorkItem> parse_plane_work_item(const json& j) {
  if (!j.is_object()) return invalid("plane work item is not an object");
  WorkItem w;
  w.id = str_or_empty(j, "id");
  if (w.id.empty()) return invalid("plane work item without an id");
  w.project_id = str_or_empty(j, "project");
  if (auto it = j.find("sequence_id"); it != j.end() && it->is_number_integer())
    w.sequence_id = it->get<std::int64_t>();
  w.name = str_or_empty(j, "name");
  w.description = str_or_empty(j, "description_stripped");
  if (w.description.empty()) w.description = str_or_empty(j, "description_html");
  if (auto it = j.find("state"); it != j.end()) {
    if (it->is_string())
      w.state_id = it->get<std::string>();
    else if (it->is_object())
      w.state_id = str_or_empty(*it, "id");  // ?expand=state, or a webhook's data
  }
  std::string updated = str_or_empty(j, "updated_at");
  if (!updated.empty()) w.updated_at = parse_rfc3339(updated);
  return w;
}

PlaneClient::PlaneClient(HttpClient& http, Secret api_key, PlaneClientOptions options)
    : http_(http), api_key_(std::move(api_key)), options_(options) {}

std::string PlaneClient::project_path(const ProjectSpec& project) const {
  return "/api/v1/workspaces/" + url_escape(project.plane_workspace) + "/projects/" +
         url_escape(project.plane_project_id) + "/";
}

HttpRequest PlaneClient::request(std::string method, std::string target, const nlohmann::json* body) const {
  HttpRequest r =
      body ? HttpRequest::json(std::move(method), std::move(target), *body) : HttpRequest::get(std::move(target));
  r.headers.push_back({"X-API-Key", api_key_.reveal()});
  return r;
}

TrackerState PlaneClient::classify(const StateIds& ids, const std::string& state_id) const {
  if (state_id.empty()) return TrackerState::kOther;
  if (state_id == ids.in_progress) return TrackerState::kInProgress;
  if (state_id == ids.approved) return TrackerState::kApproved;
  if (state_id == ids.rejected) return TrackerState::kRejected;
  return TrackerState::kOther;
}

void PlaneClient::forget_cache() {
  std::lock_guard lock(mu_);
  states_.clear();
  state_names_.clear();
  identifiers_.clear();
}

Result<std::map<std::string, std::string>> PlaneClient::states_by_name(const ProjectSpec& project) {
  const std::string base = project_path(project);
  {
    std::lock_guard lock(mu_);
    if (auto it = state_names_.find(base); it != state_names_.end()) return it->second;
  }
  // Not under the lock: two threads may both list on a cold cache, which is harmless and rare.
  std::map<std::string, std::string> by_name;
  std::string cursor;
  for (int page = 0; page < options_.max_pages; ++page) {
    std::string target = base + "states/?per_page=" + std::to_string(options_.per_page);
    if (!cursor.empty()) target += "&cursor=" + url_escape(cursor);
    auto r = http_.send(request("GET", target));
    if (!r.ok()) return r.status();
    auto p = parse_page(r.value(), "plane: states of project '" + project.name + "'");
    if (!p.ok()) return p.status();
    for (const auto& s : p.value().results) {
      if (!s.is_object()) continue;
      std::string name = str_or_empty(s, "name"), id = str_or_empty(s, "id");
      if (!name.empty() && !id.empty()) by_name.emplace(name, id);
    }
    if (!p.value().more) break;
    cursor = p.value().next_cursor;
  }
  std::lock_guard lock(mu_);
  state_names_[base] = by_name;
  return by_name;
}

Result<PlaneClient::StateIds> PlaneClient::state_ids(const ProjectSpec& project) {
  const std::string base = project_path(project);
  {
    std::lock_guard lock(mu_);
    if (auto it = states_.find(base); it != states_.end()) return it->second;
  }
  auto listed = states_by_name(project);
  if (!listed.ok()) return listed.status();
  const std::map<std::string, std::string>& by_name = listed.value();
  StateIds ids;
  const PlaneStateNames& want = project.plane_states;
  for (auto [name, out] : {std::pair{&want.in_progress, &ids.in_progress}, std::pair{&want.approved, &ids.approved},
                           std::pair{&want.rejected, &ids.rejected}}) {
    auto it = by_name.find(*name);
    if (it == by_name.end())
      return invalid("plane project '" + project.name + "' has no state named '" + *name +
                     "' (states: " + state_names(by_name) + ")");
    *out = it->second;
  }
  std::lock_guard lock(mu_);
  states_[base] = ids;
  return ids;
}

Result<std::string> PlaneClient::state_id_by_name(const ProjectSpec& project, const std::string& name) {
  auto listed = states_by_name(project);
  if (!listed.ok()) return listed.status();
  // Exact and case-sensitive, as state_ids() matches the configured names: one rule for every state name orch
  // reads from its config, so a name that resolves for a gate resolves the same for a write.
  auto it = listed.value().find(name);
  if (it == listed.value().end())
    return not_found("plane project '" + project.name + "' has no state named '" + name +
                     "' (states: " + state_names(listed.value()) + ")");
  return it->second;
}

Result<TrackerState> PlaneClient::classify_state(const ProjectSpec& project, const std::string& state_id) {
  auto ids = state_ids(project);
  if (!ids.ok()) return ids.status();
  return classify(ids.value(), state_id);
}

Result<WorkItem> PlaneClient::get_work_item(const ProjectSpec& project, const std::string& work_item_id) {
  auto r = http_.send(request("GET", project_path(project) + "work-items/" + url_escape(work_item_id) + "/"));
  if (!r.ok()) return r.status();
  auto j = parse_json_body(r.value(), "plane: work item " + work_item_id);
  if (!j.ok()) return j.status();
  return parse_plane_work_item(j.value());
}

Status PlaneClient::list_work_items(const ProjectSpec& project, bool newest_first,
                                    const std::function<bool(const WorkItem&, TrackerState)>& visit) {
  auto ids = state_ids(project);
  if (!ids.ok()) return ids.status();
  const std::string first = project_path(project) + "work-items/?per_page=" + std::to_string(options_.per_page) +
                            "&order_by=" + (newest_first ? "-updated_at" : "-created_at");
  const std::string what = "plane: work items of project '" + project.name + "'";
  std::string cursor;
  for (int page = 0; page < options_.max_pages; ++page) {
    std::string target = first;
    if (!cursor.empty()) target += "&cursor=" + url_escape(cursor);
    auto r = http_.send(request("GET", target));
    if (!r.ok()) return r.status();
    ++pages_fetched_;
    auto p = parse_page(r.value(), what);
    if (!p.ok()) return p.status();
    for (const auto& item : p.value().results) {
      auto w = parse_plane_work_item(item);
      if (!w.ok()) return Status{w.status().code, what + ": page " + std::to_string(page) + ": " + w.status().message};
      TrackerState st = classify(ids.value(), w.value().state_id);
      if (st == TrackerState::kOther) continue;
      if (!visit(w.value(), st)) return {};
    }
    if (!p.value().more) return {};
    cursor = p.value().next_cursor;
  }
  return internal(what + ": still more pages after " + std::to_string(options_.max_pages) + "; stopped");
}

Result<std::string> PlaneClient::project_identifier(const ProjectSpec& project) {
  const std::string base = project_path(project);
  {
    std::lock_guard lock(mu_);
    if (auto it = identifiers_.find(base); it != identifiers_.end()) return it->second;
  }
  auto r = http_.send(request("GET", base));
  if (!r.ok()) return r.status();
  auto j = parse_json_body(r.value(), "plane: project '" + project.name + "'");
  if (!j.ok()) return j.status();
  std::string identifier = j.value().is_object() ? str_or_empty(j.value(), "identifier") : "";
  if (identifier.empty()) return invalid("plane: project '" + project.name + "' has no identifier");
  std::lock_guard lock(mu_);
  identifiers_[base] = identifier;
  return identifier;
}

Status PlaneClient::move_work_item(const ProjectSpec& project, const std::string& work_item_id, TrackerState to) {
  auto ids = state_ids(project);
  if (!ids.ok()) return ids.status();
  std::string state;
  switch (to) {
    case TrackerState::kInProgress: state = ids.value().in_progress; break;
    case TrackerState::kApproved: state = ids.value().approved; break;
    case TrackerState::kRejected: state = ids.value().rejected; break;
    case TrackerState::kOther: return invalid("plane: cannot move a work item to an unconfigured state");
  }
  return patch_state(project, work_item_id, state);
}

Status PlaneClient::move_work_item_to_state(const ProjectSpec& project, const std::string& work_item_id,
                                            const std::string& state_name) {
  auto id = state_id_by_name(project, state_name);
  if (!id.ok()) return id.status();
  return patch_state(project, work_item_id, id.value());
}

// Setting a state is idempotent (the same PATCH twice leaves the same item), so the request keeps the default
// idempotent = true: a 5xx or a timeout is retried.
Status PlaneClient::patch_state(const ProjectSpec& project, const std::string& work_item_id,
                                const std::string& state_id) {
  json body = {{"state", state_id}};
  auto r = http_.send(request("PATCH", project_path(project) + "work-items/" + url_escape(work_item_id) + "/", &body));
  return r.status();
}

Result<std::string> PlaneClient::current_user_id() {
  HttpRequest req = request("GET", "/api/v1/users/me/");
  req.any_status = true;  // to tell a refused key (401 / 403) from other client errors
  auto r = http_.send(req);
  if (!r.ok()) return r.status();
  const HttpResponse& res = r.value();
  const std::string what = "plane: GET /api/v1/users/me/";
  if (res.status == 401 || res.status == 403)
    return invalid(what + ": the API key was refused (" + std::to_string(res.status) +
                   "): " + http_.redact(res.body.substr(0, 200)));
  if (res.status == 429 || res.status >= 500) return unavailable(what + " answered " + std::to_string(res.status));
  if (res.status < 200 || res.status >= 300) return invalid(what + " answered " + std::to_string(res.status));
  auto j = parse_json_body(res, what);
  if (!j.ok()) return invalid(j.status().message);
  std::string id = j.value().is_object() ? str_or_empty(j.value(), "id") : "";
  if (id.empty()) return invalid(what + ": malformed answer: no user id");
  return id;
}

Status PlaneClient::add_comment(const ProjectSpec& project, const std::string& work_item_id, const std::string& html,
                                const std::string& external_id) {
  json body = {{"comment_html", html}};
  if (!external_id.empty()) {
    body["external_source"] = kCommentSource;
    body["external_id"] = external_id;
  }
  HttpRequest req =
      request("POST", project_path(project) + "work-items/" + url_escape(work_item_id) + "/comments/", &body);
  // Unmarked, a retried comment after a timeout could appear twice. Marked, Plane itself refuses the second one.
  req.idempotent = !external_id.empty();
  auto sent = http_.send(req);
  // 409: "Work item comment with the same external id and external source already exists" — an earlier try (whose
  // answer was lost) or another replica delivered it.
  if (!sent.ok() && sent.status().code == Code::kConflict && !external_id.empty()) return {};
  return sent.status();
}

}  // namespace orch
