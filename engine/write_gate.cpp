#include "engine/write_gate.h"

#include <algorithm>

namespace orch {

WriteGate::Hold WriteGate::enter(Priority priority) {
  std::unique_lock lock(mu_);
  if (priority == Priority::kAcknowledge) {
    ++acknowledging_waiting_;
    cv_.wait(lock, [this] { return !held_ && overdue_waiting_ == 0; });
    --acknowledging_waiting_;
  } else if (priority == Priority::kNext) {  // no reservation or waiting writer holds it back
    ++next_waiting_;
    ++overdue_waiting_;
    cv_.wait(lock, [this] { return !held_; });
    --overdue_waiting_;
    --next_waiting_;
  } else {
    ++normal_waiting_;
    const auto deadline = SteadyClock::now() + timing_.max_yield;
    while (true) {
      const auto now = SteadyClock::now();
      if (!held_ && acknowledging_waiting_ == 0 && overdue_waiting_ == 0 && now >= reserved_until_) break;
      if (now >= deadline) {  // waited long enough: next in, before any acknowledging writer
        ++overdue_waiting_;
        cv_.wait(lock, [this] { return !held_; });
        --overdue_waiting_;
        break;
      }
      // Woken by leave(), or at the end of a reservation, or at the deadline.
      cv_.wait_until(lock, reserved_until_ > now ? std::min(deadline, reserved_until_) : deadline);
    }
    --normal_waiting_;
  }
  held_ = true;
  return Hold(this, priority);
}

void WriteGate::leave(Priority priority) {
  {
    std::lock_guard lock(mu_);
    held_ = false;
    if (priority == Priority::kAcknowledge) reserved_until_ = SteadyClock::now() + timing_.anticipation;
  }
  cv_.notify_all();
}

int WriteGate::waiting() const {
  std::lock_guard lock(mu_);
  return acknowledging_waiting_ + normal_waiting_ + next_waiting_;
}

}  // namespace orch
