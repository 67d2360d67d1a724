// DESIGN: listings page with an explicit limit and a page counter. The Link header's URLs are built from Gitea's
// configured AppURL, which behind a proxy need not be the base URL we were given, so we only read whether a
// rel="next" exists and request page+1 ourselves; without any Link header, a full page means "maybe more".
#include "integrations/gitea_client.h"

#include "engine/write_back.h"

#include <map>

namespace orch {

namespace {

using nlohmann::json;

std::string str_or_empty(const json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

// Whether to ask for the next page after one holding `count` items.
bool has_next_page(const HttpResponse& r, size_t count, int limit) {
  auto link = r.header("Link");
  if (link) return link->find("rel=\"next\"") != std::string::npos;
  return count >= static_cast<size_t>(limit);
}

std::string with_page(const std::string& target, int page, int limit) {
  return target + (target.find('?') == std::string::npos ? "?" : "&") + "limit=" + std::to_string(limit) +
         "&page=" + std::to_string(page);
}

}  // namespace

CiState combine_ci_states(const std::vector<std::string>& states) {
  if (states.empty()) return CiState::kPending;
  bool all_green = true;
  for (const auto& s : states) {
    if (s == "error" || s == "failure" || s == "warning") return CiState::kFailure;
    if (s != "success" && s != "skipped") all_green = false;
  }
  return all_green ? CiState::kSuccess : CiState::kPending;
}

Result<PullRequestInfo> parse_gitea_pull_request(const json& j) {
  if (!j.is_object()) return invalid("gitea pull request is not an object");
  auto num = j.find("number");
  if (num == j.end() || !num->is_number_integer()) return invalid("gitea pull request without a number");
  PullRequestInfo pr;
  pr.number = num->get<std::int64_t>();
  pr.open = str_or_empty(j, "state") == "open";
  if (auto m = j.find("merged"); m != j.end() && m->is_boolean()) pr.merged = m->get<bool>();
  if (auto h = j.find("head"); h != j.end()) {
    pr.head_ref = str_or_empty(*h, "ref");
    pr.head_sha = str_or_empty(*h, "sha");
  }
  if (auto b = j.find("base"); b != j.end()) pr.base_ref = str_or_empty(*b, "ref");
  pr.html_url = str_or_empty(j, "html_url");
  return pr;
}

GiteaClient::GiteaClient(HttpClient& http, Secret token, GiteaClientOptions options)
    : http_(http), token_(std::move(token)), options_(options) {}

Result<std::string> GiteaClient::repo_path(const std::string& repo) const {
  auto slash = repo.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == repo.size() ||
      repo.find('/', slash + 1) != std::string::npos)
    return invalid("gitea: repository must be owner/name, got '" + repo + "'");
  return "/api/v1/repos/" + url_escape(repo.substr(0, slash)) + "/" + url_escape(repo.substr(slash + 1));
}

HttpRequest GiteaClient::request(std::string method, std::string target, const nlohmann::json* body) const {
  HttpRequest r =
      body ? HttpRequest::json(std::move(method), std::move(target), *body) : HttpRequest::get(std::move(target));
  r.headers.push_back({"Authorization", "token " + token_.reveal()});
  return r;
}

Status GiteaClient::list_pages(const std::string& first_target, const std::string& what, int max_pages,
                               const std::function<bool(const json&)>& visit) {
  for (int page = 1; page <= max_pages; ++page) {
    auto r = http_.send(request("GET", with_page(first_target, page, options_.limit)));
    if (!r.ok()) return r.status();
    auto j = parse_json_body(r.value(), what);
    if (!j.ok()) return j.status();
    if (!j.value().is_array()) return unavailable(what + ": malformed answer: not an array");
    for (const auto& item : j.value())
      if (!visit(item)) return {};
    if (j.value().empty() || !has_next_page(r.value(), j.value().size(), options_.limit)) return {};
  }
  return {};
}

Result<CiState> GiteaClient::combined_status(const std::string& repo, const std::string& ref) {
  auto base = repo_path(repo);
  if (!base.ok()) return base.status();
  const std::string what = "gitea: combined status of " + repo + "@" + ref;
  const std::string target = base.value() + "/commits/" + url_escape(ref) + "/status";
  std::map<std::string, std::string> by_context;  // latest per context; a context repeated across pages counts once
  std::vector<std::string> states;
  for (int page = 1; page <= options_.max_pages; ++page) {
    auto r = http_.send(request("GET", with_page(target, page, options_.limit)));
    if (!r.ok()) return r.status();
    auto j = parse_json_body(r.value(), what);
    if (!j.ok()) return j.status();
    if (!j.value().is_object()) return unavailable(what + ": malformed answer: not an object");
    auto st = j.value().find("statuses");
    if (st == j.value().end() || st->is_null()) break;  // no statuses at all: pending
    if (!st->is_array()) return unavailable(what + ": malformed answer: statuses is not an array");
    for (const auto& s : *st) {
      std::string context = str_or_empty(s, "context");
      // orch's own pipeline status (write-back, ADR 0013) says where the task is, not whether CI passed: counted,
      // its `pending` would hold the ci_green gate forever.
      if (context == kPipelineStatusContext) continue;
      by_context[context.empty() ? "#" + std::to_string(by_context.size()) : context] = str_or_empty(s, "status");
    }
    if (st->empty() || !has_next_page(r.value(), st->size(), options_.limit)) break;
  }
  for (const auto& [context, state] : by_context) states.push_back(state);
  return combine_ci_states(states);
}

Result<bool> GiteaClient::has_review_containing(const std::string& repo, std::int64_t pr, const std::string& needle) {
  auto base = repo_path(repo);
  if (!base.ok()) return base.status();
  bool found = false;
  Status s =
      list_pages(base.value() + "/pulls/" + std::to_string(pr) + "/reviews",
                 "gitea: reviews of " + repo + "#" + std::to_string(pr), options_.max_pages, [&](const json& review) {
                   found = str_or_empty(review, "body").find(needle) != std::string::npos;
                   return !found;
                 });
  if (!s.ok()) return s;
  return found;
}

Result<std::string> GiteaClient::branch_head(const std::string& repo, const std::string& branch) {
  auto base = repo_path(repo);
  if (!base.ok()) return base.status();
  // The route is /branches/*: a branch name keeps its slashes.
  auto r = http_.send(request("GET", base.value() + "/branches/" + url_escape(branch, /*keep_slash=*/true)));
  if (!r.ok()) return r.status();
  auto j = parse_json_body(r.value(), "gitea: branch " + repo + ":" + branch);
  if (!j.ok()) return j.status();
  std::string sha =
      j.value().is_object() && j.value().contains("commit") ? str_or_empty(j.value()["commit"], "id") : "";
  if (sha.empty()) return unavailable("gitea: branch " + repo + ":" + branch + ": malformed answer: no commit.id");
  return sha;
}

Result<std::vector<PullRequestInfo>> GiteaClient::open_pull_requests(const std::string& repo) {
  auto base = repo_path(repo);
  if (!base.ok()) return base.status();
  std::vector<PullRequestInfo> out;
  Status bad;
  // state=open always: an omitted state lists every PR, whatever the swagger says.
  Status s = list_pages(base.value() + "/pulls?state=open", "gitea: open pull requests of " + repo, options_.max_pages,
                        [&](const json& item) {
                          auto pr = parse_gitea_pull_request(item);
                          if (!pr.ok()) {
                            bad = pr.status();
                            return false;
                          }
                          out.push_back(pr.value());
                          return true;
                        });
  if (!s.ok()) return s;
  if (!bad.ok()) return bad;
  return out;
}

Result<std::optional<PullRequestInfo>> GiteaClient::pull_request_for_branch(const std::string& repo,
                                                                            const std::string& branch) {
  auto open = open_pull_requests(repo);
  if (!open.ok()) return open.status();
  for (const auto& pr : open.value())
    if (pr.head_ref == branch) return std::optional<PullRequestInfo>(pr);
  auto base = repo_path(repo);
  std::optional<PullRequestInfo> found;
  // Newest first (Gitea's default order). Once the head branch is deleted, head.ref reads refs/pull/<n>/head,
  // but head.label still names the branch.
  Status s = list_pages(base.value() + "/pulls?state=all", "gitea: pull requests of " + repo,
                        options_.closed_search_max_pages, [&](const json& item) {
                          std::string ref = item.contains("head") ? str_or_empty(item["head"], "ref") : "";
                          std::string label = item.contains("head") ? str_or_empty(item["head"], "label") : "";
                          if (ref != branch && label != branch) return true;
                          auto pr = parse_gitea_pull_request(item);
                          if (!pr.ok()) return true;
                          found = pr.value();
                          found->head_ref = branch;
                          return false;
                        });
  if (!s.ok()) return s;
  return found;
}

Result<bool> GiteaClient::pull_request_approved(const std::string& repo, std::int64_t number) {
  auto base = repo_path(repo);
  if (!base.ok()) return base.status();
  struct Latest {
    std::string state;
    bool dismissed = false, stale = false, official = true;
  };
  std::map<std::string, Latest> by_user;
  // Reviews come oldest first, so a reviewer's later review overwrites the earlier one. A review request or a
  // pending draft is not a verdict, and neither is a plain COMMENT review: Gitea keeps a reviewer's approval
  // or change request standing across their later comments.
  Status s = list_pages(
      base.value() + "/pulls/" + std::to_string(number) + "/reviews",
      "gitea: reviews of " + repo + "#" + std::to_string(number), options_.max_pages, [&](const json& review) {
        std::string state = str_or_empty(review, "state");
        if (state != "APPROVED" && state != "REQUEST_CHANGES") return true;
        const json* user = review.contains("user") ? &review["user"] : nullptr;
        if (!user || !user->is_object()) return true;  // a team review request
        std::string who = user->contains("id") ? (*user)["id"].dump() : str_or_empty(*user, "login");
        auto flag = [&](const char* key, bool absent) {
          auto it = review.find(key);
          return it != review.end() && it->is_boolean() ? it->get<bool>() : absent;
        };
        // An absent `official` reads as not official: only an explicit true may approve.
        by_user[who] = {state, flag("dismissed", false), flag("stale", false), flag("official", false)};
        return true;
      });
  if (!s.ok()) return s;
  bool approved = false;
  for (const auto& [who, latest] : by_user) {
    if (latest.dismissed) continue;
    // A change request blocks even when stale or not official, as it does in Gitea's own merge check for official
    // ones: rework pushed after it does not answer it until the reviewer says so. Blocking is the safe side.
    if (latest.state == "REQUEST_CHANGES") return false;
    // A stale approval was given to a diff that the developer agent's rework has since replaced; a non-official
    // one would not count toward Gitea's own required approvals either.
    if (latest.stale) continue;
    if (options_.official_reviews_only && !latest.official) continue;
    approved = true;
  }
  return approved;
}

Result<PullRequestInfo> GiteaClient::create_pull_request(const std::string& repo, const std::string& head,
                                                         const std::string& base_branch, const std::string& title,
                                                         const std::string& body) {
  auto base = repo_path(repo);
  if (!base.ok()) return base.status();
  json payload = {{"head", head}, {"base", base_branch}, {"title", title}, {"body", body}};
  HttpRequest req = request("POST", base.value() + "/pulls", &payload);
  req.idempotent = false;  // a retried create would 409 anyway; adoption below covers it
  auto r = http_.send(req);
  if (r.ok()) {
    auto j = parse_json_body(r.value(), "gitea: created pull request " + repo + ":" + head);
    if (!j.ok()) return j.status();
    return parse_gitea_pull_request(j.value());
  }
  if (r.status().code != Code::kConflict) return r.status();
  // 409: an open PR for this head and base exists already (perhaps our own earlier, timed-out create): adopt it.
  auto open = open_pull_requests(repo);
  if (!open.ok()) return open.status();
  for (const auto& pr : open.value())
    if (pr.head_ref == head && pr.base_ref == base_branch) return pr;
  return r.status();
}

// A write's refusal is final whatever the 4xx (a 404 for a PR that is gone, a 409, a 422): retrying the same request
// cannot help, so every 4xx but 429 is kInvalid; 5xx, 429 and transport failures stay kUnavailable.
namespace {
Status write_outcome(const Status& sent) {
  if (sent.code == Code::kNotFound || sent.code == Code::kConflict) return invalid(sent.message);
  return sent;
}
}  // namespace

Status GiteaClient::create_review(const std::string& repo, std::int64_t pr, const std::string& event,
                                  const std::string& body, const std::string& commit_id) {
  auto base = repo_path(repo);
  if (!base.ok()) return base.status();
  if (event != "APPROVED" && event != "REQUEST_CHANGES" && event != "COMMENT")
    return invalid("gitea: review event must be APPROVED, REQUEST_CHANGES or COMMENT, got '" + event + "'");
  if (pr <= 0) return invalid("gitea: no pull request #" + std::to_string(pr));
  json payload = {{"event", event}, {"body", body}, {"commit_id", commit_id}};
  HttpRequest req = request("POST", base.value() + "/pulls/" + std::to_string(pr) + "/reviews", &payload);
  req.idempotent = false;  // Gitea has no key to dedupe a review by: a retried POST after a lost answer doubles it
  return write_outcome(http_.send(req).status());
}

Status GiteaClient::set_commit_status(const std::string& repo, const std::string& sha, const std::string& state,
                                      const std::string& context, const std::string& description,
                                      const std::string& target_url) {
  auto base = repo_path(repo);
  if (!base.ok()) return base.status();
  if (state != "pending" && state != "success" && state != "error" && state != "failure" && state != "warning")
    return invalid("gitea: commit status state must be pending, success, error, failure or warning, got '" + state +
                   "'");
  if (sha.empty()) return invalid("gitea: commit status without a sha");
  json payload = {{"state", state}, {"target_url", target_url}, {"description", description}, {"context", context}};
  HttpRequest req = request("POST", base.value() + "/statuses/" + url_escape(sha), &payload);
  // idempotent stays true: posting the same context and state twice leaves the combined status as once.
  return write_outcome(http_.send(req).status());
}

}  // namespace orch
