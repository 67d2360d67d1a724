// engine/facts.h: the narrow seams through which gates and handlers learn facts from the outside world.
// Implemented by integrations/ (Gitea, Plane, processes) and by tables in tests. Each call blocks on I/O
// and returns a value; kUnavailable means "try again later", never "the gate is red".
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/status.h"

namespace orch {

enum class CiState { kPending, kSuccess, kFailure };
const char* ci_state_name(CiState s);

struct PullRequestInfo {
  std::int64_t number = 0;
  bool open = false;
  bool merged = false;
  std::string head_ref;  // short branch name
  std::string head_sha;
  std::string base_ref;
  std::string html_url;
};

// What orch needs from Gitea, nothing more.
struct CodeHost {
  virtual ~CodeHost() = default;
  // Combined status of a ref (branch or sha), computed from the per-context states.
  virtual Result<CiState> combined_status(const std::string& repo, const std::string& ref) = 0;
  virtual Result<std::string> branch_head(const std::string& repo, const std::string& branch) = 0;  // kNotFound if none
  // The open PR whose head is `branch`; else the most recent closed / merged one; nullopt if none ever.
  virtual Result<std::optional<PullRequestInfo>> pull_request_for_branch(const std::string& repo,
                                                                         const std::string& branch) = 0;
  virtual Result<std::vector<PullRequestInfo>> open_pull_requests(const std::string& repo) = 0;
  // Each reviewer's latest review counted; true iff at least one APPROVED, not dismissed, and no REQUEST_CHANGES.
  virtual Result<bool> pull_request_approved(const std::string& repo, std::int64_t number) = 0;
  // Idempotent: an existing open PR for head -> base is adopted (Gitea answers 409).
  virtual Result<PullRequestInfo> create_pull_request(const std::string& repo, const std::string& head,
                                                      const std::string& base, const std::string& title,
                                                      const std::string& body) = 0;
};

// Which of the project's configured Plane states a work item is in.
enum class TrackerState { kOther, kInProgress, kApproved, kRejected };
const char* tracker_state_name(TrackerState s);

struct WorkItem {
  std::string id;
  std::string project_id;
  std::int64_t sequence_id = 0;
  std::string name;
  std::string description;  // description_stripped or description_html
  std::string state_id;
  std::optional<TimePoint> updated_at;
};

// What orch needs from Plane. Implementations cache state ids per project (resolved by name, never hard-coded).
struct Tracker {
  virtual ~Tracker() = default;
  virtual Result<TrackerState> classify_state(const ProjectSpec& project, const std::string& state_id) = 0;
  virtual Result<WorkItem> get_work_item(const ProjectSpec& project, const std::string& work_item_id) = 0;
  // Pages through the project's work items (newest-updated first when `newest_first`), calling visit() for each
  // one in a configured state. visit() returns false to stop early. Memory stays bounded by one page.
  virtual Status list_work_items(const ProjectSpec& project, bool newest_first,
                                 const std::function<bool(const WorkItem&, TrackerState)>& visit) = 0;
  virtual Result<std::string> project_identifier(const ProjectSpec& project) = 0;  // e.g. "SHOP"
  virtual Status move_work_item(const ProjectSpec& project, const std::string& work_item_id, TrackerState to) = 0;
  // Posts a comment (`html` is made by text_to_comment_html, never raw input). With an `external_id`, the comment is
  // marked external_source "orch" + that id: Plane refuses a second comment with the same pair (409), so the call
  // is retried like an idempotent one and a 409 counts as delivered. Without one, it is never retried after a 5xx.
  virtual Status add_comment(const ProjectSpec& project, const std::string& work_item_id, const std::string& html,
                             const std::string& external_id = "") = 0;
};

// Runs a command (argv, never a shell) in a directory with a timeout; returns its exit code.
struct CommandRunner {
  virtual ~CommandRunner() = default;
  virtual Result<int> run(const std::vector<std::string>& argv, const std::string& cwd,
                          std::chrono::seconds timeout) = 0;
};

}  // namespace orch
