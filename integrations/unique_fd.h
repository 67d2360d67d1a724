// integrations/unique_fd.h: a file descriptor that is closed when it goes out of scope (what open, openat, eventfd
// and pidfd_open return; -1 holds nothing), so that no early return leaks one.
#pragma once

#include <unistd.h>

namespace orch {

class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  // Closes it now: close's result, for a written file whose last error close may be the one to report.
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

}  // namespace orch
