#include "integrations/job_log.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace orch {
namespace {

void write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;  // a full disk loses log lines, not the job
    }
    data += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace

Result<std::unique_ptr<JobLog>> JobLog::open(const std::filesystem::path& path, std::size_t cap,
                                             const std::string& header) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  int file = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (file < 0) return unavailable("cannot open the job log " + path.string() + ": " + std::strerror(errno));
  write_all(file, header.data(), header.size());
  struct stat st {};
  const std::size_t existing = ::fstat(file, &st) == 0 ? static_cast<std::size_t>(st.st_size) : 0;
  return std::unique_ptr<JobLog>(new JobLog(file, cap, existing));
}

JobLog::JobLog(int file, std::size_t cap, std::size_t existing) : file_(file) {
  tail_keep_ = std::min<std::size_t>(64 * 1024, cap / 4);
  head_budget_ = cap > existing + tail_keep_ ? cap - existing - tail_keep_ : 0;
}

JobLog::~JobLog() {
  finish("");
  ::close(file_);
}

void JobLog::write(std::string_view output) {
  if (output.empty()) return;
  last_ = output.back();
  if (written_ < head_budget_) {
    const std::size_t take = std::min(output.size(), head_budget_ - written_);
    write_all(file_, output.data(), take);
    written_ += take;
    output.remove_prefix(take);
  }
  if (output.empty()) return;
  dropped_ += output.size();
  tail_.append(output);
  if (tail_.size() > 2 * tail_keep_) tail_.erase(0, tail_.size() - tail_keep_);
}

void JobLog::finish(const std::string& footer) {
  if (finished_) return;
  finished_ = true;
  if (dropped_ > 0) {
    const std::size_t kept = std::min(tail_.size(), tail_keep_);
    const std::string marker =
        "\n[orch: " + std::to_string(dropped_ - kept) + " bytes of output omitted here: the job log is capped]\n";
    write_all(file_, marker.data(), marker.size());
    write_all(file_, tail_.data() + (tail_.size() - kept), kept);
    last_ = kept > 0 ? tail_.back() : '\n';
  }
  // The footer gets a line of its own even after output without a final newline: job_summary leaves out orch's
  // "[orch] ..." lines by their start.
  if (!footer.empty() && last_ != '\n') write_all(file_, "\n", 1);
  write_all(file_, footer.data(), footer.size());
}

}  // namespace orch
