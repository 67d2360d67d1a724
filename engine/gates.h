// engine/gates.h: the gate registry. A gate is a read-only check that decides whether a task may leave its stage;
// evaluating one changes nothing, so the reconciler can pre-evaluate any gate as often as it likes.
// Facts come through CodeHost (Gitea), Tracker (Plane), CommandRunner and the worktree on disk.
// Thread-safe if the seams are (the integrations' clients are).
#pragma once

#include <string>

#include "engine/config.h"
#include "engine/facts.h"
#include "engine/layout.h"
#include "engine/model.h"
#include "engine/status.h"

namespace orch {

struct GateOutcome {
  bool green = false;
  std::string why;  // "ci pending on 3f9a0c5", "pr #12 approved", ... for logs and dry runs
};

class GateEvaluator {
 public:
  GateEvaluator(const Config& config, CodeHost& code_host, Tracker& tracker, CommandRunner& runner,
                const DataLayout& layout)
      : config_(config), code_host_(code_host), tracker_(tracker), runner_(runner), layout_(layout) {}

  // kUnavailable when a fact could not be read (Gitea down): that is not a red gate.
  Result<GateOutcome> evaluate(const GateSpec& gate, const TaskRow& task);

 private:
  Result<GateOutcome> evaluate_leaf(const GateSpec& gate, const TaskRow& task, const ProjectSpec& project);

  const Config& config_;
  CodeHost& code_host_;
  Tracker& tracker_;
  CommandRunner& runner_;
  const DataLayout& layout_;
};

}  // namespace orch
