#include "tests/fakes/fake_gitea.h"

#include <algorithm>
#include <stdexcept>

#include "tests/fakes/signing.h"

namespace orch::testing {

namespace {

using ojson = nlohmann::ordered_json;

const std::string kRepoPrefix = R"(/api/v1/repos/([^/]+)/([^/]+))";

void send_json(httplib::Response& res, int status, const ojson& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void api_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, status, {{"message", message}, {"url", "https://gitea.example.com/api/swagger"}});
}

std::int64_t login_id(const std::string& login) {
  std::int64_t h = 0;
  for (char c : login) h = (h * 31 + static_cast<unsigned char>(c)) % 100000;
  return h + 1;
}

// Gitea 1.27 CommitStatusStates.Combine.
std::string combine(const std::vector<std::string>& states) {
  if (states.empty()) return "pending";
  bool all_green = true;
  for (const auto& s : states) {
    if (s == "error" || s == "failure" || s == "warning") return "failure";
    if (s != "success" && s != "skipped") all_green = false;
  }
  return all_green ? "success" : "pending";
}

int int_param(const httplib::Request& req, const char* name, int fallback) {
  if (!req.has_param(name)) return fallback;
  try {
    return std::stoi(req.get_param_value(name));
  } catch (...) {
    return fallback;
  }
}

std::string zero_sha() { return std::string(40, '0'); }

}  // namespace

FakeGitea::FakeGitea() : FakeServer("fake gitea") {
  install_routes();
  start();
}

FakeGitea::~FakeGitea() { stop(); }

std::string FakeGitea::default_error_body(int status) const {
  return "{\"message\":\"fault injected, status " + std::to_string(status) +
         "\",\"url\":\"https://gitea.example.com/api/swagger\"}";
}

void FakeGitea::set_token(const std::string& token) {
  std::lock_guard lock(mu_);
  token_ = token;
}

void FakeGitea::add_repo(const std::string& repo) {
  std::lock_guard lock(mu_);
  repos_[repo];
}

void FakeGitea::set_branch(const std::string& repo, const std::string& branch, const std::string& sha) {
  std::lock_guard lock(mu_);
  repos_[repo].branches[branch] = sha;
}

void FakeGitea::delete_branch(const std::string& repo, const std::string& branch) {
  std::lock_guard lock(mu_);
  repos_[repo].branches.erase(branch);
}

void FakeGitea::add_status(const std::string& repo, const std::string& sha, const std::string& context,
                           const std::string& state) {
  std::lock_guard lock(mu_);
  auto& list = repos_[repo].statuses[sha];
  list.push_back({static_cast<std::int64_t>(list.size() + 1), context, state, std::chrono::system_clock::now()});
}

std::int64_t FakeGitea::add_pull(const std::string& repo, GiteaPull pull) {
  std::lock_guard lock(mu_);
  Repo& r = repos_[repo];
  if (pull.number == 0) pull.number = r.next_index;
  r.next_index = std::max(r.next_index, pull.number + 1);
  if (pull.head_sha.empty() && r.branches.count(pull.head_ref)) pull.head_sha = r.branches[pull.head_ref];
  r.pulls.push_back(pull);
  return pull.number;
}

void FakeGitea::update_pull(const std::string& repo, std::int64_t number,
                            const std::function<void(GiteaPull&)>& change) {
  std::lock_guard lock(mu_);
  for (auto& p : repos_[repo].pulls)
    if (p.number == number) change(p);
}

std::optional<GiteaPull> FakeGitea::pull(const std::string& repo, std::int64_t number) const {
  std::lock_guard lock(mu_);
  auto it = repos_.find(repo);
  if (it == repos_.end()) return std::nullopt;
  for (const auto& p : it->second.pulls)
    if (p.number == number) return p;
  return std::nullopt;
}

std::vector<GiteaPull> FakeGitea::pulls(const std::string& repo) const {
  std::lock_guard lock(mu_);
  auto it = repos_.find(repo);
  return it == repos_.end() ? std::vector<GiteaPull>{} : it->second.pulls;
}

void FakeGitea::add_review(const std::string& repo, std::int64_t number, GiteaReview review) {
  std::lock_guard lock(mu_);
  Repo& r = repos_[repo];
  if (review.commit_id.empty()) {
    for (const auto& p : r.pulls)
      if (p.number == number)
        review.commit_id = !p.head_sha.empty()            ? p.head_sha
                           : r.branches.count(p.head_ref) ? r.branches.at(p.head_ref)
                                                          : "";
  }
  if (!review.official) review.official = review.state == "APPROVED" || review.state == "REQUEST_CHANGES";
  r.reviews[number].push_back(std::move(review));
}

void FakeGitea::push_to_pull(const std::string& repo, std::int64_t number, const std::string& sha) {
  std::lock_guard lock(mu_);
  Repo& r = repos_[repo];
  for (auto& p : r.pulls) {
    if (p.number != number) continue;
    p.head_sha = sha;
    r.branches[p.head_ref] = sha;
  }
  for (auto& rv : r.reviews[number]) rv.stale = rv.commit_id != sha;
}

void FakeGitea::fail_next_pull_creates(int times, int status) {
  std::lock_guard lock(mu_);
  pull_create_faults_ = times;
  pull_create_fault_status_ = status;
}

std::vector<GiteaReview> FakeGitea::reviews(const std::string& repo, std::int64_t number) const {
  std::lock_guard lock(mu_);
  auto it = repos_.find(repo);
  if (it == repos_.end()) return {};
  auto rv = it->second.reviews.find(number);
  return rv == it->second.reviews.end() ? std::vector<GiteaReview>{} : rv->second;
}

void FakeGitea::set_api_user(const std::string& login) {
  std::lock_guard lock(mu_);
  api_user_ = login;
}

std::vector<nlohmann::ordered_json> FakeGitea::status_history(const std::string& repo, const std::string& sha) const {
  std::lock_guard lock(mu_);
  std::vector<ojson> out;
  auto it = repos_.find(repo);
  if (it == repos_.end()) return out;
  auto st = it->second.statuses.find(sha);
  if (st == it->second.statuses.end()) return out;
  for (const auto& s : st->second) out.push_back(status_json(repo, sha, s));
  return out;
}

nlohmann::ordered_json FakeGitea::review_json(const std::string& repo, std::int64_t number, std::int64_t id,
                                              const GiteaReview& rv) {
  ojson j;
  j["id"] = id;
  j["user"] = user_json(rv.user, rv.user_id);
  j["team"] = nullptr;
  j["state"] = rv.state;
  j["body"] = rv.body;
  j["commit_id"] = rv.commit_id;
  j["stale"] = rv.stale;
  j["official"] = rv.official.value_or(false);
  j["dismissed"] = rv.dismissed;
  j["comments_count"] = 0;
  j["submitted_at"] = "2026-11-23T09:00:00Z";
  j["updated_at"] = "2026-11-23T09:00:00Z";
  j["html_url"] = "https://gitea.example.com/" + repo + "/pulls/" + std::to_string(number);
  j["pull_request_url"] = "https://gitea.example.com/" + repo + "/pulls/" + std::to_string(number);
  return j;
}

nlohmann::ordered_json FakeGitea::status_json(const std::string& repo, const std::string& sha, const Status& s) {
  ojson st;
  st["id"] = s.index;
  st["status"] = s.state;
  st["target_url"] = s.posted ? s.target_url : "https://ci.example.com/" + s.context;
  st["description"] = s.posted ? s.description : s.context + " " + s.state;
  st["url"] = "https://gitea.example.com/api/v1/repos/" + repo + "/statuses/" + sha;
  st["context"] = s.context;
  st["creator"] = user_json(s.creator);
  st["created_at"] = "2026-11-23T09:00:00Z";
  st["updated_at"] = "2026-11-23T09:00:00Z";
  return st;
}

namespace {
// The token of an Authorization: token|bearer <token> header, "" when there is none.
std::string token_of(const httplib::Request& req) {
  std::string auth = req.get_header_value("Authorization");
  auto space = auth.find(' ');
  std::string scheme = space == std::string::npos ? "" : auth.substr(0, space);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  return scheme == "token" || scheme == "bearer" ? auth.substr(space + 1) : "";
}
}  // namespace

void FakeGitea::add_user_token(const std::string& token, const std::string& login) {
  std::lock_guard lock(mu_);
  user_tokens_[token] = login;
}

std::string FakeGitea::user_of_locked(const httplib::Request& req) const {
  auto it = user_tokens_.find(token_of(req));
  return it != user_tokens_.end() ? it->second : api_user_;
}

bool FakeGitea::authorised(const httplib::Request& req, httplib::Response& res) const {
  std::lock_guard lock(mu_);
  if (token_.empty()) return true;
  const std::string token = token_of(req);
  if (!token.empty() && (token == token_ || user_tokens_.count(token))) return true;
  api_error(res, 401, "invalid username, password or token");
  return false;
}

FakeGitea::Repo* FakeGitea::repo_locked(const std::string& owner, const std::string& name) {
  auto it = repos_.find(owner + "/" + name);
  return it == repos_.end() ? nullptr : &it->second;
}

nlohmann::ordered_json FakeGitea::user_json(const std::string& login, std::int64_t id) {
  ojson u;
  u["id"] = id ? id : login_id(login);
  u["login"] = login;
  u["login_name"] = "";
  u["source_id"] = 0;
  u["full_name"] = "";
  u["email"] = login + "@example.com";
  u["avatar_url"] = "https://gitea.example.com/avatars/" + login;
  u["html_url"] = "https://gitea.example.com/" + login;
  u["language"] = "";
  u["is_admin"] = false;
  u["username"] = login;
  return u;
}

nlohmann::ordered_json FakeGitea::repo_json(const std::string& repo) {
  auto slash = repo.find('/');
  std::string owner = repo.substr(0, slash), name = repo.substr(slash + 1);
  ojson r;
  r["id"] = login_id(repo);
  r["owner"] = user_json(owner);
  r["name"] = name;
  r["full_name"] = repo;
  r["description"] = "";
  r["empty"] = false;
  r["private"] = true;
  r["fork"] = false;
  r["template"] = false;
  r["mirror"] = false;
  r["html_url"] = "https://gitea.example.com/" + repo;
  r["url"] = "https://gitea.example.com/api/v1/repos/" + repo;
  r["ssh_url"] = "git@gitea.example.com:" + repo + ".git";
  r["clone_url"] = "https://gitea.example.com/" + repo + ".git";
  r["default_branch"] = "main";
  r["archived"] = false;
  return r;
}

nlohmann::ordered_json FakeGitea::pull_json_locked(const std::string& repo, const GiteaPull& p) const {
  const std::string html = "https://gitea.example.com/" + repo + "/pulls/" + std::to_string(p.number);
  std::string head_sha = p.head_sha;
  auto rit = repos_.find(repo);
  std::string base_sha;
  if (rit != repos_.end()) {
    if (head_sha.empty() && rit->second.branches.count(p.head_ref)) head_sha = rit->second.branches.at(p.head_ref);
    if (rit->second.branches.count(p.base_ref)) base_sha = rit->second.branches.at(p.base_ref);
  }
  ojson j;
  j["id"] = 300 + p.number;
  j["url"] = html;
  j["number"] = p.number;
  j["user"] = user_json(p.user);
  j["title"] = p.title;
  j["body"] = p.body;
  j["labels"] = ojson::array();
  j["milestone"] = nullptr;
  j["assignee"] = nullptr;
  j["assignees"] = nullptr;
  j["requested_reviewers"] = ojson::array();
  j["state"] = p.state;
  j["draft"] = false;
  j["is_locked"] = false;
  j["comments"] = 0;
  j["html_url"] = html;
  j["diff_url"] = html + ".diff";
  j["patch_url"] = html + ".patch";
  j["mergeable"] = p.state == "open";
  j["merged"] = p.merged;
  j["merged_at"] = p.merged ? ojson("2026-11-23T10:00:00Z") : ojson(nullptr);
  j["merge_commit_sha"] = p.merged ? ojson(head_sha) : ojson(nullptr);
  j["merged_by"] = p.merged ? user_json("maintainer") : ojson(nullptr);
  j["allow_maintainer_edit"] = false;
  ojson base;
  base["label"] = p.base_ref;
  base["ref"] = p.base_ref;
  base["sha"] = base_sha;
  base["repo_id"] = login_id(repo);
  base["repo"] = repo_json(repo);
  j["base"] = std::move(base);
  ojson head;
  head["label"] = p.head_ref;
  head["ref"] = p.head_branch_deleted ? "refs/pull/" + std::to_string(p.number) + "/head" : p.head_ref;
  head["sha"] = head_sha;
  head["repo_id"] = login_id(repo);
  head["repo"] = repo_json(repo);
  j["head"] = std::move(head);
  j["merge_base"] = base_sha;
  j["due_date"] = nullptr;
  j["created_at"] = "2026-11-23T09:00:00Z";
  j["updated_at"] = "2026-11-23T09:30:00Z";
  j["closed_at"] = p.state == "closed" ? ojson("2026-11-23T10:00:00Z") : ojson(nullptr);
  j["pin_order"] = 0;
  return j;
}

// gitea.md §3.1: page is 1-based, limit <= 0 -> 30, capped at 50; X-Total-Count; Link with next/last/first/prev.
void FakeGitea::paged(const httplib::Request& req, httplib::Response& res, const std::vector<ojson>& all) {
  int page = std::max(1, int_param(req, "page", 1));
  int limit = int_param(req, "limit", 0);
  if (limit <= 0) limit = 30;
  limit = std::min(limit, 50);
  size_t start = static_cast<size_t>(page - 1) * static_cast<size_t>(limit);
  ojson out = ojson::array();
  for (size_t i = start; i < std::min(all.size(), start + static_cast<size_t>(limit)); ++i) out.push_back(all[i]);
  int last = std::max(1, static_cast<int>((all.size() + static_cast<size_t>(limit) - 1) / static_cast<size_t>(limit)));
  res.set_header("X-Total-Count", std::to_string(all.size()));
  auto link = [&](int p, const char* rel) {
    return "<" + base_url() + req.path + "?limit=" + std::to_string(limit) + "&page=" + std::to_string(p) +
           ">; rel=\"" + rel + "\"";
  };
  std::vector<std::string> links;
  if (page < last) {
    links.push_back(link(page + 1, "next"));
    links.push_back(link(last, "last"));
  }
  if (page > 1) {
    links.push_back(link(1, "first"));
    links.push_back(link(page - 1, "prev"));
  }
  std::string header;
  for (const auto& l : links) header += (header.empty() ? "" : ",") + l;
  if (!header.empty()) res.set_header("Link", header);
  send_json(res, 200, out);
}

void FakeGitea::install_routes() {
  route("GET", kRepoPrefix + "/commits/(.+)/status", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorised(req, res)) return;
    std::lock_guard lock(mu_);
    const std::string full = std::string(req.matches[1]) + "/" + std::string(req.matches[2]);
    Repo* r = repo_locked(req.matches[1], req.matches[2]);
    if (!r) return api_error(res, 404, "The target couldn't be found.");
    std::string ref = req.matches[3];
    std::string sha;
    if (r->branches.count(ref)) {
      sha = r->branches[ref];
    } else if (ref.size() >= 7 &&
               std::all_of(ref.begin(), ref.end(), [](unsigned char c) { return std::isxdigit(c); })) {
      for (const auto& [s, _] : r->statuses)
        if (s.rfind(ref, 0) == 0) sha = s;
      for (const auto& [b, s] : r->branches)
        if (s.rfind(ref, 0) == 0) sha = s;
    }
    if (sha.empty()) return api_error(res, 404, "GetCommit: object does not exist [id: " + ref + "]");
    std::vector<const Status*> latest;  // latest per context
    if (r->statuses.count(sha)) {
      std::map<std::string, const Status*> by_context;
      for (const auto& s : r->statuses[sha]) by_context[s.context] = &s;
      for (const auto& [c, s] : by_context) latest.push_back(s);
    }
    int page = std::max(1, int_param(req, "page", 1));
    int limit = int_param(req, "limit", 0);
    if (limit <= 0) limit = 30;
    limit = std::min(limit, 50);
    size_t start = static_cast<size_t>(page - 1) * static_cast<size_t>(limit);
    ojson statuses = ojson::array();
    std::vector<std::string> page_states;
    for (size_t i = start; i < std::min(latest.size(), start + static_cast<size_t>(limit)); ++i) {
      const Status& s = *latest[i];
      statuses.push_back(status_json(full, sha, s));
      page_states.push_back(s.state);
    }
    int last =
        std::max(1, static_cast<int>((latest.size() + static_cast<size_t>(limit) - 1) / static_cast<size_t>(limit)));
    res.set_header("X-Total-Count", std::to_string(latest.size()));
    if (page < last)
      res.set_header("Link", "<" + base_url() + req.path + "?limit=" + std::to_string(limit) +
                                 "&page=" + std::to_string(page + 1) + ">; rel=\"next\",<" + base_url() + req.path +
                                 "?limit=" + std::to_string(limit) + "&page=" + std::to_string(last) +
                                 ">; rel=\"last\"");
    ojson j;
    j["state"] = combine(page_states);  // like Gitea: over the returned page only
    j["sha"] = sha;
    j["total_count"] = latest.size();
    j["statuses"] = latest.empty() ? ojson(nullptr) : statuses;
    j["repository"] = repo_json(full);
    j["commit_url"] = "https://gitea.example.com/api/v1/repos/" + full + "/commits/" + sha;
    j["url"] = "https://gitea.example.com/api/v1/repos/" + full + "/commits/" + sha + "/status";
    send_json(res, 200, j);
  });

  route("GET", kRepoPrefix + "/branches/(.+)", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorised(req, res)) return;
    std::lock_guard lock(mu_);
    Repo* r = repo_locked(req.matches[1], req.matches[2]);
    std::string branch = req.matches[3];
    if (!r || !r->branches.count(branch)) return api_error(res, 404, "The target couldn't be found.");
    ojson commit;
    commit["id"] = r->branches[branch];
    commit["message"] = "Change\n";
    commit["url"] = "https://gitea.example.com/commit/" + r->branches[branch];
    ojson j;
    j["name"] = branch;
    j["commit"] = std::move(commit);
    j["protected"] = false;
    j["required_approvals"] = 0;
    j["enable_status_check"] = false;
    j["status_check_contexts"] = ojson::array();
    j["user_can_push"] = true;
    j["user_can_merge"] = true;
    j["effective_branch_protection_name"] = "";
    send_json(res, 200, j);
  });

  route("GET", kRepoPrefix + "/pulls", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorised(req, res)) return;
    std::vector<ojson> all;
    {
      std::lock_guard lock(mu_);
      Repo* r = repo_locked(req.matches[1], req.matches[2]);
      if (!r) return api_error(res, 404, "The target couldn't be found.");
      const std::string full = std::string(req.matches[1]) + "/" + std::string(req.matches[2]);
      // Only exactly "open" or "closed" filters; anything else (including nothing) lists all.
      std::string state = req.has_param("state") ? req.get_param_value("state") : "";
      std::vector<GiteaPull> rows = r->pulls;
      std::string sort = req.has_param("sort") ? req.get_param_value("sort") : "";
      std::stable_sort(rows.begin(), rows.end(), [&](const GiteaPull& a, const GiteaPull& b) {
        return sort == "oldest" ? a.number < b.number : a.number > b.number;
      });
      for (const auto& p : rows)
        if (state != "open" && state != "closed" ? true : p.state == state) all.push_back(pull_json_locked(full, p));
    }
    paged(req, res, all);
  });

  route("GET", kRepoPrefix + R"(/pulls/(\d+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorised(req, res)) return;
    std::lock_guard lock(mu_);
    Repo* r = repo_locked(req.matches[1], req.matches[2]);
    std::int64_t n = std::stoll(req.matches[3]);
    if (r)
      for (const auto& p : r->pulls)
        if (p.number == n)
          return send_json(res, 200,
                           pull_json_locked(std::string(req.matches[1]) + "/" + std::string(req.matches[2]), p));
    api_error(res, 404, "The target couldn't be found.");
  });

  route("POST", kRepoPrefix + "/pulls", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorised(req, res)) return;
    {
      std::lock_guard lock(mu_);
      if (pull_create_faults_ > 0) {
        --pull_create_faults_;
        return api_error(res, pull_create_fault_status_, "fault injected on pull request creation");
      }
    }
    auto body = nlohmann::json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return api_error(res, 422, "invalid JSON body");
    std::string head = body.value("head", ""), base = body.value("base", ""), title = body.value("title", "");
    if (head.empty() || base.empty() || title.empty()) return api_error(res, 422, "[Head Base Title]: Required");
    std::lock_guard lock(mu_);
    Repo* r = repo_locked(req.matches[1], req.matches[2]);
    if (!r) return api_error(res, 404, "The target couldn't be found.");
    if (!r->branches.count(head) || !r->branches.count(base))
      return api_error(res, 404, "The target couldn't be found.");
    if (head == base)
      return api_error(res, 422, "Invalid PullRequest: There are no changes between the head and the base");
    for (const auto& p : r->pulls)
      if (p.state == "open" && p.head_ref == head && p.base_ref == base)
        return api_error(res, 409,
                         "pull request already exists for these targets [id: " + std::to_string(300 + p.number) +
                             ", issue_id: " + std::to_string(p.number) +
                             ", head_repo_id: 1, base_repo_id: 1, head_branch: " + head + ", base_branch: " + base +
                             "]");
    GiteaPull p;
    p.number = r->next_index++;
    p.head_ref = head;
    p.head_sha = r->branches[head];
    p.base_ref = base;
    p.title = title;
    p.body = body.value("body", "");
    r->pulls.push_back(p);
    if (api_observer_)
      api_observer_({"pull_opened", std::string(req.matches[1]) + "/" + std::string(req.matches[2]), p.number});
    send_json(res, 201, pull_json_locked(std::string(req.matches[1]) + "/" + std::string(req.matches[2]), p));
  });

  route("GET", kRepoPrefix + R"(/pulls/(\d+)/reviews)", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorised(req, res)) return;
    std::vector<ojson> all;
    {
      std::lock_guard lock(mu_);
      Repo* r = repo_locked(req.matches[1], req.matches[2]);
      std::int64_t n = std::stoll(req.matches[3]);
      bool exists =
          r && std::any_of(r->pulls.begin(), r->pulls.end(), [&](const GiteaPull& p) { return p.number == n; });
      if (!exists) return api_error(res, 404, "The target couldn't be found.");
      const std::string full = std::string(req.matches[1]) + "/" + std::string(req.matches[2]);
      std::int64_t id = 1;
      for (const auto& rv : r->reviews[n]) all.push_back(review_json(full, n, id++, rv));
    }
    // Reviews set X-Total-Count but no Link (gitea.md §3.4).
    int page = std::max(1, int_param(req, "page", 1));
    int limit = int_param(req, "limit", 0);
    if (limit <= 0) limit = 30;
    limit = std::min(limit, 50);
    size_t start = static_cast<size_t>(page - 1) * static_cast<size_t>(limit);
    ojson out = ojson::array();
    for (size_t i = start; i < std::min(all.size(), start + static_cast<size_t>(limit)); ++i) out.push_back(all[i]);
    res.set_header("X-Total-Count", std::to_string(all.size()));
    send_json(res, 200, out);
  });

  // CreatePullReview (routers/api/v1/repo/pull_review.go): preparePullReviewType refuses approving or rejecting
  // one's own PR and a REQUEST_CHANGES / COMMENT without a body (422); another event makes a PENDING review;
  // SubmitReview refuses a verdict on a closed PR (422). 200 + PullReview. No webhook here: tests send their own.
  route("POST", kRepoPrefix + R"(/pulls/(\d+)/reviews)", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorised(req, res)) return;
    auto body = nlohmann::json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return api_error(res, 422, "invalid JSON body");
    const std::string event =
        body.contains("event") && body["event"].is_string() ? body["event"].get<std::string>() : "";
    const std::string text = body.contains("body") && body["body"].is_string() ? body["body"].get<std::string>() : "";
    std::string commit =
        body.contains("commit_id") && body["commit_id"].is_string() ? body["commit_id"].get<std::string>() : "";
    std::lock_guard lock(mu_);
    Repo* r = repo_locked(req.matches[1], req.matches[2]);
    const std::int64_t n = std::stoll(req.matches[3]);
    const GiteaPull* pull = nullptr;
    if (r)
      for (const auto& p : r->pulls)
        if (p.number == n) pull = &p;
    if (!pull) return api_error(res, 404, "The target couldn't be found.");
    const bool verdict = event == "APPROVED" || event == "REQUEST_CHANGES";
    const std::string author = user_of_locked(req);
    if (verdict && pull->user == author)
      return api_error(
          res, 422,
          event == "APPROVED" ? "approve your own pull is not allowed" : "reject your own pull is not allowed");
    const bool needs_body = event == "REQUEST_CHANGES" || event == "COMMENT";
    if (needs_body && text.find_first_not_of(" \t\r\n") == std::string::npos)
      return api_error(res, 422, "review event " + event + " requires a body");
    if (verdict && pull->state != "open") return api_error(res, 422, "can't submit review for a closed or merged PR");
    const std::string head = !pull->head_sha.empty()             ? pull->head_sha
                             : r->branches.count(pull->head_ref) ? r->branches.at(pull->head_ref)
                                                                 : "";
    if (commit.empty()) commit = head;
    GiteaReview rv;
    rv.user = author;
    rv.state = event == "APPROVED" || event == "REQUEST_CHANGES" || event == "COMMENT" ? event : "PENDING";
    rv.body = text;
    rv.commit_id = commit;
    rv.stale = commit != head;
    rv.official = verdict;  // only a verdict counts toward approvals; with no branch protection any writer's does
    auto& list = r->reviews[n];
    list.push_back(rv);
    if (api_observer_)
      api_observer_({"review", std::string(req.matches[1]) + "/" + std::string(req.matches[2]), n, rv.state, rv.user});
    send_json(res, 200,
              review_json(std::string(req.matches[1]) + "/" + std::string(req.matches[2]), n,
                          static_cast<std::int64_t>(list.size()), rv));
  });

  // NewCommitStatus (gitea.md §3.5): a short sha is expanded, an unknown one is a 500; the state is not validated;
  // context, description and target_url are trimmed. 201 + CommitStatus. No webhook here: tests send their own.
  route("POST", kRepoPrefix + "/statuses/([^/]+)", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorised(req, res)) return;
    auto body = nlohmann::json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return api_error(res, 422, "invalid JSON body");
    auto field = [&](const char* key) {
      std::string v = body.contains(key) && body[key].is_string() ? body[key].get<std::string>() : "";
      const auto b = v.find_first_not_of(" \t\r\n");
      if (b == std::string::npos) return std::string();
      return v.substr(b, v.find_last_not_of(" \t\r\n") - b + 1);
    };
    std::lock_guard lock(mu_);
    const std::string full = std::string(req.matches[1]) + "/" + std::string(req.matches[2]);
    Repo* r = repo_locked(req.matches[1], req.matches[2]);
    if (!r) return api_error(res, 404, "The target couldn't be found.");
    const std::string ref = req.matches[3];
    std::string sha;
    auto consider = [&](const std::string& known) {
      if (!known.empty() && known.rfind(ref, 0) == 0) sha = known;
    };
    for (const auto& [b, s] : r->branches) consider(s);
    for (const auto& p : r->pulls) consider(p.head_sha);
    for (const auto& [s, _] : r->statuses) consider(s);
    if (sha.empty()) return api_error(res, 500, "GetCommit[" + ref + "]: object does not exist [id: " + ref + "]");
    auto& list = r->statuses[sha];
    const std::string state =
        body.contains("state") && body["state"].is_string() ? body["state"].get<std::string>() : "";
    Status st{static_cast<std::int64_t>(list.size() + 1), field("context"), state, std::chrono::system_clock::now()};
    st.posted = true;
    st.description = field("description");
    st.target_url = field("target_url");
    st.creator = api_user_;
    list.push_back(st);
    send_json(res, 201, status_json(full, sha, st));
  });

  // Git's smart HTTP on the same port as the API, as Gitea serves it: /{owner}/{name}.git/info/refs, .../git-*-pack.
  auto git = [this](const httplib::Request& req, httplib::Response& res) {
    GitHandler handler;
    {
      std::lock_guard lock(mu_);
      handler = git_handler_;
    }
    if (!handler) return api_error(res, 404, "The target couldn't be found.");
    handler(req, res);
  };
  route("GET", R"(/([^/]+)/([^/]+)\.git/(.*))", git);
  route("POST", R"(/([^/]+)/([^/]+)\.git/(.*))", git);
}

void FakeGitea::set_api_observer(std::function<void(const ApiWrite&)> observer) {
  std::lock_guard lock(mu_);
  api_observer_ = std::move(observer);
}

void FakeGitea::set_git_handler(GitHandler handler) {
  std::lock_guard lock(mu_);
  git_handler_ = std::move(handler);
}

std::string FakeGitea::coarse_event(const std::string& event_type) {
  if (event_type == "pull_request_sync" || event_type == "pull_request_assign" || event_type == "pull_request_label" ||
      event_type == "pull_request_milestone" || event_type == "pull_request_review_request")
    return "pull_request";
  if (event_type == "pull_request_review_approved") return "pull_request_approved";
  if (event_type == "pull_request_review_rejected") return "pull_request_rejected";
  if (event_type == "pull_request_review_comment") return "pull_request_comment";
  if (event_type == "pull_request_comment") return "issue_comment";
  return event_type;  // push, pull_request, status, create, delete, ...
}

DeliveryResult FakeGitea::send_webhook(const std::string& url, const std::string& secret, const std::string& event_type,
                                       const nlohmann::ordered_json& payload) {
  std::string body = go_json_marshal_indent(payload);
  std::string id = random_uuid4();
  std::string event = coarse_event(event_type);
  std::string sig256 = secret.empty() ? "" : hmac_sha256_hex(secret, body);
  std::string sig1 = secret.empty() ? "" : hmac_sha1_hex(secret, body);
  std::vector<std::pair<std::string, std::string>> headers = {
      {"User-Agent", "Go-http-client/1.1"},
      {"X-Gitea-Delivery", id},
      {"X-Gitea-Event", event},
      {"X-Gitea-Event-Type", event_type},
      {"X-Gitea-Signature", sig256},
      {"X-Gitea-Hook-Installation-Target-Type", "repository"},
      {"X-Gogs-Delivery", id},
      {"X-Gogs-Event", event},
      {"X-Gogs-Event-Type", event_type},
      {"X-Gogs-Signature", sig256},
      {"X-GitHub-Delivery", id},
      {"X-GitHub-Event", event},
      {"X-GitHub-Event-Type", event_type},
      {"X-GitHub-Hook-Installation-Target-Type", "repository"},
      {"X-Hub-Signature", "sha1=" + sig1},
      {"X-Hub-Signature-256", "sha256=" + sig256},
  };
  DeliveryResult r = post_webhook(url, headers, body, "application/json");
  r.delivery_id = id;
  return r;
}

nlohmann::ordered_json FakeGitea::push_payload(const std::string& repo, const std::string& branch,
                                               const std::string& before, const std::string& after,
                                               const std::string& message) {
  const std::string base = "https://gitea.example.com/" + repo;
  ojson author{{"name", "Orch Bot"}, {"email", "orch-bot@example.com"}, {"username", "orch-bot"}};
  ojson commit;
  commit["id"] = after;
  commit["message"] = message;
  commit["url"] = base + "/commit/" + after;
  commit["author"] = author;
  commit["committer"] = author;
  commit["verification"] = nullptr;
  commit["timestamp"] = "2026-11-23T10:15:30+01:00";
  commit["added"] = ojson::array();
  commit["removed"] = ojson::array();
  commit["modified"] = ojson::array({"README.md"});
  ojson j;
  j["ref"] = "refs/heads/" + branch;
  j["before"] = before.empty() ? zero_sha() : before;
  j["after"] = after;
  j["compare_url"] = base + "/compare/" + (before.empty() ? zero_sha() : before) + "..." + after;
  j["commits"] = ojson::array({commit});
  j["total_commits"] = 1;
  j["head_commit"] = commit;
  j["repository"] = repo_json(repo);
  j["pusher"] = user_json("orch-bot");
  j["sender"] = user_json("orch-bot");
  return j;
}

nlohmann::ordered_json FakeGitea::pull_request_payload(const std::string& repo, std::int64_t number,
                                                       const std::string& action, const std::string& before) const {
  std::lock_guard lock(mu_);
  const GiteaPull* found = nullptr;
  auto rit = repos_.find(repo);
  if (rit != repos_.end())
    for (const auto& p : rit->second.pulls)
      if (p.number == number) found = &p;
  if (!found) throw std::invalid_argument("fake gitea: no pull request " + repo + "#" + std::to_string(number));
  ojson pr = pull_json_locked(repo, *found);
  ojson j;
  j["action"] = action;
  if (action == "synchronized") {
    j["before"] = before;
    j["after"] = pr["head"]["sha"];
  }
  j["number"] = number;
  j["pull_request"] = pr;
  j["requested_reviewer"] = nullptr;
  j["repository"] = repo_json(repo);
  j["sender"] = user_json(found->user);
  j["commit_id"] = "";
  j["review"] = nullptr;
  return j;
}

nlohmann::ordered_json FakeGitea::review_payload(const std::string& repo, std::int64_t number, bool approved,
                                                 const std::string& reviewer, const std::string& content) const {
  ojson j = pull_request_payload(repo, number, "reviewed");
  j["requested_reviewer"] = user_json(reviewer);
  j["sender"] = user_json(reviewer);
  j["review"] =
      ojson{{"type", approved ? "pull_request_review_approved" : "pull_request_review_rejected"}, {"content", content}};
  return j;
}

nlohmann::ordered_json FakeGitea::status_payload(const std::string& repo, const std::string& sha,
                                                 const std::string& context, const std::string& state,
                                                 const std::string& target_url) {
  ojson author{{"name", "Orch Bot"}, {"email", "orch-bot@example.com"}, {"username", ""}};
  ojson commit;
  commit["id"] = sha;
  commit["message"] = "Change\n";
  commit["url"] = "https://gitea.example.com/" + repo + "/commit/" + sha;
  commit["author"] = author;
  commit["committer"] = author;
  commit["verification"] = nullptr;
  commit["timestamp"] = "2026-11-23T10:15:30+01:00";
  commit["added"] = nullptr;
  commit["removed"] = nullptr;
  commit["modified"] = nullptr;
  ojson j;
  j["commit"] = std::move(commit);
  j["context"] = context;
  j["created_at"] = "2026-11-23T09:16:02Z";
  j["description"] = context + " " + state;
  j["id"] = 1234;
  j["repository"] = repo_json(repo);
  j["sender"] = user_json("ci-bot");
  j["sha"] = sha;
  j["state"] = state;
  j["target_url"] = target_url;
  j["updated_at"] = "2026-11-23T09:16:02Z";
  return j;
}

}  // namespace orch::testing
