// engine/store/pg_leader.h: PgLeaderElector, leader election among the replicas sharing one PostgreSQL database: the
// leader is the replica whose session holds a session-level advisory lock on a fixed key. It runs on its own thread,
// from start() until stop(), over a dedicated connection (never one of the store's pool) named "orch:<replica id>".
// is_leader() and leader_id() are thread-safe and cheap; only the owner calls start() and stop().
//
// How it behaves
// - Follower: tries pg_try_advisory_lock every retry_interval, and between tries reads who holds the lock (pg_locks
//   joined with pg_stat_activity on the key: that session's application_name without "orch:") for leader_id().
// - Leader: watches its connection (the socket turning readable with an error or EOF, e.g. pg_terminate_backend or
//   a server restart, is seen at once) and runs `SELECT 1` every health_interval, which must answer within
//   health_timeout. When either fails, is_leader() turns false at that moment, on_change(false) fires, the
//   connection is closed, and the elector reconnects and, after rejoin_holdoff, competes again: the replica whose
//   connection just failed gives the healthy ones the first chance to take over.
// - stop() is prompt in every state (connecting, waiting, in a query): the thread waits on poll() over the socket
//   and an eventfd that stop() signals, never on a sleep. A leader that stops steps down, unlocks (one round trip,
//   at most 500 ms) and closes its session: a follower takes the lock at its next try, within retry_interval.
//
// The bound. A leader whose process or host dies, or whose network is cut, cannot unlock; its session keeps the
// lock until the server notices the peer is gone. The elector sets, on its session, tcp_keepalives_idle =
// takeover_within / 3, tcp_keepalives_interval = takeover_within / 9, tcp_keepalives_count = 3 and
// tcp_user_timeout = 2/3 takeover_within (whole seconds, at least 1 s each; the client side uses the same
// keepalives). So the server drops a dead leader's session within about 2/3 takeover_within, and a follower takes
// over within takeover_within (that plus retry_interval). Over a Unix socket the server ignores these settings:
// there a process death closes the socket and the lock is free at once. The partitioned leader itself steps down
// after at most health_interval + health_timeout, which the defaults (1 s + 1 s against 15 s) keep well below the
// server's bound. A replica that takes the lock waits health_interval + health_timeout (at most a third of
// takeover_within) before it acts as leader: a deposed leader, which notices the loss at its next health check at
// the latest, has stepped down by then, so two replicas never both act as leader (given the same options on both).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "engine/leadership.h"
#include "engine/status.h"

namespace orch {

struct PgLeaderOptions {
  // The bound above: how soon a follower takes over from a leader that died or was cut off.
  std::chrono::milliseconds takeover_within{15000};
  // How often a follower tries the lock; zero: a third of takeover_within.
  std::chrono::milliseconds retry_interval{0};
  // How often a leader checks its connection, and how long the check may take; zero timeout: health_interval.
  std::chrono::milliseconds health_interval{1000};
  std::chrono::milliseconds health_timeout{0};
  // How long after losing the lock this replica waits before competing again; zero: takeover_within.
  std::chrono::milliseconds rejoin_holdoff{0};
  std::chrono::milliseconds connect_timeout{5000};
  // Called on the elector's thread when this replica starts (true) or stops (false) leading. It must not call stop().
  std::function<void(bool leading)> on_change;
  // The advisory lock key every replica of one deployment shares.
  std::int64_t lock_key = 0x6f72636800000001LL;  // 'orch' 1
};

// Who leads right now, read once on a connection of its own (for one-shot readers such as `orch status`, which run
// no elector): the leading replica's id, "" when no replica holds the lock. Blocking, bounded by `timeout` for the
// connection and again for the query.
Result<std::string> read_pg_leader(const std::string& url, std::int64_t lock_key = PgLeaderOptions{}.lock_key,
                                   std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

class PgLeaderElector final : public Leadership {
 public:
  // `url` as for PgStore::open; `replica_id` (ORCH_REPLICA_ID, or host:pid) names this replica in application_name
  // (PostgreSQL keeps 63 bytes of printable ASCII of it: a longer id is cut in leader_id()).
  PgLeaderElector(std::string url, std::string replica_id, PgLeaderOptions options = {});
  ~PgLeaderElector() override;  // stop()
  PgLeaderElector(const PgLeaderElector&) = delete;
  PgLeaderElector& operator=(const PgLeaderElector&) = delete;

  void start();  // idempotent
  void stop();   // idempotent; returns once the thread has ended and the session is closed

  bool is_leader() const override { return leading_.load(std::memory_order_acquire); }
  std::string replica_id() const override { return replica_id_; }
  std::string leader_id() const override;

 private:
  void run();
  void set_leader_id(std::string id);
  void change(bool leading);

  const std::string url_;
  const std::string replica_id_;
  const PgLeaderOptions options_;
  int wake_fd_ = -1;  // eventfd: stop() writes it, the thread polls it

  std::atomic<bool> leading_{false};
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::string leader_id_;    // guarded by mu_
  std::mutex lifecycle_mu_;  // serialises start() and stop()
  std::thread thread_;       // guarded by lifecycle_mu_; last member, so it ends before the others are destroyed
};

}  // namespace orch
