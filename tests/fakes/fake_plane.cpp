#include "tests/fakes/fake_plane.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "tests/fakes/signing.h"

namespace orch::testing {

namespace {

using ojson = nlohmann::ordered_json;

const std::string kProjectPrefix = R"(/api/v1/workspaces/([^/]+)/projects/([^/]+))";
const std::string kUserId = FakePlane::kApiUserId;  // who created the seeded rows

void send_json(httplib::Response& res, int status, const ojson& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

std::string strip_tags(const std::string& html) {
  std::string out;
  bool in_tag = false;
  for (char c : html) {
    if (c == '<')
      in_tag = true;
    else if (c == '>')
      in_tag = false;
    else if (!in_tag)
      out += c;
  }
  return out;
}

// Django's APPEND_SLASH: a slashless URL is answered with a 301 (a PATCH or POST body is lost on the way).
bool redirect_slashless(const httplib::Request& req, httplib::Response& res) {
  if (!req.path.empty() && req.path.back() == '/') return false;
  auto q = req.target.find('?');
  res.status = 301;
  res.set_header("Location", req.path + "/" + (q == std::string::npos ? "" : req.target.substr(q)));
  return true;
}

bool parse_int(const std::string& s, long long& out) {
  if (s.empty()) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t k = i; k < s.size(); ++k)
    if (!std::isdigit(static_cast<unsigned char>(s[k]))) return false;
  out = std::stoll(s);
  return true;
}

// plane.md §4: offset = page * per_page; per_page defaults to 1000 and is capped at 1000.
// `at(i)` renders row i: only the rows of the requested page are turned into JSON.
void paginate(const httplib::Request& req, httplib::Response& res, size_t count,
              const std::function<ojson(size_t)>& at) {
  long long per_page = 1000;
  if (req.has_param("per_page")) {
    if (!parse_int(req.get_param_value("per_page"), per_page))
      return send_json(res, 400, {{"detail", "Invalid per_page parameter."}});
    if (per_page > 1000) return send_json(res, 400, {{"detail", "Invalid per_page value. Cannot exceed 1000."}});
    if (per_page <= 0) return send_json(res, 500, {{"error", "Something went wrong please try again later"}});
  }
  long long page = 0;
  if (req.has_param("cursor")) {
    std::string c = req.get_param_value("cursor");
    auto a = c.find(':'), b = c.find(':', a == std::string::npos ? a : a + 1);
    long long value = 0, is_prev = 0;
    if (a == std::string::npos || b == std::string::npos || !parse_int(c.substr(0, a), value) ||
        !parse_int(c.substr(a + 1, b - a - 1), page) || !parse_int(c.substr(b + 1), is_prev))
      return send_json(res, 400, {{"detail", "Invalid cursor parameter."}});
    if (page < 0) return send_json(res, 400, {{"detail", "Error in parsing"}});
  }
  const long long total = static_cast<long long>(count);
  const long long offset = page * per_page;
  ojson results = ojson::array();
  for (long long i = offset; i < std::min(total, offset + per_page); ++i) results.push_back(at(static_cast<size_t>(i)));
  ojson env;
  env["grouped_by"] = nullptr;
  env["sub_grouped_by"] = nullptr;
  env["total_count"] = total;
  env["next_cursor"] = std::to_string(per_page) + ":" + std::to_string(page + 1) + ":0";
  env["prev_cursor"] = std::to_string(per_page) + ":" + std::to_string(page - 1) + ":1";
  env["next_page_results"] = offset + per_page < total;
  env["prev_page_results"] = page > 0;
  env["count"] = results.size();
  env["total_pages"] = (total + per_page - 1) / per_page;
  env["total_results"] = total;
  env["extra_stats"] = nullptr;
  env["results"] = std::move(results);
  send_json(res, 200, env);
}

}  // namespace

FakePlane::FakePlane() : FakeServer("fake plane") {
  install_routes();
  start();
}

FakePlane::~FakePlane() { stop(); }

std::string FakePlane::default_error_body(int status) const {
  if (status == 429) return R"({"error_code":5900,"error_message":"RATE_LIMIT_EXCEEDED"})";
  if (status == 404) return R"({"error":"The requested resource does not exist."})";
  return R"({"error":"Something went wrong please try again later"})";
}

TimePoint FakePlane::now_locked() const {
  if (clock_) return clock_->now();
  return now_ ? *now_ : std::chrono::system_clock::now();
}

void FakePlane::set_clock(const Clock* clock) {
  std::lock_guard lock(mu_);
  clock_ = clock;
}

void FakePlane::set_rate_limit(int requests, std::chrono::milliseconds window) {
  std::lock_guard lock(mu_);
  rate_limit_ = requests;
  rate_window_ = window;
  rate_history_.clear();
}

int FakePlane::throttled() const {
  std::lock_guard lock(mu_);
  return throttled_;
}

// DRF's SimpleRateThrottle as Plane's ApiKeyRateThrottle extends it: drop the history older than the window; full
// -> 429 with Retry-After = ceil(wait()) and no rate headers; else record the request and report Remaining (this one
// counted) and Reset = int(now + window).
bool FakePlane::throttle_locked(const std::string& key, httplib::Response& res) {
  const TimePoint now = now_locked();
  auto& history = rate_history_[key];
  while (!history.empty() && history.back() <= now - rate_window_) history.pop_back();
  const auto window_s = std::chrono::duration<double>(rate_window_).count();
  if (static_cast<int>(history.size()) >= rate_limit_) {
    const double remaining_s =
        history.empty() ? window_s : window_s - std::chrono::duration<double>(now - history.back()).count();
    const double available = std::max(1.0, static_cast<double>(rate_limit_) - static_cast<double>(history.size()) + 1);
    res.status = 429;
    res.set_header("Retry-After", std::to_string(static_cast<long long>(std::ceil(remaining_s / available))));
    res.set_content(default_error_body(429), "application/json");
    ++throttled_;
    return false;
  }
  history.push_front(now);
  const double now_s = std::chrono::duration<double>(now.time_since_epoch()).count();
  res.set_header("X-RateLimit-Remaining", std::to_string(std::max(0, rate_limit_ - static_cast<int>(history.size()))));
  res.set_header("X-RateLimit-Reset", std::to_string(static_cast<long long>(now_s + window_s)));
  return true;
}

void FakePlane::set_now(TimePoint now) {
  std::lock_guard lock(mu_);
  now_ = now;
}

void FakePlane::set_api_key(const std::string& key) {
  std::lock_guard lock(mu_);
  api_key_ = key;
}

bool FakePlane::authorised(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard lock(mu_);
  const TimePoint now = now_locked();
  request_times_.push_back(now);
  if (fail_until_ && now < *fail_until_) {
    res.status = fail_until_status_;
    res.set_content(default_error_body(fail_until_status_), "application/json");
    return false;
  }
  // Plane's throttle keys on the X-API-Key value and lets a request without one through (it fails authentication).
  if (api_key_.empty()) return !req.has_header("X-API-Key") || throttle_locked(req.get_header_value("X-API-Key"), res);
  if (!req.has_header("X-API-Key")) {
    send_json(res, 401, {{"detail", "Authentication credentials were not provided."}});
    return false;
  }
  if (req.get_header_value("X-API-Key") != api_key_) {
    send_json(res, 403, {{"detail", "Given API token is not valid"}});
    return false;
  }
  return throttle_locked(api_key_, res);
}

FakePlane::Project* FakePlane::project_locked(const std::string& slug, const std::string& id) {
  auto it = projects_.find(id);
  if (it == projects_.end() || it->second.workspace_slug != slug) return nullptr;
  return &it->second;
}

void FakePlane::add_project(const std::string& workspace_slug, const std::string& project_id,
                            const std::string& identifier, const std::string& workspace_id) {
  {
    std::lock_guard lock(mu_);
    Project p;
    p.workspace_slug = workspace_slug;
    p.workspace_id = workspace_id;
    p.id = project_id;
    p.identifier = identifier;
    projects_[project_id] = std::move(p);
  }
  add_state(project_id, "Backlog", "backlog");
  add_state(project_id, "Todo", "unstarted");
  add_state(project_id, "In Progress", "started");
  add_state(project_id, "Done", "completed");
  add_state(project_id, "Cancelled", "cancelled");
  std::lock_guard lock(mu_);
  projects_[project_id].states.front().is_default = true;
}

std::string FakePlane::add_state(const std::string& project_id, const std::string& name, const std::string& group) {
  std::lock_guard lock(mu_);
  auto it = projects_.find(project_id);
  if (it == projects_.end()) throw std::invalid_argument("fake plane: unknown project " + project_id);
  State s;
  s.id = random_uuid4();
  s.name = name;
  s.group = group;
  s.color = group == "started" ? "#F59E0B" : "#60646C";
  double max_seq = 0;
  for (const auto& st : it->second.states) max_seq = std::max(max_seq, st.sequence);
  s.sequence = max_seq + 15000;
  it->second.states.push_back(s);
  return s.id;
}

void FakePlane::remove_state(const std::string& project_id, const std::string& name) {
  std::lock_guard lock(mu_);
  auto& states = projects_.at(project_id).states;
  states.erase(std::remove_if(states.begin(), states.end(), [&](const State& s) { return s.name == name; }),
               states.end());
}

std::string FakePlane::state_id(const std::string& project_id, const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = projects_.find(project_id);
  if (it == projects_.end()) return {};
  for (const auto& s : it->second.states)
    if (s.name == name) return s.id;
  return {};
}

std::string FakePlane::add_work_item(const std::string& project_id, PlaneWorkItemSeed seed) {
  std::lock_guard lock(mu_);
  auto pit = projects_.find(project_id);
  if (pit == projects_.end()) throw std::invalid_argument("fake plane: unknown project " + project_id);
  Project& p = pit->second;
  Item item;
  std::string id = seed.id.empty() ? random_uuid4() : seed.id;
  item.created_at = seed.created_at.value_or(now_locked());
  item.updated_at = seed.updated_at.value_or(item.created_at);
  std::string state = seed.state_id;
  if (state.empty())
    for (const auto& s : p.states)
      if (s.is_default) state = s.id;
  std::int64_t seq = seed.sequence_id ? seed.sequence_id : p.next_sequence;
  p.next_sequence = std::max(p.next_sequence, seq + 1);
  ojson j;
  j["id"] = id;
  j["type_id"] = nullptr;
  j["created_at"] = python_isoformat(item.created_at);
  j["updated_at"] = python_isoformat(item.updated_at);
  j["deleted_at"] = nullptr;
  j["point"] = nullptr;
  j["name"] = seed.name;
  j["description_html"] = seed.description_html;
  j["description_binary"] = nullptr;
  j["priority"] = "none";
  j["start_date"] = nullptr;
  j["target_date"] = nullptr;
  j["sequence_id"] = seq;
  j["sort_order"] = 65535.0;
  j["completed_at"] = nullptr;
  j["archived_at"] = nullptr;
  j["is_draft"] = false;
  j["external_source"] = nullptr;
  j["external_id"] = nullptr;
  j["created_by"] = kUserId;
  j["updated_by"] = nullptr;
  j["project"] = project_id;
  j["workspace"] = p.workspace_id;
  j["parent"] = nullptr;
  j["state"] = state;
  j["estimate_point"] = nullptr;
  j["type"] = nullptr;
  j["assignees"] = ojson::array();
  j["labels"] = ojson::array();
  item.json = std::move(j);
  items_[id] = std::move(item);
  p.items.push_back(id);
  return id;
}

void FakePlane::set_work_item_state(const std::string& work_item_id, const std::string& state_id,
                                    std::optional<TimePoint> updated_at) {
  std::lock_guard lock(mu_);
  Item& item = items_.at(work_item_id);
  item.updated_at = updated_at.value_or(now_locked());
  item.json["state"] = state_id;
  item.json["updated_at"] = python_isoformat(item.updated_at);
}

std::optional<nlohmann::ordered_json> FakePlane::work_item(const std::string& work_item_id) const {
  std::lock_guard lock(mu_);
  auto it = items_.find(work_item_id);
  if (it == items_.end()) return std::nullopt;
  return it->second.json;
}

std::vector<nlohmann::ordered_json> FakePlane::comments(const std::string& work_item_id) const {
  std::lock_guard lock(mu_);
  auto it = items_.find(work_item_id);
  if (it == items_.end()) return {};
  return it->second.comments;
}

void FakePlane::restore_comment(const std::string& work_item_id, nlohmann::ordered_json comment) {
  std::lock_guard lock(mu_);
  items_.at(work_item_id).comments.push_back(std::move(comment));
}

void FakePlane::rate_limit_next(int times, int retry_after_seconds) {
  Fault f;
  f.status = 429;
  f.headers = {{"Retry-After", std::to_string(retry_after_seconds)}};
  inject(std::move(f), times);
}

void FakePlane::malform_next(int times, std::string body) {
  Fault f;
  f.status = 200;
  f.body = std::move(body);
  inject(std::move(f), times);
}

nlohmann::ordered_json FakePlane::state_json_locked(const Project& p, const State& s) const {
  ojson j;
  j["id"] = s.id;
  j["created_at"] = python_isoformat(now_locked());
  j["updated_at"] = python_isoformat(now_locked());
  j["deleted_at"] = nullptr;
  j["name"] = s.name;
  j["description"] = "";
  j["color"] = s.color;
  j["slug"] = "";
  j["sequence"] = s.sequence;
  j["group"] = s.group;
  j["is_triage"] = false;
  j["default"] = s.is_default;
  j["external_source"] = nullptr;
  j["external_id"] = nullptr;
  j["created_by"] = kUserId;
  j["updated_by"] = nullptr;
  j["project"] = p.id;
  j["workspace"] = p.workspace_id;
  return j;
}

void FakePlane::install_routes() {
  route("GET", "/api/v1/users/me/?", [this](const httplib::Request& req, httplib::Response& res) {
    if (redirect_slashless(req, res) || !authorised(req, res)) return;
    std::lock_guard lock(mu_);
    ojson u;  // UserLiteSerializer, as activity.actor
    u["id"] = api_user_id_;
    u["first_name"] = "orch";
    u["last_name"] = "";
    u["email"] = "orch@example.com";
    u["avatar"] = "";
    u["avatar_url"] = nullptr;
    u["display_name"] = "orch";
    send_json(res, 200, u);
  });

  route("GET", kProjectPrefix + "/?", [this](const httplib::Request& req, httplib::Response& res) {
    if (redirect_slashless(req, res) || !authorised(req, res)) return;
    std::lock_guard lock(mu_);
    Project* p = project_locked(req.matches[1], req.matches[2]);
    if (!p) return send_json(res, 404, {{"error", "The requested resource does not exist."}});
    ojson j;
    j["id"] = p->id;
    j["identifier"] = p->identifier;
    j["name"] = p->identifier + " project";
    j["workspace"] = p->workspace_id;
    send_json(res, 200, j);
  });

  route("GET", kProjectPrefix + "/states/?", [this](const httplib::Request& req, httplib::Response& res) {
    if (redirect_slashless(req, res) || !authorised(req, res)) return;
    std::lock_guard lock(mu_);
    Project* p = project_locked(req.matches[1], req.matches[2]);
    if (!p) return send_json(res, 404, {{"error", "The requested resource does not exist."}});
    std::vector<State> states = p->states;
    std::stable_sort(states.begin(), states.end(),
                     [](const State& a, const State& b) { return a.sequence < b.sequence; });
    paginate(req, res, states.size(), [&](size_t i) { return state_json_locked(*p, states[i]); });
  });

  route("GET", kProjectPrefix + "/(?:work-items|issues)/?",
        [this](const httplib::Request& req, httplib::Response& res) {
          if (redirect_slashless(req, res) || !authorised(req, res)) return;
          std::lock_guard lock(mu_);
          Project* p = project_locked(req.matches[1], req.matches[2]);
          if (!p) return send_json(res, 404, {{"error", "The requested resource does not exist."}});
          std::string order = req.has_param("order_by") ? req.get_param_value("order_by") : "-created_at";
          std::vector<const Item*> rows;
          for (const auto& id : p->items) rows.push_back(&items_.at(id));
          bool desc = !order.empty() && order[0] == '-';
          bool by_updated = (desc ? order.substr(1) : order) == "updated_at";
          auto key = [&](const Item* i) { return by_updated ? i->updated_at : i->created_at; };
          std::stable_sort(rows.begin(), rows.end(),
                           [&](const Item* a, const Item* b) { return desc ? key(a) > key(b) : key(a) < key(b); });
          paginate(req, res, rows.size(), [&](size_t i) { return rows[i]->json; });
        });

  route("GET", kProjectPrefix + "/(?:work-items|issues)/([^/]+)/?",
        [this](const httplib::Request& req, httplib::Response& res) {
          if (redirect_slashless(req, res) || !authorised(req, res)) return;
          std::lock_guard lock(mu_);
          Project* p = project_locked(req.matches[1], req.matches[2]);
          auto it = items_.find(req.matches[3]);
          if (!p || it == items_.end() || it->second.json["project"] != p->id)
            return send_json(res, 404, {{"error", "The requested resource does not exist."}});
          send_json(res, 200, it->second.json);
        });

  route("PATCH", kProjectPrefix + "/(?:work-items|issues)/([^/]+)/?",
        [this](const httplib::Request& req, httplib::Response& res) {
          if (redirect_slashless(req, res) || !authorised(req, res)) return;
          auto body = nlohmann::json::parse(req.body, nullptr, false);
          if (body.is_discarded() || !body.is_object())
            return send_json(res, 400, {{"error", "The payload is not valid"}});
          std::lock_guard lock(mu_);
          Project* p = project_locked(req.matches[1], req.matches[2]);
          auto it = items_.find(req.matches[3]);
          if (!p || it == items_.end() || it->second.json["project"] != p->id)
            return send_json(res, 404, {{"error", "The requested resource does not exist."}});
          Item& item = it->second;
          if (body.contains("state")) {
            std::string sid = body["state"].is_string() ? body["state"].get<std::string>() : "";
            bool known = std::any_of(p->states.begin(), p->states.end(), [&](const State& s) { return s.id == sid; });
            if (!known)
              return send_json(res, 400,
                               {{"state", ojson::array({"Invalid pk \"" + sid + "\" - object does not exist."})}});
            const std::string old = item.json["state"].is_string() ? item.json["state"].get<std::string>() : "";
            if (old != sid) item.api_state_changes.emplace_back(old, sid);
            item.json["state"] = sid;
          }
          if (body.contains("name") && body["name"].is_string()) item.json["name"] = body["name"];
          // state_id is not a v1 field: ignored, 200 and no change.
          item.updated_at = now_locked();
          item.json["updated_at"] = python_isoformat(item.updated_at);
          item.json["updated_by"] = api_user_id_;
          send_json(res, 200, item.json);
        });

  route("POST", kProjectPrefix + "/(?:work-items|issues)/([^/]+)/comments/?",
        [this](const httplib::Request& req, httplib::Response& res) {
          if (redirect_slashless(req, res) || !authorised(req, res)) return;
          auto body = nlohmann::json::parse(req.body, nullptr, false);
          if (body.is_discarded() || !body.is_object() || !body.contains("comment_html") ||
              !body["comment_html"].is_string())
            return send_json(res, 400, {{"comment_html", ojson::array({"This field is required."})}});
          std::lock_guard lock(mu_);
          Project* p = project_locked(req.matches[1], req.matches[2]);
          auto it = items_.find(req.matches[3]);
          if (!p || it == items_.end())
            return send_json(res, 404, {{"error", "The requested resource does not exist."}});
          // Plane's IssueComment has a unique (external_source, external_id) per work item among live comments.
          const std::string ext_source = body.contains("external_source") && body["external_source"].is_string()
                                             ? body["external_source"].get<std::string>()
                                             : "";
          const std::string ext_id = body.contains("external_id") && body["external_id"].is_string()
                                         ? body["external_id"].get<std::string>()
                                         : "";
          if (!ext_source.empty() && !ext_id.empty()) {
            for (const ojson& old : it->second.comments)
              if (old["external_source"] == ext_source && old["external_id"] == ext_id)
                return send_json(
                    res, 409,
                    {{"error", "Work item comment with the same external id and external source already exists"},
                     {"id", old["id"]}});
          }
          ojson c;
          c["id"] = random_uuid4();
          c["created_at"] = python_isoformat(now_locked());
          c["updated_at"] = python_isoformat(now_locked());
          c["deleted_at"] = nullptr;
          c["comment_html"] = body["comment_html"].get<std::string>();
          c["attachments"] = ojson::array();
          c["access"] = body.value("access", "INTERNAL");
          c["external_source"] = ext_source.empty() ? ojson(nullptr) : ojson(ext_source);
          c["external_id"] = ext_id.empty() ? ojson(nullptr) : ojson(ext_id);
          c["edited_at"] = nullptr;
          c["created_by"] = api_user_id_;
          c["updated_by"] = nullptr;
          c["project"] = p->id;
          c["workspace"] = p->workspace_id;
          c["description"] = nullptr;
          c["issue"] = it->first;
          c["actor"] = api_user_id_;
          c["parent"] = nullptr;
          it->second.comments.push_back(c);
          if (drop_comment_answers_ > 0) {
            --drop_comment_answers_;
            // cpp-httplib 0.11 has no way to close a connection from a handler, and a throwing handler becomes a 500.
            // A content provider that fails aborts the response: the status line and headers are out, then the
            // connection closes with the body missing, so curl reports a partial transfer and never sees a 201.
            res.status = 201;
            res.set_content_provider(64, "application/json", [](size_t, size_t, httplib::DataSink&) { return false; });
            return;
          }
          send_json(res, 201, c);
        });
}

void FakePlane::fail_until(TimePoint t, int status) {
  std::lock_guard lock(mu_);
  fail_until_ = t;
  fail_until_status_ = status;
}

void FakePlane::store_then_drop_next_comments(int n) {
  std::lock_guard lock(mu_);
  drop_comment_answers_ = n;
}

void FakePlane::set_api_user_id(std::string id) {
  std::lock_guard lock(mu_);
  api_user_id_ = std::move(id);
}

std::string FakePlane::api_user_id() const {
  std::lock_guard lock(mu_);
  return api_user_id_;
}

std::vector<std::string> FakePlane::state_history(const std::string& work_item_id) const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  auto it = items_.find(work_item_id);
  if (it == items_.end()) return out;
  const Project& p = projects_.at(it->second.json["project"].get<std::string>());
  for (const auto& [old_id, new_id] : it->second.api_state_changes) {
    std::string name;
    for (const auto& s : p.states)
      if (s.id == new_id) name = s.name;
    out.push_back(name);
  }
  return out;
}

std::string FakePlane::echo_webhook_body(const std::string& work_item_id) const {
  PlaneIssueWebhook hook;
  {
    std::lock_guard lock(mu_);
    const Item& item = items_.at(work_item_id);
    hook.actor.id = api_user_id_;
    hook.actor.first_name = "orch";
    hook.actor.last_name = "";
    hook.actor.email = "orch@example.com";
    hook.actor.display_name = "orch";
    hook.field = "state";
    if (!item.api_state_changes.empty()) {
      const auto& [old_id, new_id] = item.api_state_changes.back();
      hook.old_value = old_id.empty() ? ojson(nullptr) : ojson(old_id);
      hook.new_value = ojson(new_id);
    }
  }
  return issue_webhook_body(work_item_id, hook);
}

std::vector<TimePoint> FakePlane::request_times() const {
  std::lock_guard lock(mu_);
  return request_times_;
}

int FakePlane::max_requests_in_window(std::chrono::milliseconds w) const {
  std::vector<TimePoint> times = request_times();
  std::sort(times.begin(), times.end());
  int best = 0;
  size_t first = 0;
  // A window [t, t + w): the same half-open span the throttle forgets its history over.
  for (size_t last = 0; last < times.size(); ++last) {
    while (times[last] - times[first] >= w) ++first;
    best = std::max(best, static_cast<int>(last - first + 1));
  }
  return best;
}

std::string FakePlane::issue_webhook_body(const std::string& work_item_id, const PlaneIssueWebhook& hook) const {
  std::lock_guard lock(mu_);
  const Item& item = items_.at(work_item_id);
  const ojson& r = item.json;
  const Project& p = projects_.at(r["project"].get<std::string>());
  ojson state = nullptr;
  for (const auto& s : p.states)
    if (s.id == r["state"]) state = ojson{{"id", s.id}, {"name", s.name}, {"color", s.color}, {"group", s.group}};
  std::string html = r["description_html"].get<std::string>();

  ojson data;
  data["id"] = r["id"];
  data["labels"] = ojson::array();
  data["assignees"] = ojson::array();
  data["state"] = state;
  data["description"] = ojson::object();
  data["created_at"] = r["created_at"];
  data["updated_at"] = r["updated_at"];
  data["deleted_at"] = nullptr;
  data["point"] = nullptr;
  data["name"] = r["name"];
  data["description_json"] = ojson::object();
  data["description_html"] = html;
  data["description_stripped"] = strip_tags(html);
  data["description_binary"] = nullptr;
  data["priority"] = r["priority"];
  data["start_date"] = nullptr;
  data["target_date"] = nullptr;
  data["sequence_id"] = r["sequence_id"];
  data["sort_order"] = r["sort_order"];
  data["completed_at"] = nullptr;
  data["archived_at"] = nullptr;
  data["is_draft"] = false;
  data["external_source"] = nullptr;
  data["external_id"] = nullptr;
  data["created_by"] = r["created_by"];
  data["updated_by"] = hook.actor.id;
  data["project"] = r["project"];
  data["workspace"] = r["workspace"];
  data["parent"] = nullptr;
  data["estimate_point"] = nullptr;
  data["type"] = nullptr;

  ojson actor;
  actor["id"] = hook.actor.id;
  actor["first_name"] = hook.actor.first_name;
  actor["last_name"] = hook.actor.last_name;
  actor["email"] = hook.actor.email;
  actor["avatar"] = "";
  actor["avatar_url"] = nullptr;
  actor["display_name"] = hook.actor.display_name;

  ojson activity;
  bool is_state = hook.field && (*hook.field == "state" || *hook.field == "state_id");
  activity["field"] = hook.field ? ojson(*hook.field) : ojson(nullptr);
  activity["new_value"] = hook.new_value ? *hook.new_value : (is_state ? r["state"] : ojson(nullptr));
  activity["old_value"] = hook.old_value;
  activity["actor"] = std::move(actor);
  activity["old_identifier"] = nullptr;
  activity["new_identifier"] = nullptr;

  ojson env;
  env["event"] = "issue";
  env["action"] = hook.action;
  env["webhook_id"] = hook.webhook_id;
  env["workspace_id"] = p.workspace_id;
  env["data"] = std::move(data);
  env["activity"] = std::move(activity);
  return python_json_dumps(env);
}

DeliveryResult FakePlane::send_issue_webhook(const std::string& url, const std::string& secret,
                                             const std::string& work_item_id, const PlaneIssueWebhook& hook) {
  return deliver(url, secret, "issue", issue_webhook_body(work_item_id, hook));
}

DeliveryResult FakePlane::deliver(const std::string& url, const std::string& secret, const std::string& event,
                                  const std::string& body) {
  std::string id = random_uuid4();
  std::vector<std::pair<std::string, std::string>> headers = {
      {"User-Agent", "Autopilot"}, {"Accept", "*/*"},        {"Accept-Encoding", "gzip, deflate"},
      {"X-Plane-Delivery", id},    {"X-Plane-Event", event},
  };
  if (!secret.empty()) headers.emplace_back("X-Plane-Signature", hmac_sha256_hex(secret, body));
  DeliveryResult r = post_webhook(url, headers, body, "application/json");
  r.delivery_id = id;
  return r;
}

}  // namespace orch::testing
