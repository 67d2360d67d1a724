// engine/write_gate.h: the SQLite store's one-writer-at-a-time gate, which lets acknowledging writes go first.
//
// SQLite has one write lock and each commit costs an fsync. Under a burst of webhooks the group committer (whose
// transactions are what senders wait for) shared it turn for turn with the inbox processor's claim and finish, which
// halved ingest (measured in bench/RESULTS.md). The gate serves kAcknowledge writers before kNormal ones, and after an
// acknowledging write it keeps the gate for the committer's next batch for up to `anticipation` (it is back within
// microseconds while requests keep arriving). A kNormal writer is never held back longer than `max_yield` past its
// arrival: then it goes next, before any acknowledging writer (handling slows under a burst, it never stops). A kNext
// writer goes in as soon as the holder leaves, before anyone waiting: for a write short enough to run between two
// commits of the committer (the checkpointer's last phase, which must see no writer begin).
// docs/adr/0008-acknowledging-writes-go-first.md.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace orch {

class WriteGate {
 public:
  enum class Priority { kNormal, kAcknowledge, kNext };
  struct Timing {
    std::chrono::microseconds anticipation{2000};
    std::chrono::microseconds max_yield{20000};
  };

  explicit WriteGate(Timing timing) : timing_(timing) {}
  WriteGate(const WriteGate&) = delete;
  WriteGate& operator=(const WriteGate&) = delete;

  // Held from enter() until destroyed; movable, not copyable.
  class Hold {
   public:
    Hold(Hold&& other) noexcept : gate_(other.gate_), priority_(other.priority_) { other.gate_ = nullptr; }
    Hold& operator=(Hold&&) = delete;
    ~Hold() {
      if (gate_) gate_->leave(priority_);
    }

   private:
    friend class WriteGate;
    Hold(WriteGate* gate, Priority priority) : gate_(gate), priority_(priority) {}
    WriteGate* gate_;
    Priority priority_;
  };

  // Blocks until this writer's turn.
  [[nodiscard]] Hold enter(Priority priority);

  // Writers waiting to enter (for tests that need to know a thread is queued before they let it in).
  int waiting() const;

 private:
  using SteadyClock = std::chrono::steady_clock;
  void leave(Priority priority);

  const Timing timing_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;                         // guarded by mu_
  int acknowledging_waiting_ = 0;             // guarded by mu_
  int normal_waiting_ = 0;                    // guarded by mu_
  int next_waiting_ = 0;                      // guarded by mu_
  int overdue_waiting_ = 0;                   // guarded by mu_: kNext writers, and kNormal ones past max_yield;
                                              // they go before anyone
  SteadyClock::time_point reserved_until_{};  // guarded by mu_: after an acknowledging write, for the next one
};

}  // namespace orch
