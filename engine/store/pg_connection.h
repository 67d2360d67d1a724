// engine/store/pg_connection.h: PgConn, one libpq connection of PgStore's pool, with its prepared statements,
// parameters, row access and write transaction (what ConnectionPool and SqlStore need of a connection;
// engine/store/pool.h). Every failure is thrown as PgError, which failure() turns into the Status the caller sees: a
// lost connection, a server shutting down, a serialization failure, a deadlock, a lock or statement timeout are
// kUnavailable, anything else kInternal. Only engine/store/pg_* include this, and with it libpq-fe.h.
// Not thread-safe: the pool hands a connection to one thread at a time.
#pragma once

#include <libpq-fe.h>

#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/clock.h"
#include "engine/status.h"
#include "engine/store/pg_store.h"
#include "engine/store/rows.h"
#include "engine/write_gate.h"

namespace orch {

// What every failure of a PostgreSQL call is thrown as.
struct PgError : std::runtime_error {
  PgError(Code c, const std::string& message) : std::runtime_error(message), code(c) {}
  Code code;
};

// libpq's messages end in a newline and may span lines ("server closed the connection unexpectedly\n\tThis
// probably means..."): one line for the log.
std::string one_line(std::string m);

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

// One row of a text-format result, for the readers of engine/store/rows.h.
class PgRow {
 public:
  PgRow(const PGresult* r, int i) : r_(r), i_(i) {}
  bool null(int c) const { return PQgetisnull(r_, i_, c) != 0; }
  std::string text(int c) const { return std::string(PQgetvalue(r_, i_, c), PQgetlength(r_, i_, c)); }
  std::int64_t int64(int c) const;
  bool boolean(int c) const { return PQgetvalue(r_, i_, c)[0] == 't'; }
  // BYTEA in a text result: "\x" and two hex digits per byte (bytea_output = hex, set on every connection).
  std::string bytes(int c) const;
  const char* name(int c) const { return PQfname(r_, c); }

 private:
  const PGresult* r_;
  int i_;
};

// Bound parameters: text format, except Bytes (BYTEA), which travel in binary format, byte for byte.
class PgParams {
 public:
  template <class... A>
  explicit PgParams(const A&... args) {
    values_.reserve(sizeof...(A));
    (add(args), ...);
  }
  int size() const { return static_cast<int>(values_.size()); }
  const char* const* values();
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  void add(bool v) { text(v ? "true" : "false"); }
  template <std::integral I>
  void add(I v) {
    text(std::to_string(v));
  }
  void add(TimePoint t) { text(std::to_string(to_millis(t))); }
  void add(const std::string& s) { text(s); }
  void add(const char* s) { text(s); }
  void add(std::string_view s) { text(std::string(s)); }
  void add(Bytes b);
  void add(std::nullopt_t) { null(); }
  template <class T>
  void add(const std::optional<T>& v) {
    if (v)
      add(*v);
    else
      null();
  }
  void text(std::string s);
  void null();

  std::vector<std::optional<std::string>> values_;
  std::vector<const char*> ptrs_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

class PgConn {
 public:
  explicit PgConn(PGconn* p) : pg(p) {}
  ~PgConn() { PQfinish(pg); }
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  // Connects to `url` with the options' timeouts and keepalives; `redacted` is what messages name. Throws PgError.
  static std::unique_ptr<PgConn> connect(const std::string& url, const std::string& redacted,
                                         const PgStoreOptions& options);

  // BEGIN ... COMMIT, rolled back unless committed. READ COMMITTED: each statement sees what committed before it.
  // The priority is SQLite's (its in-process write gate); PostgreSQL's writers meet at row locks instead.
  class Txn {
   public:
    explicit Txn(PgConn& c, WriteGate::Priority = WriteGate::Priority::kNormal);
    ~Txn();
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    void commit();

   private:
    PgConn& c_;
    bool open_ = true;
  };

  // Whether an idle connection still works: a server that hung up (terminated backend, shutdown) left a message
  // or an EOF on the socket, which a zero-timeout poll finds without a round trip.
  bool alive();
  // A broken connection, or one still inside a transaction (a failed ROLLBACK), is not handed to the next caller.
  bool reusable() const;
  static Status failure(const char* what);

  // Runs `sql` with `params` as a prepared statement of this connection (prepared on first use).
  PgResult query(const char* sql, PgParams params = PgParams());
  // Runs SQL without parameters (BEGIN, COMMIT, the migrations): the simple protocol, several statements allowed.
  PgResult exec_simple(const char* sql);

  // `sql` with `args` bound in order ($1, $2, ...): the first row read by `read`, or nullopt.
  template <class F, class... A>
  auto one(const char* sql, F read, const A&... args) -> std::optional<decltype(read(std::declval<const PgRow&>()))> {
    PgResult r = query(sql, PgParams(args...));
    if (PQntuples(r.get()) == 0) return std::nullopt;
    return read(PgRow(r.get(), 0));
  }
  template <class F, class... A>
  auto all(const char* sql, F read, const A&... args) -> std::vector<decltype(read(std::declval<const PgRow&>()))> {
    return rows_of(query(sql, PgParams(args...)), read);
  }
  // Runs a statement that returns no rows; the number of rows it changed.
  template <class... A>
  int exec(const char* sql, const A&... args) {
    return changed(query(sql, PgParams(args...)));
  }

  template <class F>
  static auto rows_of(const PgResult& r, F read) -> std::vector<decltype(read(std::declval<const PgRow&>()))> {
    std::vector<decltype(read(std::declval<const PgRow&>()))> rows;
    const int n = PQntuples(r.get());
    rows.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) rows.push_back(read(PgRow(r.get(), i)));
    return rows;
  }
  static int changed(const PgResult& r);

  PGconn* pg;
  bool doomed = false;  // set when the server announced it closes this session (a FATAL notice)
  std::unordered_map<std::string, std::string> prepared;  // sql -> statement name
};

}  // namespace orch
