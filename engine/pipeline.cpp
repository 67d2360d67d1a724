#include "engine/pipeline.h"

#include <stdexcept>

namespace orch {

bool is_human_stage(const StageSpec& stage) { return stage.human || (stage.gate && gate_is_human(*stage.gate)); }

Pipeline::Pipeline(const Config& config) : stages_(config.stages), agents_(config.agents) {
  // The config loader refuses an empty pipeline; this guards direct construction in code.
  if (stages_.empty()) throw std::invalid_argument("a pipeline needs at least one stage");
}

const StageSpec* Pipeline::stage(std::string_view name) const {
  for (const auto& s : stages_)
    if (s.name == name) return &s;
  return nullptr;
}

const AgentSpec* Pipeline::agent_of(std::string_view stage_name) const {
  const StageSpec* s = stage(stage_name);
  if (!s || s->agent.empty()) return nullptr;
  auto it = agents_.find(s->agent);
  return it == agents_.end() ? nullptr : &it->second;
}

bool Pipeline::knows(std::string_view name) const {
  return name == kCreated || name == kDone || stage(name) != nullptr;
}

const std::string& Pipeline::first_working_stage() const { return stages_.front().name; }

std::optional<std::string> Pipeline::next(std::string_view current) const {
  if (current == kCreated) return stages_.front().name;
  for (size_t i = 0; i < stages_.size(); ++i) {
    if (stages_[i].name != current) continue;
    if (i + 1 < stages_.size()) return stages_[i + 1].name;
    return std::string(kDone);
  }
  return std::nullopt;
}

std::optional<std::string> Pipeline::rollback_target(std::string_view current, Rollback kind) const {
  const StageSpec* s = stage(current);
  if (!s) return std::nullopt;
  const std::string& target = kind == Rollback::kReject ? s->on_reject : s->on_changes_requested;
  if (target.empty()) return std::nullopt;
  return target;
}

bool Pipeline::allowed(std::string_view from, std::string_view to) const {
  if (auto n = next(from); n && *n == to) return true;
  for (Rollback kind : {Rollback::kReject, Rollback::kChangesRequested})
    if (auto r = rollback_target(from, kind); r && *r == to) return true;
  return false;
}

bool Pipeline::rerun_allowed(std::string_view from, std::string_view to) const {
  const StageSpec* f = stage(from);  // both point into stages_, in config order
  const StageSpec* t = stage(to);
  return f && t && t <= f;
}

std::chrono::seconds Pipeline::grace(std::string_view name, std::chrono::seconds fallback) const {
  const StageSpec* s = stage(name);
  return s && s->grace ? *s->grace : fallback;
}

}  // namespace orch
