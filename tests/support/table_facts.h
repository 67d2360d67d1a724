// tests/support/table_facts.h: CodeHost, Tracker and CommandRunner that answer from tables set by the test.
// They stand in for Gitea and Plane at the seam (the real clients are tested against fake servers in
// tests/integrations/). Each records how often it was asked, so tests can assert on traffic. Thread-safe.
#pragma once

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/facts.h"

namespace orch::testing {

class TableCodeHost final : public CodeHost {
 public:
  void set_branch(const std::string& branch, const std::string& sha) {
    std::lock_guard l(mu_);
    heads_[branch] = sha;
  }
  void set_status(const std::string& sha, CiState s) {
    std::lock_guard l(mu_);
    ci_[sha] = s;
  }
  void set_pr(const std::string& branch, PullRequestInfo pr) {
    std::lock_guard l(mu_);
    prs_[branch] = pr;
  }
  void set_approved(std::int64_t number, bool approved) {
    std::lock_guard l(mu_);
    approved_[number] = approved;
  }
  void fail_with(std::optional<Status> s) {
    std::lock_guard l(mu_);
    fail_ = std::move(s);
  }
  int calls() const {
    std::lock_guard l(mu_);
    return calls_;
  }

  Result<CiState> combined_status(const std::string&, const std::string& ref) override {
    std::lock_guard l(mu_);
    ++calls_;
    if (fail_) return *fail_;
    auto it = ci_.find(ref);
    return it == ci_.end() ? CiState::kPending : it->second;
  }
  Result<std::string> branch_head(const std::string&, const std::string& branch) override {
    std::lock_guard l(mu_);
    ++calls_;
    if (fail_) return *fail_;
    auto it = heads_.find(branch);
    if (it == heads_.end()) return not_found("no branch " + branch);
    return it->second;
  }
  Result<std::optional<PullRequestInfo>> pull_request_for_branch(const std::string&,
                                                                 const std::string& branch) override {
    std::lock_guard l(mu_);
    ++calls_;
    if (fail_) return *fail_;
    auto it = prs_.find(branch);
    if (it == prs_.end()) return std::optional<PullRequestInfo>();
    return std::optional<PullRequestInfo>(it->second);
  }
  Result<std::vector<PullRequestInfo>> open_pull_requests(const std::string&) override {
    std::lock_guard l(mu_);
    ++calls_;
    if (fail_) return *fail_;
    std::vector<PullRequestInfo> out;
    for (auto& [b, pr] : prs_)
      if (pr.open) out.push_back(pr);
    return out;
  }
  Result<bool> pull_request_approved(const std::string&, std::int64_t number) override {
    std::lock_guard l(mu_);
    ++calls_;
    if (fail_) return *fail_;
    auto it = approved_.find(number);
    return it != approved_.end() && it->second;
  }
  Result<PullRequestInfo> create_pull_request(const std::string&, const std::string& head, const std::string& base,
                                              const std::string&, const std::string&) override {
    std::lock_guard l(mu_);
    ++calls_;
    if (fail_) return *fail_;
    auto it = prs_.find(head);
    if (it != prs_.end() && it->second.open) return it->second;
    PullRequestInfo pr{next_pr_++, true, false, head, heads_[head], base, "http://gitea/pulls"};
    prs_[head] = pr;
    return pr;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::string> heads_;
  std::map<std::string, CiState> ci_;
  std::map<std::string, PullRequestInfo> prs_;
  std::map<std::int64_t, bool> approved_;
  std::optional<Status> fail_;
  std::int64_t next_pr_ = 1;
  int calls_ = 0;
};

// State ids are the state names themselves: "In Progress", "Approved", "Rejected", anything else is kOther.
class TableTracker final : public Tracker {
 public:
  void set_item(WorkItem item) {
    std::lock_guard l(mu_);
    items_[item.id] = std::move(item);
  }
  void set_state(const std::string& id, const std::string& state) {
    std::lock_guard l(mu_);
    items_[id].state_id = state;
  }
  void fail_with(std::optional<Status> s) {
    std::lock_guard l(mu_);
    fail_ = std::move(s);
  }
  int calls() const {
    std::lock_guard l(mu_);
    return calls_;
  }

  Result<TrackerState> classify_state(const ProjectSpec& p, const std::string& state_id) override {
    if (state_id == p.plane_states.in_progress) return TrackerState::kInProgress;
    if (state_id == p.plane_states.approved) return TrackerState::kApproved;
    if (state_id == p.plane_states.rejected) return TrackerState::kRejected;
    return TrackerState::kOther;
  }
  Result<WorkItem> get_work_item(const ProjectSpec&, const std::string& id) override {
    std::lock_guard l(mu_);
    ++calls_;
    if (fail_) return *fail_;
    auto it = items_.find(id);
    if (it == items_.end()) return not_found("no work item " + id);
    return it->second;
  }
  // Honours the Tracker contract: newest-updated first when asked (an item without a timestamp counts as newest).
  Status list_work_items(const ProjectSpec& p, bool newest_first,
                         const std::function<bool(const WorkItem&, TrackerState)>& visit) override {
    std::vector<WorkItem> items;
    {
      std::lock_guard l(mu_);
      ++calls_;
      if (fail_) return *fail_;
      for (auto& [id, item] : items_) items.push_back(item);
    }
    if (newest_first)
      std::stable_sort(items.begin(), items.end(), [](const WorkItem& a, const WorkItem& b) {
        return a.updated_at.value_or(TimePoint::max()) > b.updated_at.value_or(TimePoint::max());
      });
    for (const auto& item : items) {
      auto s = classify_state(p, item.state_id).value();
      if (s != TrackerState::kOther && !visit(item, s)) break;
    }
    return {};
  }
  Result<std::string> project_identifier(const ProjectSpec&) override { return std::string("SHOP"); }
  Status move_work_item(const ProjectSpec& p, const std::string& id, TrackerState to) override {
    std::lock_guard l(mu_);
    ++calls_;
    items_[id].state_id = to == TrackerState::kApproved   ? p.plane_states.approved
                          : to == TrackerState::kRejected ? p.plane_states.rejected
                                                          : p.plane_states.in_progress;
    return {};
  }
  Status add_comment(const ProjectSpec&, const std::string& id, const std::string& html,
                     const std::string& = "") override {
    std::lock_guard l(mu_);
    comments_.push_back(id + ": " + html);
    return {};
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, WorkItem> items_;
  std::vector<std::string> comments_;
  std::optional<Status> fail_;
  int calls_ = 0;
};

class TableRunner final : public CommandRunner {
 public:
  void set_exit(int code) {
    std::lock_guard l(mu_);
    exit_ = code;
  }
  std::vector<std::vector<std::string>> runs() const {
    std::lock_guard l(mu_);
    return runs_;
  }
  Result<int> run(const std::vector<std::string>& argv, const std::string&, std::chrono::seconds) override {
    std::lock_guard l(mu_);
    runs_.push_back(argv);
    return exit_;
  }

 private:
  mutable std::mutex mu_;
  int exit_ = 0;
  std::vector<std::vector<std::string>> runs_;
};

}  // namespace orch::testing
