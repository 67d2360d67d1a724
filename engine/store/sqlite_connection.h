// engine/store/sqlite_connection.h: SqliteConn, one SQLite connection of SqliteStore's pool, with its prepared-
// statement cache, parameter binding, row access and write transaction (what ConnectionPool and SqlStore need of a
// connection; engine/store/pool.h). Only the files of engine/store/ that implement the SQLite store include this, and
// with it SQLiteCpp. Not thread-safe: the pool hands a connection to one thread at a time.
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/clock.h"
#include "engine/status.h"
#include "engine/store/rows.h"
#include "engine/write_gate.h"

namespace orch {

// SQL written for both dialects numbers its parameters PostgreSQL's way ($1, $2, ...). SQLite would read "$1" as a
// *named* parameter, numbered in order of first appearance, so this turns each into ?1, ?2, ... (outside quoted
// text); everything else is left as it is. Done once per statement and connection, when it is prepared.
std::string sqlite_parameters(std::string_view sql);

// SQLITE_BUSY / SQLITE_LOCKED are kUnavailable (retry later), anything else kInternal.
Status status_of(const char* what, const SQLite::Exception& e);

// One row of a result, for the readers of engine/store/rows.h.
class SqliteRow {
 public:
  explicit SqliteRow(const SQLite::Statement& s) : s_(s) {}
  bool null(int c) const { return s_.getColumn(c).isNull(); }
  std::string text(int c) const { return s_.getColumn(c).getString(); }
  std::int64_t int64(int c) const { return s_.getColumn(c).getInt64(); }
  bool boolean(int c) const { return int64(c) != 0; }
  std::string bytes(int c) const { return text(c); }  // getString() reads the bytes with their length: BLOBs too
  const char* name(int c) const { return s_.getColumnName(c); }

 private:
  const SQLite::Statement& s_;
};

class SqliteConn {
 public:
  // Opens (creating) the file with this busy timeout and configures it: WAL, foreign keys, synchronous = FULL,
  // wal_autocheckpoint = checkpoint_pages. Its writers queue on `gate` (the store's) before they reach the file
  // lock. Throws SQLite::Exception.
  SqliteConn(const std::string& path, std::chrono::milliseconds busy_timeout, int checkpoint_pages, WriteGate& gate);

  // BEGIN IMMEDIATE ... COMMIT, rolled back unless committed: a writer takes the file's write lock up front, so two
  // processes never deadlock on a read-to-write upgrade. Holds this process's write gate throughout.
  class Txn {
   public:
    explicit Txn(SqliteConn& c, WriteGate::Priority priority = WriteGate::Priority::kNormal);
    ~Txn();
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    void commit();

   private:
    WriteGate::Hold hold_;  // first member: taken before BEGIN, released after ROLLBACK
    SqliteConn& c_;
    bool open_ = true;
  };

  bool alive() { return true; }  // a file does not hang up
  // A connection still inside a transaction (a failed ROLLBACK) is not handed to the next caller.
  bool reusable() const;
  static Status failure(const char* what);

  // Runs `sql` with `args` bound in order ($1, $2, ...): the first row read by `read`, or nullopt. The statement is
  // reset before this returns (for RETURNING, all changes are made by the first step), so no read snapshot stays open.
  template <class F, class... A>
  auto one(const char* sql, F read, const A&... args)
      -> std::optional<decltype(read(std::declval<const SqliteRow&>()))> {
    Stmt s(*this, sql, args...);
    if (!s->executeStep()) return std::nullopt;
    auto row = read(SqliteRow(*s));
    s->reset();  // throws what finishing the statement reports
    return row;
  }
  template <class F, class... A>
  auto all(const char* sql, F read, const A&... args) -> std::vector<decltype(read(std::declval<const SqliteRow&>()))> {
    Stmt s(*this, sql, args...);
    std::vector<decltype(read(std::declval<const SqliteRow&>()))> rows;
    while (s->executeStep()) rows.push_back(read(SqliteRow(*s)));
    return rows;
  }
  // Runs a statement that returns no rows; the number of rows it changed.
  template <class... A>
  int exec(const char* sql, const A&... args) {
    Stmt s(*this, sql, args...);
    return s->exec();
  }

  SQLite::Database& db() { return db_; }

 private:
  // A cached statement in use, bound; reset when the scope ends.
  class Stmt {
   public:
    template <class... A>
    Stmt(SqliteConn& c, const char* sql, const A&... args) : s_(c.statement(sql)) {
      int i = 0;
      (bind(++i, args), ...);
    }
    ~Stmt() { s_.tryReset(); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;
    SQLite::Statement* operator->() { return &s_; }
    SQLite::Statement& operator*() { return s_; }

   private:
    void bind(int i, int v) { s_.bind(i, static_cast<std::int32_t>(v)); }
    void bind(int i, long v) { s_.bind(i, static_cast<std::int64_t>(v)); }
    void bind(int i, long long v) { s_.bind(i, static_cast<std::int64_t>(v)); }
    void bind(int i, bool v) { s_.bind(i, static_cast<std::int32_t>(v ? 1 : 0)); }
    void bind(int i, TimePoint t) { s_.bind(i, static_cast<std::int64_t>(to_millis(t))); }
    void bind(int i, const std::string& v) { s_.bind(i, v); }
    void bind(int i, const char* v) { s_.bind(i, v); }
    void bind(int i, std::string_view v) { s_.bind(i, std::string(v)); }
    void bind(int i, Bytes v) {
      s_.bind(i, static_cast<const void*>(v.bytes.data()), static_cast<int>(v.bytes.size()));
    }
    template <class T>
    void bind(int i, const std::optional<T>& v) {
      if (v)
        bind(i, *v);
      else
        s_.bind(i);  // NULL
    }
    SQLite::Statement& s_;
  };

  // The cached statement for `sql`, reset and with its bindings cleared. Keyed by text: every caller passes a
  // literal, so the cache stays as small as the set of statements the store contains.
  SQLite::Statement& statement(const char* sql);

  SQLite::Database db_;  // NOMUTEX: the pool gives a connection to one thread at a time
  WriteGate& gate_;
  std::unordered_map<std::string, std::unique_ptr<SQLite::Statement>> cache_;  // declared after db_: finalized first
};

}  // namespace orch
