// app/runner_dispatch.h: the wake-up of the runners' long polls (docs/adr/0023). The job scheduler pokes it after each
// enqueue, as it pokes the pool; the claim handler (app/runner_routes.cpp) waits on it between claims.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "engine/job_scheduler.h"

namespace orch {

class RunnerDispatch final : public JobWaker {
 public:
  explicit RunnerDispatch(JobWaker& next) : next_(next) {}
  void jobs_enqueued() override;  // wakes every long poll, then `next` (the server's pool)
  // Waits until a poke after `seen`, close(), or `until`; false once closed.
  bool wait(unsigned long seen, std::chrono::steady_clock::time_point until);
  unsigned long generation();
  // Ends every long poll at once and makes new ones return at once: before the HTTP server stops.
  void close();

 private:
  JobWaker& next_;
  std::mutex mu_;
  std::condition_variable cv_;
  unsigned long generation_ = 0;  // guarded by mu_
  bool closed_ = false;           // guarded by mu_
};

}  // namespace orch
