// tests/support/manual_clock.h: a Clock that moves only when told, like Abseil's SimulatedClock. Thread-safe.
#pragma once

#include <mutex>

#include "engine/clock.h"

namespace orch::testing {

// Monday 2026-11-23 09:00:00 UTC.
inline const TimePoint kMonday9am = from_millis(1795424400000LL);

class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start = kMonday9am) : now_(start) {}
  TimePoint now() const override {
    std::lock_guard lock(mu_);
    return now_;
  }
  void advance(std::chrono::milliseconds d) {
    std::lock_guard lock(mu_);
    now_ += d;
  }
  void set(TimePoint t) {
    std::lock_guard lock(mu_);
    now_ = t;
  }

 private:
  mutable std::mutex mu_;
  TimePoint now_;  // guarded by mu_
};

}  // namespace orch::testing
