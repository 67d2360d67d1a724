// tests/support/flag_leadership.h: a Leadership that leads while its flag says so; tests flip it to play a replica
// that wins or loses the lock. Thread-safe.
#pragma once

#include <atomic>
#include <string>

#include "engine/leadership.h"

namespace orch::testing {

class FlagLeadership final : public Leadership {
 public:
  explicit FlagLeadership(bool leading = true, std::string id = "replica-a") : leading_(leading), id_(std::move(id)) {}
  void set(bool leading) { leading_.store(leading); }
  bool is_leader() const override { return leading_.load(); }
  std::string replica_id() const override { return id_; }
  std::string leader_id() const override { return leading_.load() ? id_ : "replica-b"; }

 private:
  std::atomic<bool> leading_;
  const std::string id_;
};

}  // namespace orch::testing
