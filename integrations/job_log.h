// integrations/job_log.h: a job's log file, written with what its agent prints. The file never grows past its cap,
// and the agent never blocks on it: the first part of a run's output is kept, then a marker line saying how much was
// left out, then the run's last 64 KiB. JobLog has no thread: ProcessRunner hands it the output (ProcessSpec::
// on_output) from the thread that waits for the agent. One JobLog per run; not thread-safe.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "engine/status.h"

namespace orch {

class JobLog {
 public:
  // Opens (appending: earlier attempts stay above) and writes `header`.
  static Result<std::unique_ptr<JobLog>> open(const std::filesystem::path& path, std::size_t cap,
                                              const std::string& header);
  ~JobLog();
  JobLog(const JobLog&) = delete;
  JobLog& operator=(const JobLog&) = delete;

  void write(std::string_view output);
  // Writes the kept tail (with its marker) and `footer` on a line of its own. Idempotent.
  void finish(const std::string& footer);

 private:
  JobLog(int file, std::size_t cap, std::size_t existing);

  const int file_;
  std::size_t tail_keep_ = 0, head_budget_ = 0;
  std::size_t written_ = 0, dropped_ = 0;
  std::string tail_;
  char last_ = '\n';  // the output's last byte
  bool finished_ = false;
};

}  // namespace orch
