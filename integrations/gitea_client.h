// integrations/gitea_client.h: GiteaClient implements CodeHost over Gitea's REST API v1 (docs/wire-formats.md
// §2.4-2.6). It computes the combined CI state itself from the per-context statuses (the server's own combination
// covers one page only, and changed across versions), and adopts an existing open PR when creating one answers 409.
// Thread-safe: stateless beyond the thread-safe HttpClient.
#pragma once

#include <string>

#include "engine/facts.h"
#include "engine/secret.h"
#include "integrations/http_client.h"

namespace orch {

struct GiteaClientOptions {
  int limit = 50;                    // Gitea's MAX_RESPONSE_ITEMS default: a larger limit is silently capped
  int max_pages = 200;               // guards every paged listing
  int closed_search_max_pages = 20;  // how far back pull_request_for_branch looks for a closed / merged PR
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

  // Submits a review as the token's user: POST /repos/{o}/{r}/pulls/{index}/reviews with Gitea's
  // CreatePullReviewOptions {"event", "body", "commit_id"}; event is APPROVED, REQUEST_CHANGES or COMMENT (anything
  // else is kInvalid and sends nothing); commit_id "" lets Gitea take the PR head. Not idempotent: a second review
  // would show twice, so a 5xx or a timeout is not retried (only 429 and a refused connection are) and the caller
  // decides. kInvalid on any refusal (4xx but 429: Gitea answers 422 to an approval of one's own PR and to a
  // REQUEST_CHANGES / COMMENT without a body), kUnavailable on 5xx, 429 and transport failures.
  Status create_review(const std::string& repo, std::int64_t pr, const std::string& event, const std::string& body,
                       const std::string& commit_id = "");
  // Posts a commit status: POST /repos/{o}/{r}/statuses/{sha} with CreateStatusOption (gitea.md §3.5); state is
  // pending, success, error, failure or warning (anything else is kInvalid and sends nothing: Gitea stores any
  // string). Idempotent (a later status of the same context supersedes the earlier one), so retried on 5xx and
  // timeouts. Errors as create_review. Gitea answers an unknown sha with a 500, so that one ends kUnavailable.
  Status set_commit_status(const std::string& repo, const std::string& sha, const std::string& state,
                           const std::string& context, const std::string& description, const std::string& target_url);
  // Whether a review of the PR has `needle` in its body (orch's marker: a review it posted before its answer was
  // lost). Pages through the reviews like pull_request_approved.
  Result<bool> has_review_containing(const std::string& repo, std::int64_t pr, const std::string& needle);

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
