#include "app/runner_dispatch.h"

namespace orch {

using Steady = std::chrono::steady_clock;

void RunnerDispatch::jobs_enqueued() {
  {
    std::lock_guard lock(mu_);
    ++generation_;
  }
  cv_.notify_all();
  next_.jobs_enqueued();
}

unsigned long RunnerDispatch::generation() {
  std::lock_guard lock(mu_);
  return generation_;
}

bool RunnerDispatch::wait(unsigned long seen, Steady::time_point until) {
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, until, [&] { return closed_ || generation_ != seen; });
  return !closed_;
}

void RunnerDispatch::close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

}  // namespace orch
