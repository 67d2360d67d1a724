// engine/layout.h: where orch keeps its files under the data directory, and the one function that turns a
// work item into a branch or path component. Names come from the work item key or id only, never the title.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "engine/model.h"

namespace orch {

// Lower-case [a-z0-9-] only, other runs collapsed to one '-', trimmed, at most 64 chars; "item" if empty.
std::string sanitize_component(std::string_view raw);
// "orch/<key in lower case>" (e.g. orch/shop-42); the work item id stands in when the key is empty.
std::string branch_for(std::string_view work_item_key, std::string_view work_item_id);

class DataLayout {
 public:
  explicit DataLayout(std::filesystem::path root) : root_(std::move(root)) {}
  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path database() const { return root_ / "orch.db"; }
  std::filesystem::path clone(std::string_view project) const { return root_ / "clones" / sanitize_component(project); }
  std::filesystem::path worktree(const TaskRow& task) const {
    return root_ / "worktrees" / sanitize_component(task.project) /
           sanitize_component(task.work_item_key.empty() ? task.work_item_id : task.work_item_key);
  }
  std::filesystem::path job_log(JobId id) const { return root_ / "logs" / ("job-" + std::to_string(id) + ".log"); }
  std::filesystem::path task_json(JobId id) const { return root_ / "tasks" / ("job-" + std::to_string(id) + ".json"); }
  // ORCH_OUTPUT_DIR: where the agent may write summary.md; made empty before each run of the job's agent.
  std::filesystem::path job_output(JobId id) const { return root_ / "outputs" / ("job-" + std::to_string(id)); }

 private:
  std::filesystem::path root_;
};

}  // namespace orch
