// engine/pipeline.h: the declared stage graph: created -> stages in config order -> done, plus the declared
// rollback edges (on_reject, on_changes_requested). Answers "may a task go from A to B?" and "what is next?".
// Immutable after construction; thread-safe.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/config.h"

namespace orch {

enum class Rollback { kReject, kChangesRequested };

// A stage only a tracker verdict may move (human gates stay human: docs/design.md invariant 8): declared human, or its
// gate asks a human.
bool is_human_stage(const StageSpec& stage);

class Pipeline {
 public:
  explicit Pipeline(const Config& config);

  // nullptr for `created`, `done` and unknown names.
  const StageSpec* stage(std::string_view name) const;
  const AgentSpec* agent_of(std::string_view stage) const;
  bool knows(std::string_view name) const;  // a declared stage, created or done
  bool is_terminal(std::string_view name) const { return name == kDone; }
  const std::string& first_working_stage() const;
  // created -> first stage -> ... -> last stage -> done; nullopt after done or for unknown stages.
  std::optional<std::string> next(std::string_view stage) const;
  // The declared rollback edge out of `stage`, if any.
  std::optional<std::string> rollback_target(std::string_view stage, Rollback kind) const;
  // A forward step to the next stage, or a declared rollback edge.
  bool allowed(std::string_view from, std::string_view to) const;
  // A person's re-run (`orch task rerun`, ADR 0019): from a working stage into it again or into an earlier one.
  bool rerun_allowed(std::string_view from, std::string_view to) const;
  // The stage's own grace, or the default.
  std::chrono::seconds grace(std::string_view stage, std::chrono::seconds fallback) const;
  const std::vector<StageSpec>& stages() const { return stages_; }

  static constexpr std::string_view kCreated = "created";
  static constexpr std::string_view kDone = "done";

 private:
  std::vector<StageSpec> stages_;
  std::map<std::string, AgentSpec> agents_;
};

}  // namespace orch
