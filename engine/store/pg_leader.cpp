// engine/store/pg_leader.cpp: PgLeaderElector. With pg_connection.cpp and pg_store.cpp, the only code that includes
// libpq-fe.h.
//
// DESIGN
// All I/O on the elector's connection is asynchronous libpq (PQconnectStartParams / PQconnectPoll,
// PQsendQueryParams / PQconsumeInput / PQgetResult, in non-blocking mode), driven by poll() over the connection's
// socket and the eventfd that stop() writes. So every wait has a deadline of our choosing (a partitioned server
// cannot hang the thread in a blocking call for the kernel's TCP timeout), and stop() interrupts any of them.
// The eventfd is never drained while stopping: once written, every later wait returns at once.
#include "engine/store/pg_leader.h"

#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "engine/thread_name.h"

namespace orch {
namespace {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::string_view kAppPrefix = "orch:";

// Who holds the advisory lock on a 64-bit key in this database: pg_locks shows the key's high half as classid, its
// low half as objid, and objsubid 1 for the one-bigint form.
constexpr const char* kHolderSql =
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = $1::oid AND l.objid = $2::oid "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1";

enum class Io { kReady, kTimeout, kStopped, kBroken };

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

// Waits for `events` on `sock` (none when sock < 0) or for the wake fd, until `deadline`.
Io wait_for(int sock, short events, int wake_fd, SteadyClock::time_point deadline) {
  while (true) {
    const auto left = std::chrono::ceil<milliseconds>(deadline - SteadyClock::now());
    const int timeout = static_cast<int>(std::clamp<long long>(left.count(), 0, INT_MAX));
    pollfd fds[2] = {{wake_fd, POLLIN, 0}, {sock, events, 0}};
    const int n = ::poll(fds, sock >= 0 ? 2 : 1, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Io::kBroken;
    }
    if (fds[0].revents != 0) return Io::kStopped;
    if (n > 0 && sock >= 0 && fds[1].revents != 0) return Io::kReady;  // POLLERR / POLLHUP: the caller reads the EOF
    if (SteadyClock::now() >= deadline) return Io::kTimeout;
  }
}

// Keepalive settings derived from takeover_within (see the header): whole seconds, at least one each.
struct Keepalives {
  long long idle_s, interval_s, count, user_timeout_ms;
};
Keepalives keepalives_for(milliseconds takeover) {
  const long long t = std::max<long long>(takeover.count(), 0);
  Keepalives k{};
  k.idle_s = std::max<long long>(1, t / 3000);
  k.interval_s = std::max<long long>(1, t / 9000);
  k.count = 3;
  k.user_timeout_ms = std::max<long long>(1000, (k.idle_s + k.interval_s * k.count) * 1000);
  return k;
}

// One connection of the elector, in non-blocking mode.
struct Session {
  Session() = default;
  ~Session() {
    if (pg) PQfinish(pg);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  PGconn* pg = nullptr;
  bool doomed = false;  // the server sent a FATAL message (e.g. pg_terminate_backend): the EOF follows
};

void on_notice(void* arg, const PGresult* r) {
  const char* severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (severity && (std::strcmp(severity, "FATAL") == 0 || std::strcmp(severity, "PANIC") == 0))
    *static_cast<bool*>(arg) = true;
}

// Reads what the server sent; false when the connection is gone.
bool consume(PGconn* pg, const bool& doomed) {
  if (PQconsumeInput(pg) == 0) return false;
  while (PGnotify* n = PQnotifies(pg)) PQfreemem(n);
  return PQstatus(pg) == CONNECTION_OK && !doomed;
}

// Runs one statement; nullopt with *why when the connection failed, the statement failed, `deadline` passed or stop
// was requested. A failed statement counts as a failed connection: the elector then starts over on a new one.
std::optional<PgResult> query(Session& s, const char* sql, const std::vector<std::string>& params, int wake_fd,
                              SteadyClock::time_point deadline, Io* why) {
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  *why = Io::kBroken;
  if (!PQsendQueryParams(s.pg, sql, static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0))
    return std::nullopt;
  while (true) {
    const int flushed = PQflush(s.pg);
    if (flushed == 0) break;
    if (flushed < 0) return std::nullopt;
    const Io io = wait_for(PQsocket(s.pg), POLLIN | POLLOUT, wake_fd, deadline);
    if (io != Io::kReady) {
      *why = io;
      return std::nullopt;
    }
    if (!consume(s.pg, s.doomed)) return std::nullopt;
  }
  PgResult last;
  while (true) {
    if (!consume(s.pg, s.doomed)) return std::nullopt;
    while (!PQisBusy(s.pg)) {
      PGresult* r = PQgetResult(s.pg);
      if (!r) {
        if (!last || PQresultStatus(last.get()) != PGRES_TUPLES_OK) return std::nullopt;
        *why = Io::kReady;
        return last;
      }
      last.reset(r);
    }
    const Io io = wait_for(PQsocket(s.pg), POLLIN, wake_fd, deadline);
    if (io != Io::kReady) {
      *why = io;
      return std::nullopt;
    }
  }
}

// Waits until `deadline` with the connection watched: kTimeout when the whole wait passed and it is still healthy.
Io watch(Session& s, int wake_fd, SteadyClock::time_point deadline) {
  while (true) {
    const Io io = wait_for(PQsocket(s.pg), POLLIN, wake_fd, deadline);
    if (io != Io::kReady) return io;
    if (!consume(s.pg, s.doomed)) return Io::kBroken;
  }
}

std::string first_value(const PgResult& r) {
  if (PQntuples(r.get()) == 0 || PQgetisnull(r.get(), 0, 0)) return "";
  return std::string(PQgetvalue(r.get(), 0, 0), PQgetlength(r.get(), 0, 0));
}

// kHolderSql's parameters for a 64-bit lock key: its high and low halves.
std::vector<std::string> holder_params(std::int64_t lock_key) {
  const auto key = static_cast<std::uint64_t>(lock_key);
  return {std::to_string(key >> 32), std::to_string(key & 0xffffffffULL)};
}

// The replica id in kHolderSql's answer (the holder's application_name less "orch:"); "" when nobody holds the lock.
std::string holder_id(const PgResult& r) {
  std::string id = first_value(r);
  if (id.rfind(kAppPrefix, 0) == 0) id.erase(0, kAppPrefix.size());
  return id;
}

// libpq's connect_timeout: whole seconds, and at least 2 (libpq treats 1 as 2).
std::string connect_timeout_seconds(milliseconds timeout) {
  return std::to_string(std::max<long long>(2, std::chrono::ceil<std::chrono::seconds>(timeout).count()));
}

}  // namespace

PgLeaderElector::PgLeaderElector(std::string url, std::string replica_id, PgLeaderOptions options)
    : url_(std::move(url)), replica_id_(std::move(replica_id)), options_(std::move(options)) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::runtime_error(std::string("pg leader: eventfd: ") + std::strerror(errno));
}

PgLeaderElector::~PgLeaderElector() {
  stop();
  ::close(wake_fd_);
}

void PgLeaderElector::start() {
  std::lock_guard lock(lifecycle_mu_);
  if (thread_.joinable()) return;
  std::uint64_t drained = 0;
  while (::read(wake_fd_, &drained, sizeof drained) > 0) {
  }
  stopping_.store(false);
  thread_ = std::thread([this] { run(); });
}

void PgLeaderElector::stop() {
  std::lock_guard lock(lifecycle_mu_);
  if (!thread_.joinable()) return;
  stopping_.store(true);
  const std::uint64_t one = 1;
  while (::write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
  thread_.join();
}

std::string PgLeaderElector::leader_id() const {
  std::lock_guard lock(mu_);
  return leader_id_;
}

void PgLeaderElector::set_leader_id(std::string id) {
  std::lock_guard lock(mu_);
  leader_id_ = std::move(id);
}

void PgLeaderElector::change(bool leading) {
  leading_.store(leading, std::memory_order_release);
  set_leader_id(leading ? replica_id_ : std::string());
  if (options_.on_change) options_.on_change(leading);
}

void PgLeaderElector::run() {
  name_this_thread("pg-leader");
  const milliseconds retry = options_.retry_interval.count() > 0
                                 ? options_.retry_interval
                                 : std::max(milliseconds(1), options_.takeover_within / 3);
  const milliseconds health = std::max(milliseconds(1), options_.health_interval);
  const milliseconds health_timeout = options_.health_timeout.count() > 0 ? options_.health_timeout : health;
  const milliseconds holdoff = options_.rejoin_holdoff.count() > 0 ? options_.rejoin_holdoff : options_.takeover_within;
  // How long a leader that lost its lock may go on believing it leads: until its next health check fails.
  const milliseconds settle = std::min(health + health_timeout, options_.takeover_within / 3);
  const Keepalives ka = keepalives_for(options_.takeover_within);
  const std::vector<std::string> lock_params{std::to_string(options_.lock_key)};
  const std::vector<std::string> holder_query_params = holder_params(options_.lock_key);
  const std::vector<std::string> session_params{std::to_string(health_timeout.count()), std::to_string(ka.idle_s),
                                                std::to_string(ka.interval_s), std::to_string(ka.count),
                                                std::to_string(ka.user_timeout_ms)};
  std::string app_name = std::string(kAppPrefix) + replica_id_;
  for (char& ch : app_name)
    if (static_cast<unsigned char>(ch) < 32 || static_cast<unsigned char>(ch) > 126) ch = '?';

  const std::string connect_timeout_s = connect_timeout_seconds(options_.connect_timeout);
  const std::string idle_s = std::to_string(ka.idle_s), interval_s = std::to_string(ka.interval_s),
                    count = std::to_string(ka.count), user_timeout = std::to_string(ka.user_timeout_ms);
  // Entries before "dbname" are defaults the URL may override; application_name after it always wins.
  const char* keys[] = {"connect_timeout",  "keepalives", "keepalives_idle",  "keepalives_interval", "keepalives_count",
                        "tcp_user_timeout", "dbname",     "application_name", "client_encoding",     nullptr};
  const char* values[] = {connect_timeout_s.c_str(),
                          "1",
                          idle_s.c_str(),
                          interval_s.c_str(),
                          count.c_str(),
                          user_timeout.c_str(),
                          url_.c_str(),
                          app_name.c_str(),
                          "UTF8",
                          nullptr};

  std::unique_ptr<Session> session;
  SteadyClock::time_point compete_after = SteadyClock::now();
  bool backoff = false;  // the last attempt failed: wait one retry_interval before the next connection

  // The connection failed (or a statement on it did): step down first, then close it.
  auto drop = [&] {
    if (leading_.load()) {
      change(false);
      compete_after = SteadyClock::now() + holdoff;
    } else {
      set_leader_id("");
    }
    session.reset();
    backoff = true;
  };

  while (!stopping_.load()) {
    if (backoff) {
      backoff = false;
      if (wait_for(-1, 0, wake_fd_, SteadyClock::now() + retry) == Io::kStopped) break;
    }
    if (!session) {
      auto s = std::make_unique<Session>();
      s->pg = PQconnectStartParams(keys, values, /*expand_dbname=*/1);
      if (!s->pg || PQstatus(s->pg) == CONNECTION_BAD) {
        backoff = true;
        continue;
      }
      PQsetNoticeReceiver(s->pg, on_notice, &s->doomed);
      const auto deadline = SteadyClock::now() + options_.connect_timeout;
      PostgresPollingStatusType st = PGRES_POLLING_WRITING;
      Io io = Io::kReady;
      while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        io = wait_for(PQsocket(s->pg), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, wake_fd_, deadline);
        if (io != Io::kReady) break;
        st = PQconnectPoll(s->pg);
      }
      if (io == Io::kStopped) break;
      if (st != PGRES_POLLING_OK || PQsetnonblocking(s->pg, 1) != 0) {
        backoff = true;
        continue;
      }
      if (!query(*s,
                 "SELECT set_config('statement_timeout', $1, false), set_config('tcp_keepalives_idle', $2, false), "
                 "set_config('tcp_keepalives_interval', $3, false), set_config('tcp_keepalives_count', $4, false), "
                 "set_config('tcp_user_timeout', $5, false)",
                 session_params, wake_fd_, SteadyClock::now() + health_timeout, &io)) {
        if (io == Io::kStopped) break;
        backoff = true;
        continue;
      }
      session = std::move(s);
    }

    Io io = Io::kReady;
    if (leading_.load()) {
      io = watch(*session, wake_fd_, SteadyClock::now() + health);
      if (io == Io::kStopped) break;
      if (io == Io::kBroken) {
        drop();
        continue;
      }
      if (!query(*session, "SELECT 1", {}, wake_fd_, SteadyClock::now() + health_timeout, &io)) {
        if (io == Io::kStopped) break;
        drop();
      }
      continue;
    }

    if (SteadyClock::now() >= compete_after) {
      std::optional<PgResult> got = query(*session, "SELECT pg_try_advisory_lock($1::bigint)", lock_params, wake_fd_,
                                          SteadyClock::now() + health_timeout, &io);
      if (!got) {
        if (io == Io::kStopped) break;
        drop();
        continue;
      }
      if (first_value(*got) == "t") {
        // The lock is ours, but a deposed leader may not know yet that it lost it (its session was ended by the
        // server; it learns at its next health check at the latest). Hold the lock without acting for that long,
        // watching our own connection, so that two replicas never act as leader at once.
        io = watch(*session, wake_fd_, SteadyClock::now() + settle);
        if (io == Io::kStopped) break;
        if (io == Io::kBroken) {
          drop();
          continue;
        }
        change(true);
        continue;
      }
    }
    std::optional<PgResult> holder =
        query(*session, kHolderSql, holder_query_params, wake_fd_, SteadyClock::now() + health_timeout, &io);
    if (!holder) {
      if (io == Io::kStopped) break;
      drop();
      continue;
    }
    set_leader_id(holder_id(*holder));
    io = watch(*session, wake_fd_, SteadyClock::now() + retry);
    if (io == Io::kStopped) break;
    if (io == Io::kBroken) drop();
  }
  // Step down before the lock is freed: never two replicas that both believe they lead. Then unlock explicitly (a
  // closed session frees its locks only once the server has processed the goodbye) so that a follower's next try
  // succeeds; this one round trip ignores the wake fd, and is bounded.
  if (leading_.load()) {
    change(false);
    if (session) {
      Io io = Io::kReady;
      query(*session, "SELECT pg_advisory_unlock($1::bigint)", lock_params, /*wake_fd=*/-1,
            SteadyClock::now() + std::min(health_timeout, milliseconds(500)), &io);
    }
  }
  session.reset();
  set_leader_id("");
}

Result<std::string> read_pg_leader(const std::string& url, std::int64_t lock_key, std::chrono::milliseconds timeout) {
  const std::string connect_timeout_s = connect_timeout_seconds(timeout);
  const std::string options = "-c statement_timeout=" + std::to_string(std::max<long long>(1, timeout.count()));
  // Not named "orch:<id>": this session is nobody's claim or lead. Entries before "dbname" are defaults.
  const char* keys[] = {"connect_timeout", "options", "dbname", "application_name", "client_encoding", nullptr};
  const char* values[] = {connect_timeout_s.c_str(), options.c_str(), url.c_str(), "orch-cli", "UTF8", nullptr};
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn(PQconnectdbParams(keys, values, 1), PQfinish);
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK)
    return unavailable(std::string("cannot connect to read the leader: ") +
                       (conn ? PQerrorMessage(conn.get()) : "out of memory"));
  const std::vector<std::string> halves = holder_params(lock_key);
  const char* params[] = {halves[0].c_str(), halves[1].c_str()};
  PgResult r(PQexecParams(conn.get(), kHolderSql, 2, nullptr, params, nullptr, nullptr, 0));
  if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK)
    return unavailable(std::string("cannot read the leader: ") + PQerrorMessage(conn.get()));
  return holder_id(r);
}

}  // namespace orch
