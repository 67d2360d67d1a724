// integrations/agent_usage.h: what an agent's run says it used, read from ORCH_OUTPUT_DIR/usage.json
// (docs/contracts.md "The agent's environment"): {"tokens_in", "tokens_out", "model", "cost_usd"}, all optional.
// The agent controls that directory, so nothing about the file is trusted: a symlink, a fifo, a directory or more
// than kMaxUsageBytes is refused, and so is a field of the wrong type; the model is cut to kMaxModelBytes of valid
// UTF-8. Thread-safe (no state).
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>

#include "engine/model.h"
#include "engine/status.h"

namespace orch {

inline constexpr std::size_t kMaxUsageBytes = 64 * 1024;
inline constexpr std::size_t kMaxModelBytes = 200;

// nullopt when the run wrote no usage.json; kInvalid with why when it is there but not a usage report.
Result<std::optional<AgentUsage>> read_agent_usage(const std::filesystem::path& output_dir);

}  // namespace orch
