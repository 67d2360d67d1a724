// tests/fakes/recording_sleeper.h: a Sleeper that does not sleep: it advances a ManualClock by the wait and records
// it, so a test asserts on the waits an HttpClient chose (Retry-After, backoff). Thread-safe.
#pragma once

#include <mutex>
#include <vector>

#include "integrations/http_client.h"
#include "tests/support/manual_clock.h"

namespace orch::testing {

class RecordingSleeper final : public Sleeper {
 public:
  explicit RecordingSleeper(ManualClock& clock) : clock_(clock) {}
  bool sleep_for(Millis d) override {
    {
      std::lock_guard lock(mu_);
      waits_.push_back(d);
    }
    clock_.advance(d);
    return true;
  }
  bool interrupted() const override { return false; }
  std::vector<Millis> waits() const {
    std::lock_guard lock(mu_);
    return waits_;
  }

 private:
  ManualClock& clock_;
  mutable std::mutex mu_;
  std::vector<Millis> waits_;  // guarded by mu_
};

}  // namespace orch::testing
