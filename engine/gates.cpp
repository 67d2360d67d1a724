#include "engine/gates.h"

#include <filesystem>

namespace orch {
namespace {

constexpr auto kCommandGateTimeout = std::chrono::minutes(5);

GateOutcome green(std::string why) { return {true, std::move(why)}; }
GateOutcome red(std::string why) { return {false, std::move(why)}; }

// A gate path must stay inside the worktree: relative, and no '..' component.
bool is_contained(const std::filesystem::path& p) {
  if (p.is_absolute() || p.empty()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

Result<GateOutcome> GateEvaluator::evaluate(const GateSpec& gate, const TaskRow& task) {
  const ProjectSpec* project = config_.find_project(task.project);
  if (!project) return invalid("task " + task.work_item_key + " names unknown project '" + task.project + "'");
  if (gate.type == GateSpec::Type::kAll || gate.type == GateSpec::Type::kAny) {
    const bool all = gate.type == GateSpec::Type::kAll;
    std::string why;
    Status first_error;
    for (const GateSpec& child : gate.of) {
      Result<GateOutcome> r = evaluate(child, task);
      if (!r.ok()) {
        if (all) return r.status();  // cannot say green without every fact
        if (first_error.ok()) first_error = r.status();
        continue;
      }
      if (!why.empty()) why += all ? " and " : " or ";
      why += r.value().why;
      if (all && !r.value().green) return red(why);
      if (!all && r.value().green) return green(r.value().why);
    }
    if (!all && !first_error.ok()) return first_error;  // nothing green, and one answer is missing
    return GateOutcome{all, why};
  }
  return evaluate_leaf(gate, task, *project);
}

Result<GateOutcome> GateEvaluator::evaluate_leaf(const GateSpec& gate, const TaskRow& task,
                                                 const ProjectSpec& project) {
  using T = GateSpec::Type;
  switch (gate.type) {
    case T::kHumanApproval: {
      auto item = tracker_.get_work_item(project, task.work_item_id);
      if (!item.ok()) return item.status();
      auto state = tracker_.classify_state(project, item.value().state_id);
      if (!state.ok()) return state.status();
      if (state.value() == TrackerState::kApproved) return green("approved in the tracker");
      return red(std::string("tracker state is ") + tracker_state_name(state.value()));
    }
    case T::kCiGreen: {
      auto sha = code_host_.branch_head(project.gitea_repo, task.branch);
      if (!sha.ok()) {
        if (sha.status().code == Code::kNotFound) return red("branch " + task.branch + " is not on the remote");
        return sha.status();
      }
      auto ci = code_host_.combined_status(project.gitea_repo, sha.value());
      if (!ci.ok()) return ci.status();
      std::string short_sha = sha.value().substr(0, 7);
      if (ci.value() == CiState::kSuccess) return green("ci success on " + short_sha);
      return red(std::string("ci ") + ci_state_name(ci.value()) + " on " + short_sha);
    }
    case T::kPrOpen:
    case T::kPrApproved:
    case T::kPrMerged: {
      auto pr = code_host_.pull_request_for_branch(project.gitea_repo, task.branch);
      if (!pr.ok()) return pr.status();
      if (!pr.value()) return red("no pull request for " + task.branch);
      const PullRequestInfo& info = *pr.value();
      std::string name = "pr #" + std::to_string(info.number);
      if (gate.type == T::kPrOpen) return info.open ? green(name + " open") : red(name + " not open");
      if (gate.type == T::kPrMerged) return info.merged ? green(name + " merged") : red(name + " not merged");
      if (!info.open) return red(name + " not open");
      auto approved = code_host_.pull_request_approved(project.gitea_repo, info.number);
      if (!approved.ok()) return approved.status();
      return approved.value() ? green(name + " approved") : red(name + " not approved");
    }
    case T::kArtifacts: {
      std::filesystem::path root = layout_.worktree(task);
      for (const std::string& p : gate.paths) {
        std::filesystem::path rel(p);
        if (!is_contained(rel)) return invalid("artifact path '" + p + "' leaves the worktree");
        std::error_code ec;
        if (!std::filesystem::exists(root / rel, ec)) return red("artifact " + p + " missing");
      }
      return green("artifacts present");
    }
    case T::kCommand: {
      auto code = runner_.run(gate.argv, layout_.worktree(task).string(), kCommandGateTimeout);
      if (!code.ok()) return code.status();
      if (code.value() == 0) return green("command exited 0");
      return red("command exited " + std::to_string(code.value()));
    }
    case T::kAll:
    case T::kAny: break;  // handled in evaluate()
  }
  return internal("unhandled gate type");
}

}  // namespace orch
