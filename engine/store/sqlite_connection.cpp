// engine/store/sqlite_connection.cpp: SqliteConn. With the rest of engine/store/sqlite_*, the only code that includes
// SQLiteCpp; its exceptions stop here and in ConnectionPool::run(), which turns them into a Status via failure().
#include "engine/store/sqlite_connection.h"

#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "engine/store/pool.h"

namespace orch {

std::string sqlite_parameters(std::string_view sql) {
  std::string out;
  out.reserve(sql.size());
  bool quoted = false;  // inside '...': '' (an escaped quote) toggles twice
  for (size_t i = 0; i < sql.size(); ++i) {
    const char ch = sql[i];
    if (ch == '\'') quoted = !quoted;
    if (!quoted && ch == '$' && i + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i + 1])))
      out.push_back('?');
    else
      out.push_back(ch);
  }
  return out;
}

Status status_of(const char* what, const SQLite::Exception& e) {
  const int primary = e.getErrorCode() & 0xff;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
    return unavailable(std::string("database busy (") + what + "): " + e.what());
  return internal(std::string("database error (") + what + "): " + e.what());
}

SqliteConn::SqliteConn(const std::string& path, std::chrono::milliseconds busy_timeout, int checkpoint_pages,
                       WriteGate& gate)
    : db_(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_NOMUTEX,
          static_cast<int>(busy_timeout.count())),
      gate_(gate) {
  // WAL: readers never block the writer nor it them, and a commit is one append to the log.
  const std::string mode = db_.execAndGet("PRAGMA journal_mode = WAL").getString();
  if (mode != "wal")
    throw std::runtime_error("cannot switch " + db_.getFilename() + " to WAL (journal_mode " + mode + ")");
  db_.exec("PRAGMA foreign_keys = ON");
  // FULL, not WAL's usual NORMAL: a 2xx tells the sender to forget the webhook, so the inbox row must be on disk
  // (WAL fsynced) at every commit; NORMAL may lose the last commits on power loss.
  db_.exec("PRAGMA synchronous = FULL");
  // A constant of this binary or of its caller, not a value from outside: PRAGMA takes no bound parameters.
  db_.exec("PRAGMA wal_autocheckpoint = " + std::to_string(std::max(1, checkpoint_pages)));
}

SqliteConn::Txn::Txn(SqliteConn& c, WriteGate::Priority priority) : hold_(c.gate_.enter(priority)), c_(c) {
  c_.db_.exec("BEGIN IMMEDIATE");
}

SqliteConn::Txn::~Txn() {
  if (open_) c_.db_.tryExec("ROLLBACK");
}

void SqliteConn::Txn::commit() {
  c_.db_.exec("COMMIT");
  open_ = false;
}

bool SqliteConn::reusable() const { return sqlite3_get_autocommit(db_.getHandle()) != 0; }

Status SqliteConn::failure(const char* what) {
  try {
    throw;
  } catch (const SQLite::Exception& e) {
    return status_of(what, e);
  } catch (...) {
    return failure_of_current_exception(what);
  }
}

SQLite::Statement& SqliteConn::statement(const char* sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end())
    it = cache_.emplace(sql, std::make_unique<SQLite::Statement>(db_, sqlite_parameters(sql))).first;
  it->second->tryReset();
  it->second->clearBindings();
  return *it->second;
}

}  // namespace orch
