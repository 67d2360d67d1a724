// engine/store/pool.h: ConnectionPool<Conn>, the connection pool both SQL stores run every call on: one connection per
// concurrent caller, opened on demand up to max_connections (callers beyond wait for a free one), and run() / write()
// that turn every exception into a Status, so that none escapes a store. Thread-safe.
//
// What a Conn provides (engine/store/sqlite_connection.h, pg_connection.h):
//   bool alive();                            an idle connection still works (checked before it is handed out again)
//   bool reusable() const;                   fit for the next caller: not broken, not left inside a transaction
//   static Status failure(const char* what); inside a catch block: the Status of the exception being handled
//   class Txn { Txn(Conn&, args...); void commit(); };   one write transaction, rolled back unless committed
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "engine/status.h"

namespace orch {

// Inside a catch block: the exception being handled as kInternal, naming the operation. A Conn's failure() calls it
// for whatever is not its own library's exception.
inline Status failure_of_current_exception(const char* what) {
  try {
    throw;
  } catch (const std::exception& e) {
    return internal(std::string(what) + ": " + e.what());
  } catch (...) {
    return internal(std::string(what) + ": unknown exception");
  }
}

template <class Conn>
class ConnectionPool {
 public:
  using Opener = std::function<std::unique_ptr<Conn>()>;  // throws when no connection can be opened

  ConnectionPool(int max_connections, Opener open) : max_connections_(max_connections), open_(std::move(open)) {}
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // RAII: a pooled connection, handed back (or, when not reusable, closed) on destruction.
  class Lease {
   public:
    Lease(ConnectionPool& pool, std::unique_ptr<Conn> conn) : pool_(pool), conn_(std::move(conn)) {}
    ~Lease() { pool_.release(std::move(conn_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Conn& conn() { return *conn_; }

   private:
    ConnectionPool& pool_;
    std::unique_ptr<Conn> conn_;
  };

  // An idle connection that is still alive, or a new one. Throws when a new connection cannot be opened.
  Lease acquire() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return !idle_.empty() || open_connections_ < max_connections_; });
      if (idle_.empty()) break;
      std::unique_ptr<Conn> conn = std::move(idle_.back());
      idle_.pop_back();
      lock.unlock();
      if (conn->alive()) return Lease(*this, std::move(conn));
      conn.reset();  // its server hung up while it sat in the pool: close it and look again
      lock.lock();
      --open_connections_;
    }
    ++open_connections_;
    lock.unlock();  // opening takes a file open or a round trip: do not hold up the other callers
    try {
      return Lease(*this, open_());
    } catch (...) {
      {
        std::lock_guard relock(mu_);
        --open_connections_;
      }
      cv_.notify_one();
      throw;
    }
  }

  // A connection opened outside acquire() (the one open() migrated with) joins the pool.
  void adopt(std::unique_ptr<Conn> conn) {
    {
      std::lock_guard lock(mu_);
      ++open_connections_;
    }
    release(std::move(conn));
  }

  // Runs fn(Conn&) on a pooled connection, turning every exception into a Status (`what` names the operation).
  template <class Fn>
  auto run(const char* what, Fn&& fn) {
    using R = decltype(fn(std::declval<Conn&>()));
    try {
      Lease lease = acquire();
      return fn(lease.conn());
    } catch (...) {
      return R(Conn::failure(what));
    }
  }

  // run() inside one Conn::Txn (constructed with txn_args); commits when fn's result is ok, rolls back otherwise.
  template <class Fn, class... TxnArgs>
  auto write(const char* what, Fn&& fn, const TxnArgs&... txn_args) {
    return run(what, [&](Conn& c) {
      typename Conn::Txn txn(c, txn_args...);
      auto result = fn(c);
      if (result.ok()) txn.commit();
      return result;
    });
  }

 private:
  void release(std::unique_ptr<Conn> conn) {
    if (!conn) return;
    const bool reusable = conn->reusable();
    if (!reusable) conn.reset();
    {
      std::lock_guard lock(mu_);
      if (reusable)
        idle_.push_back(std::move(conn));
      else
        --open_connections_;
    }
    cv_.notify_one();
  }

  const int max_connections_;
  const Opener open_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Conn>> idle_;  // guarded by mu_
  int open_connections_ = 0;                 // guarded by mu_: idle plus leased
};

}  // namespace orch
