// tests/fakes/fake_plane.h: a fake Plane CE speaking REST API v1 and webhooks v1 exactly as shared/reference/plane.md
// describes: states and work items in the paginated envelope (offset = page * per_page, per_page defaulting to
// 1000, next_cursor still set on the last page), get / PATCH / comments, project detail with its identifier,
// the slashless-URL 301, X-API-Key checks, and 429 with Retry-After. Like Plane's ApiKeyRateThrottle it counts
// requests per API key in a sliding window (60 a minute unless set_rate_limit says otherwise), puts
// X-RateLimit-Remaining / X-RateLimit-Reset on every allowed answer and answers an over-limit request with
// 429 + Retry-After + {"error_code":5900,...} and no rate headers (plane.md §3). It sends signed issue webhooks with
// Plane's exact bytes. For orch's writes: /users/me/ (the API key's user), the history of API state changes and the
// webhook echo of one, an outage until a time (fail_until), comments stored with their answer lost, and a log of
// request times for budget tests. Thread-safe: tables may be changed from the test while the server answers.
#pragma once

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tests/fakes/fake_server.h"

namespace orch::testing {

struct PlaneWorkItemSeed {
  std::string id{};  // "" = a fresh uuid
  std::string name = "Work item";
  std::string state_id;  // "" = the project's default state
  std::string description_html = "<p></p>";
  std::optional<TimePoint> created_at{};  // default: the fake's now
  std::optional<TimePoint> updated_at{};  // default: created_at
  std::int64_t sequence_id = 0;           // 0 = next in the project
};

struct PlaneActor {
  std::string id = "7d1e0b9a-55aa-4c3e-8f0e-1b2c3d4e5f60";
  std::string first_name = "Ada";
  std::string last_name = "Lovelace";
  std::string email = "ada@example.com";
  std::string display_name = "ada";
};

struct PlaneIssueWebhook {
  std::string action = "updated";              // created / updated / deleted (legacy: create / update / delete)
  std::optional<std::string> field = "state";  // "state" (API) or "state_id" (web UI); nullopt on created
  nlohmann::ordered_json old_value = nullptr;
  std::optional<nlohmann::ordered_json> new_value;  // default for a state field: the item's current state id
  PlaneActor actor;
  std::string webhook_id = "3c2c32ac-82df-48b3-be2a-a3e21dbe8692";
};

class FakePlane final : public FakeServer {
 public:
  FakePlane();
  ~FakePlane() override;

  // Tables. Every project gets the seed states Backlog (default), Todo, In Progress, Done, Cancelled.
  void add_project(const std::string& workspace_slug, const std::string& project_id, const std::string& identifier,
                   const std::string& workspace_id = "d2d97c94-a6ad-4012-b526-5577c0d7c769");
  std::string add_state(const std::string& project_id, const std::string& name, const std::string& group);
  void remove_state(const std::string& project_id, const std::string& name);
  std::string state_id(const std::string& project_id, const std::string& name) const;     // "" if none
  std::string add_work_item(const std::string& project_id, PlaneWorkItemSeed seed = {});  // returns its id
  void set_work_item_state(const std::string& work_item_id, const std::string& state_id,
                           std::optional<TimePoint> updated_at = {});
  std::optional<nlohmann::ordered_json> work_item(const std::string& work_item_id) const;  // the REST object
  std::vector<nlohmann::ordered_json> comments(const std::string& work_item_id) const;
  // Puts back a comment exactly as comments() listed it (the sandbox restoring its saved state). No webhook.
  void restore_comment(const std::string& work_item_id, nlohmann::ordered_json comment);
  void set_now(TimePoint now);               // the time PATCHes and new rows get; default: the system clock
  void set_api_key(const std::string& key);  // then requests must carry X-API-Key: key ("" = no check)
  // The time the rate-limit window (and every other "now") is read from, instead of the system clock or set_now:
  // a test's ManualClock, so a window of 60 s passes when the client's RecordingSleeper waits. Not owned.
  void set_clock(const Clock* clock);
  // Plane's API_KEY_RATE_LIMIT: `requests` per `window` per X-API-Key value. Default 60 per minute, as Plane's.
  void set_rate_limit(int requests, std::chrono::milliseconds window = std::chrono::minutes(1));
  int throttled() const;  // requests answered 429 by the rate limit (not by rate_limit_next)

  // Plane-shaped faults.
  void rate_limit_next(int times, int retry_after_seconds);  // 429 + Retry-After + RATE_LIMIT_EXCEEDED body
  void malform_next(int times, std::string body = R"({"grouped_by": null, "results": [{"id": )");  // 200, broken JSON
  // Every API request before `t` (on the fake's clock: set_clock, set_now or the system clock) answers `status`
  // with Plane's error body for it, as a Plane that is down or overloaded until then. Checked before the key and
  // the rate limit: such an answer changes nothing and is not counted against the allowance.
  void fail_until(TimePoint t, int status = 500);
  // The next `n` comment POSTs store their comment, then close the connection without an answer: the client cannot
  // know the comment landed. With an external_source / external_id its retry meets the 409 and is harmless.
  void store_then_drop_next_comments(int n);

  // The user the API key acts as. GET /api/v1/users/me/ answers it (Plane's UserLiteSerializer); PATCHes and
  // comments made through the API record it (updated_by, created_by, actor). Default: kApiUserId.
  static constexpr const char* kApiUserId = "13fe5f3c-642d-474f-8c6e-c70a5f8c5f40";
  void set_api_user_id(std::string id);
  std::string api_user_id() const;
  // The names of the states a work item was moved to through the API (PATCHes that changed its state), in order.
  std::vector<std::string> state_history(const std::string& work_item_id) const;
  // The issue-updated webhook Plane (from v1.3.0) sends for the item's last API state change: field "state", its old
  // and new state ids, actor = the API user. "The echo" of orch's own PATCH. Without an API state change: old null.
  std::string echo_webhook_body(const std::string& work_item_id) const;

  // The fake's clock time of every API request it answered (401/403, 429 and fail_until answers included; not
  // FakeServer faults or slash redirects), in arrival order; and the most of them inside any window of length `w`.
  std::vector<TimePoint> request_times() const;
  int max_requests_in_window(std::chrono::milliseconds w) const;

  // Webhooks. The body is built from the current tables (Plane's data is a fresh read).
  std::string issue_webhook_body(const std::string& work_item_id, const PlaneIssueWebhook& hook = {}) const;
  DeliveryResult send_issue_webhook(const std::string& url, const std::string& secret, const std::string& work_item_id,
                                    const PlaneIssueWebhook& hook = {});
  // Posts a body as Plane does: a fresh X-Plane-Delivery every call (Plane's retries re-send identical bytes).
  DeliveryResult deliver(const std::string& url, const std::string& secret, const std::string& event,
                         const std::string& body);

 private:
  struct State {
    std::string id, name, group, color;
    double sequence = 0;
    bool is_default = false;
  };
  struct Project {
    std::string workspace_slug, workspace_id, id, identifier;
    std::vector<State> states;
    std::vector<std::string> items;  // work item ids, in creation order
    std::int64_t next_sequence = 1;
  };
  struct Item {
    nlohmann::ordered_json json;  // REST shape
    TimePoint created_at{}, updated_at{};
    std::vector<nlohmann::ordered_json> comments;
    std::vector<std::pair<std::string, std::string>> api_state_changes;  // (old id, new id) per state PATCH
  };

  void install_routes();
  TimePoint now_locked() const;
  // Takes mu_. Checks X-API-Key, then the rate limit (which writes the 429 or the X-RateLimit-* headers).
  bool authorised(const httplib::Request& req, httplib::Response& res);
  bool throttle_locked(const std::string& key, httplib::Response& res);
  Project* project_locked(const std::string& slug, const std::string& id);
  nlohmann::ordered_json state_json_locked(const Project& p, const State& s) const;
  std::string default_error_body(int status) const override;

  mutable std::mutex mu_;
  std::map<std::string, Project> projects_;                          // by project id; guarded by mu_
  std::map<std::string, Item> items_;                                // by work item id; guarded by mu_
  std::optional<TimePoint> now_;                                     // guarded by mu_
  std::string api_key_;                                              // guarded by mu_
  const Clock* clock_ = nullptr;                                     // guarded by mu_
  int rate_limit_ = 60;                                              // guarded by mu_
  std::chrono::milliseconds rate_window_ = std::chrono::minutes(1);  // guarded by mu_
  std::map<std::string, std::deque<TimePoint>> rate_history_;        // by API key, newest first; guarded by mu_
  int throttled_ = 0;                                                // guarded by mu_
  std::string api_user_id_ = kApiUserId;                             // guarded by mu_
  std::optional<TimePoint> fail_until_;                              // guarded by mu_
  int fail_until_status_ = 500;                                      // guarded by mu_
  int drop_comment_answers_ = 0;                                     // guarded by mu_
  std::vector<TimePoint> request_times_;                             // guarded by mu_
};

}  // namespace orch::testing
