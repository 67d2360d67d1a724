// app/logging.h: the process's logger, built once in main() and passed down by reference (no global logger).
// Human-readable lines by default; one JSON object per line with ORCH_LOG_FORMAT=json.
#pragma once

#include <memory>

#include <spdlog/logger.h>

namespace orch {

std::shared_ptr<spdlog::logger> make_logger(bool json, spdlog::level::level_enum level = spdlog::level::info);

}  // namespace orch
