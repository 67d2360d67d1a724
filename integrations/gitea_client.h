// integrations/gitea_client.h: GiteaClient implements CodeHost over Gitea's REST API v1 (shared/reference/gitea.md §3).
// It computes the combined CI state itself from the per-context statuses (the server's own combination covers one
// page only, and changed across versions), and adopts an existing open PR when creating one answers 409.
// Thread-safe: stateless beyond the thread-safe HttpClient.
#pragma once

#include <string>

#include "engine/facts.h"
#include "engine/secret.h"
#include "integrations/http_client.h"

namespace orch {

struct GiteaClientOptions {
  int limit = 50;                   // Gitea's MAX_RESPONSE_ITEMS default: a larger limit is silently capped
  int max_pages = 200;              // guards every paged listing
  int closed_search_max_pages = 20; // how far back pull_request_for_branch looks for a closed / merged PR
  // [gitea] official_reviews_only: only reviews Gitea marks official (those counting toward its required
  // approvals) can approve. A stale approval (commits pushed after it) never approves, whatever this says.
  bool official_reviews_only = true;
};

class GiteaClient final : public CodeHost {
 public:
  GiteaClient(HttpClient& http, Secret token, GiteaClientOptions options = {});

  Result<CiState> combined_status(const std::string& repo, const std::string& ref) override;
  Result<std::string> branch_head(const std::string& repo, const std::string& branch) override;
  Result<std::optional<PullRequestInfo>> pull_request_for_branch(const std::string& repo,
                                                                 const std::string& branch) override;
  Result<std::vector<PullRequestInfo>> open_pull_requests(const std::string& repo) override;
  Result<bool> pull_request_approved(const std::string& repo, std::int64_t number) override;
  Result<PullRequestInfo> create_pull_request(const std::string& repo, const std::string& head, const std::string& base,
                                              const std::string& title, const std::string& body) override;

 private:
  Result<std::string> repo_path(const std::string& repo) const;  // "/api/v1/repos/{owner}/{name}"
  HttpRequest request(std::string method, std::string target, const nlohmann::json* body = nullptr) const;
  // Pages through a JSON-array listing (Link rel="next", else until a short page); visit() returns false to stop.
  Status list_pages(const std::string& first_target, const std::string& what, int max_pages,
                    const std::function<bool(const nlohmann::json&)>& visit);

  HttpClient& http_;
  const Secret token_;
  const GiteaClientOptions options_;
};

// Gitea 1.27's rule over per-context states: any error/failure/warning -> failure; all success/skipped (and at
// least one) -> success; otherwise (a pending, an unknown state, or no statuses at all) -> pending.
CiState combine_ci_states(const std::vector<std::string>& states);
Result<PullRequestInfo> parse_gitea_pull_request(const nlohmann::json& j);

}  // namespace orch
