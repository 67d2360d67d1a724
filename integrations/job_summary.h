// integrations/job_summary.h: the text a successful agent run reports (write-back, docs/adr/0013): the summary.md the
// agent wrote into its ORCH_OUTPUT_DIR, or, without one, the last lines of the job's log. Plain text, always valid
// UTF-8 and at most kMaxSummaryBytes; whoever posts it escapes it for its destination. Thread-safe (no state).
#pragma once

#include "integrations/utf8.h"  // valid_utf8, for callers of job_summary

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace orch {

inline constexpr std::size_t kMaxSummaryBytes = 64 * 1024;
inline constexpr std::size_t kMaxSummaryLogLines = 40;  // of the log, when there is no summary.md

// output_dir/summary.md when it is a regular file with more than white space in it (a symlink, a directory or a
// fifo there is ignored: the agent controls that directory), cut to kMaxSummaryBytes at a character boundary with a
// last line saying so; otherwise the last lines of the agent's latest run in log_file (at most kMaxSummaryLogLines,
// at most kMaxSummaryBytes, without orch's own "[orch] ..." lines); "" when neither has anything.
std::string job_summary(const std::filesystem::path& output_dir, const std::filesystem::path& log_file);

}  // namespace orch
