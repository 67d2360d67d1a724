// integrations/plane_client.h: PlaneClient implements Tracker over Plane's REST API v1 (docs/wire-formats.md §1.3-1.7).
// State ids are resolved by name (ProjectSpec::plane_states) from one listing per project, then cached, as is the
// project identifier. list_work_items pages with a fixed per_page, holds one page at a time and filters by state
// client-side (Plane cannot filter). Thread-safe: the caches are guarded; HTTP goes through a thread-safe HttpClient.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "engine/facts.h"
#include "engine/secret.h"
#include "integrations/http_client.h"

namespace orch {

struct PlaneClientOptions {
  int per_page = 100;     // sent on every request: the server computes offset = page * per_page
  int max_pages = 10000;  // a guard against a server whose next_page_results never turns false
};

// The external_source of every comment orch writes: with the per-event external_id it makes Plane dedupe retries.
inline constexpr const char* kCommentSource = "orch";

class PlaneClient final : public Tracker {
 public:
  PlaneClient(HttpClient& http, Secret api_key, PlaneClientOptions options = {});

  Result<TrackerState> classify_state(const ProjectSpec& project, const std::string& state_id) override;
  Result<WorkItem> get_work_item(const ProjectSpec& project, const std::string& work_item_id) override;
  Status list_work_items(const ProjectSpec& project, bool newest_first,
                         const std::function<bool(const WorkItem&, TrackerState)>& visit) override;
  Result<std::string> project_identifier(const ProjectSpec& project) override;
  Status move_work_item(const ProjectSpec& project, const std::string& work_item_id, TrackerState to) override;
  Status add_comment(const ProjectSpec& project, const std::string& work_item_id, const std::string& html,
                     const std::string& external_id = "") override;

  // The three configured state ids of a project (listing states on first use).
  struct StateIds {
    std::string in_progress, approved, rejected;
  };
  Result<StateIds> state_ids(const ProjectSpec& project);
  // The id of any state of the project by its exact name (compared as the configured plane_states are), from the
  // same cached listing. kNotFound naming the state and the project when it has none by that name.
  Result<std::string> state_id_by_name(const ProjectSpec& project, const std::string& name);
  // Moves a work item to a state named freely (not only the three configured ones): resolved, then the same
  // PATCH {"state": id} as move_work_item. Idempotent, so retried on 5xx and timeouts.
  Status move_work_item_to_state(const ProjectSpec& project, const std::string& work_item_id,
                                 const std::string& state_name);
  // The id of the user the API key acts as (GET /api/v1/users/me/): what Plane puts as the actor of the webhooks
  // our own PATCHes cause, so their echoes can be told apart. A refused key (401/403) is kInvalid saying so.
  Result<std::string> current_user_id();
  // Forgets cached states and identifiers (e.g. after an operator renamed a state in Plane).
  void forget_cache();
  std::int64_t work_item_pages_fetched() const { return pages_fetched_.load(); }

 private:
  std::string project_path(const ProjectSpec& project) const;  // "/api/v1/workspaces/{slug}/projects/{id}/"
  HttpRequest request(std::string method, std::string target, const nlohmann::json* body = nullptr) const;
  TrackerState classify(const StateIds& ids, const std::string& state_id) const;
  // Every state of a project, name -> id, listed on first use and cached.
  Result<std::map<std::string, std::string>> states_by_name(const ProjectSpec& project);
  Status patch_state(const ProjectSpec& project, const std::string& work_item_id, const std::string& state_id);

  HttpClient& http_;
  const Secret api_key_;
  const PlaneClientOptions options_;
  std::mutex mu_;
  std::map<std::string, StateIds> states_;                                 // by project path; guarded by mu_
  std::map<std::string, std::map<std::string, std::string>> state_names_;  // by project path; guarded by mu_
  std::map<std::string, std::string> identifiers_;                         // by project path; guarded by mu_
  std::atomic<std::int64_t> pages_fetched_{0};
};

// Parses one REST Issue object (state is a bare id there; an expanded {id,...} object is accepted too).
Result<WorkItem> parse_plane_work_item(const nlohmann::json& j);

}  // namespace orch
