// engine/leadership.h: the Leadership seam. Several replicas may serve one database; only the leader runs the
// reconciler and the sweeper. is_leader() may turn false at any moment (the leader's lock was lost): callers check it
// before each pass and between units of work. Implementations are thread-safe and is_leader() is cheap (an atomic).
#pragma once

#include <string>

namespace orch {

struct Leadership {
  virtual ~Leadership() = default;
  virtual bool is_leader() const = 0;
  virtual std::string replica_id() const = 0;  // this replica (ORCH_REPLICA_ID, or host:pid)
  virtual std::string leader_id() const = 0;   // the replica that leads now as last seen; "" when none is known
  // The election's own thread, if it has one: the app starts it before the reconciler and stops it after.
  virtual void start() {}
  virtual void stop() {}
};

// The embedded SQLite store serves one node: it always leads.
class SoleReplica final : public Leadership {
 public:
  explicit SoleReplica(std::string id) : id_(std::move(id)) {}
  bool is_leader() const override { return true; }
  std::string replica_id() const override { return id_; }
  std::string leader_id() const override { return id_; }

 private:
  const std::string id_;
};

// A one-shot reader's view (the CLI runs no elector): the leader as read once, and never itself the leader.
class ObservedLeadership final : public Leadership {
 public:
  ObservedLeadership(std::string replica_id, std::string leader_id)
      : replica_id_(std::move(replica_id)), leader_id_(std::move(leader_id)) {}
  bool is_leader() const override { return false; }
  std::string replica_id() const override { return replica_id_; }
  std::string leader_id() const override { return leader_id_; }

 private:
  const std::string replica_id_, leader_id_;
};

}  // namespace orch
