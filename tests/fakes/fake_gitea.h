// tests/fakes/fake_gitea.h: a fake Gitea 1.27 speaking REST API v1 and webhooks as shared/reference/gitea.md
// describes: combined status per sha or branch (latest per context, paged, `statuses: null` when none), branches,
// pull requests (state filter with the "omitted means all" quirk, Link / X-Total-Count paging, 409 on a duplicate
// create), reviews (listed, and created as the token's user), commit statuses (posted, with their history); token
// checks. It sends signed webhooks with Gitea's headers and MarshalIndent bytes, and has
// builders for the payloads orch handles. Thread-safe: tables may change while the server answers.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tests/fakes/fake_server.h"

namespace orch::testing {

struct GiteaPull {
  std::int64_t number = 0;  // 0 = the next index
  std::string head_ref{};
  std::string head_sha{};  // "" = the head branch's current sha
  std::string base_ref = "main";
  std::string title = "A change";
  std::string body{};
  std::string state = "open";  // open / closed
  bool merged = false;
  bool head_branch_deleted = false;  // head.ref then reads refs/pull/<n>/head; head.label keeps the branch
  std::string user = "orch-bot";
};

struct GiteaReview {
  std::string user = "reviewer";
  std::int64_t user_id = 0;        // 0 = derived from the login
  std::string state = "APPROVED";  // APPROVED, REQUEST_CHANGES, COMMENT, PENDING, REQUEST_REVIEW
  bool dismissed = false;
  bool stale = false;  // also set by push_to_pull, as Gitea's MarkReviewsAsStale does
  // Gitea sets official on a verdict by a reviewer whose approval counts toward the required approvals (with no
  // branch protection: anyone with write access). nullopt = true for APPROVED / REQUEST_CHANGES, else false.
  std::optional<bool> official{};
  std::string commit_id{};  // "" = the pull request's head when the review is added
  std::string body{};
};

class FakeGitea final : public FakeServer {
 public:
  FakeGitea();
  ~FakeGitea() override;

  void set_token(const std::string& token);  // then requests need Authorization: token <token> ("" = no check)
  void add_repo(const std::string& repo);    // "owner/name"; any other call on a repo adds it too
  void set_branch(const std::string& repo, const std::string& branch, const std::string& sha);
  void delete_branch(const std::string& repo, const std::string& branch);
  // Appends a commit status; a later one for the same context supersedes the earlier one.
  void add_status(const std::string& repo, const std::string& sha, const std::string& context,
                  const std::string& state);
  std::int64_t add_pull(const std::string& repo, GiteaPull pull);  // returns its number
  // The next `times` POST .../pulls (pull request creations) answer `status` and create nothing; listings and the
  // other routes answer normally (FakeServer's faults match a path, which GET /pulls shares).
  void fail_next_pull_creates(int times, int status = 500);
  void update_pull(const std::string& repo, std::int64_t number, const std::function<void(GiteaPull&)>& change);
  std::optional<GiteaPull> pull(const std::string& repo, std::int64_t number) const;
  std::vector<GiteaPull> pulls(const std::string& repo) const;
  void add_review(const std::string& repo, std::int64_t number, GiteaReview review);
  // New commits on a PR's head branch, as a push does: the branch and the PR head move to `sha`, and reviews whose
  // commit_id is not `sha` turn stale while those on `sha` turn fresh (Gitea's MarkReviewsAsStale / NotStale).
  void push_to_pull(const std::string& repo, std::int64_t number, const std::string& sha);
  std::vector<GiteaReview> reviews(const std::string& repo, std::int64_t number) const;

  // The login the token acts as: the author of reviews created through POST .../pulls/{n}/reviews and the creator
  // of statuses posted through POST .../statuses/{sha}. Default "orch". Such a review is refused (422) on a PR whose
  // user is this login, as Gitea refuses approving or rejecting one's own PR.
  void set_api_user(const std::string& login);
  // A second user's token (as ORCH_GITEA_REVIEW_TOKEN): requests with it are accepted and act as `login` (reviews
  // they create are that user's). With set_token unset, still no check.
  void add_user_token(const std::string& token, const std::string& login);
  // Every status of a sha in creation order, as CommitStatus objects (those of add_status too, creator "ci-bot"):
  // the combined status reads its latest per context.
  std::vector<nlohmann::ordered_json> status_history(const std::string& repo, const std::string& sha) const;

  // For a program that plays Gitea (the sandbox): what orch changed through the API, so that it can send the
  // webhook Gitea would. Called on the server thread with the fake's lock held: it must not call back into the fake.
  struct ApiWrite {
    std::string kind;  // "pull_opened" (POST pulls) or "review" (POST pulls/{n}/reviews)
    std::string repo;
    std::int64_t number = 0;
    std::string state{};  // a review's state: APPROVED, REQUEST_CHANGES, COMMENT, PENDING
    std::string user{};   // who made it
  };
  void set_api_observer(std::function<void(const ApiWrite&)> observer);
  // Requests to /{owner}/{name}.git/... (git's smart HTTP) go to `handler`; without one they answer 404.
  using GitHandler = std::function<void(const httplib::Request&, httplib::Response&)>;
  void set_git_handler(GitHandler handler);

  // Webhooks: X-Gitea-Event derived from the precise event type (gitea.md §1.5), body = MarshalIndent bytes.
  DeliveryResult send_webhook(const std::string& url, const std::string& secret, const std::string& event_type,
                              const nlohmann::ordered_json& payload);
  static std::string coarse_event(const std::string& event_type);

  // Payload builders (Gitea's field order). Repository / user objects are filled with plausible values.
  static nlohmann::ordered_json push_payload(const std::string& repo, const std::string& branch,
                                             const std::string& before, const std::string& after,
                                             const std::string& message = "Change\n");
  // action: opened, synchronized (with before/after), closed (merged per pull.merged), reopened, edited.
  nlohmann::ordered_json pull_request_payload(const std::string& repo, std::int64_t number, const std::string& action,
                                              const std::string& before = "") const;
  // Event type pull_request_review_approved (approved) or pull_request_review_rejected.
  nlohmann::ordered_json review_payload(const std::string& repo, std::int64_t number, bool approved,
                                        const std::string& reviewer = "reviewer",
                                        const std::string& content = "LGTM") const;
  static nlohmann::ordered_json status_payload(const std::string& repo, const std::string& sha,
                                               const std::string& context, const std::string& state,
                                               const std::string& target_url = "https://ci.example.com/b/1");

 private:
  struct Status {
    std::int64_t index;
    std::string context, state;
    TimePoint at;
    std::string description{}, target_url{};  // as posted; add_status makes them up from the context
    std::string creator = "ci-bot";
    bool posted = false;  // through the API (not add_status)
  };
  struct Repo {
    std::map<std::string, std::string> branches;          // name -> sha
    std::map<std::string, std::vector<Status>> statuses;  // sha -> in creation order
    std::vector<GiteaPull> pulls;
    std::map<std::int64_t, std::vector<GiteaReview>> reviews;
    std::int64_t next_index = 1;
  };

  void install_routes();
  bool authorised(const httplib::Request& req, httplib::Response& res) const;
  Repo* repo_locked(const std::string& owner, const std::string& name);
  nlohmann::ordered_json pull_json_locked(const std::string& repo, const GiteaPull& p) const;
  static nlohmann::ordered_json repo_json(const std::string& repo);
  static nlohmann::ordered_json user_json(const std::string& login, std::int64_t id = 0);
  static nlohmann::ordered_json review_json(const std::string& repo, std::int64_t number, std::int64_t id,
                                            const GiteaReview& rv);
  static nlohmann::ordered_json status_json(const std::string& repo, const std::string& sha, const Status& s);
  void paged(const httplib::Request& req, httplib::Response& res, const std::vector<nlohmann::ordered_json>& all);
  std::string default_error_body(int status) const override;

  mutable std::mutex mu_;
  std::map<std::string, Repo> repos_;                             // by "owner/name"; guarded by mu_
  std::string token_;                                             // guarded by mu_
  std::map<std::string, std::string> user_tokens_;                // token -> login; guarded by mu_
  std::string user_of_locked(const httplib::Request& req) const;  // the login a request acts as
  int pull_create_faults_ = 0;                                    // guarded by mu_
  int pull_create_fault_status_ = 500;                            // guarded by mu_
  std::string api_user_ = "orch";                                 // guarded by mu_
  std::function<void(const ApiWrite&)> api_observer_;             // guarded by mu_
  GitHandler git_handler_;                                        // guarded by mu_
};

}  // namespace orch::testing
