// engine/store/pg_connection.cpp: PgConn. With pg_store.cpp and pg_leader.cpp, the only code that includes
// libpq-fe.h.
#include "engine/store/pg_connection.h"

#include <poll.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include "engine/store/pool.h"

namespace orch {
namespace {

// SQLSTATEs that mean "try again later": the connection or the server went away, or the transaction lost a race
// the server resolved by aborting it, or it waited past a timeout.
Code code_of_sqlstate(std::string_view state) {
  if (state.size() != 5) return Code::kInternal;
  const std::string_view cls = state.substr(0, 2);
  if (cls == "08") return Code::kUnavailable;  // connection exception
  if (cls == "53") return Code::kUnavailable;  // insufficient resources: too many connections, out of memory, disk
  if (state == "57P01" || state == "57P02" || state == "57P03") return Code::kUnavailable;  // shutdown, starting up
  if (state == "57014") return Code::kUnavailable;                      // statement timeout (or a cancel)
  if (state == "40001" || state == "40P01") return Code::kUnavailable;  // serialization failure, deadlock
  if (state == "55P03") return Code::kUnavailable;                      // lock_not_available (lock_timeout)
  if (state == "25P03") return Code::kUnavailable;                      // idle-in-transaction timeout
  if (cls == "22") return Code::kInvalid;                               // bad data: invalid UTF-8, out of range
  if (state == "23505") return Code::kConflict;                         // unique violation: someone else won
  return Code::kInternal;
}

[[noreturn]] void throw_error(PGconn* pg, const PGresult* r, const std::string& context) {
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  const char* primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  std::string message = one_line(primary ? primary : PQerrorMessage(pg));
  Code code = state ? code_of_sqlstate(state) : Code::kInternal;
  if (PQstatus(pg) != CONNECTION_OK) code = Code::kUnavailable;  // the connection itself is gone
  std::string text = context + ": " + message;
  if (state) text += std::string(" (SQLSTATE ") + state + ")";
  throw PgError(code, text);
}

// Fails unless `r` is a successful command or query result.
PgResult checked(PGconn* pg, PGresult* raw, const std::string& context) {
  PgResult r(raw);
  const ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw_error(pg, r.get(), context);
  return r;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  throw CorruptRow("bytea value is not hex");
}

// Notices ("relation already exists, skipping" and the like) are not for stderr. A FATAL one means the server is
// closing this connection (pg_terminate_backend, shutdown): the EOF follows, and the connection is not reused.
void on_notice(void* doomed, const PGresult* r) {
  const char* severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (severity && (std::strcmp(severity, "FATAL") == 0 || std::strcmp(severity, "PANIC") == 0))
    *static_cast<bool*>(doomed) = true;
}

PGconn* connect_raw(const std::string& url, const PgStoreOptions& o) {
  const std::string connect_timeout = std::to_string(std::max<long long>(2, o.connect_timeout.count()));
  const std::string idle = std::to_string(std::max<long long>(1, o.keepalives_idle.count()));
  const std::string interval = std::to_string(std::max<long long>(1, o.keepalives_interval.count()));
  const std::string count = std::to_string(std::max(1, o.keepalives_count));
  // Entries before "dbname" are defaults the URL may override; entries after it override the URL.
  const std::string app = o.application_name.empty() ? "orch" : o.application_name;
  const char* keys[] = {"connect_timeout",
                        "keepalives",
                        "keepalives_idle",
                        "keepalives_interval",
                        "keepalives_count",
                        "fallback_application_name",
                        "dbname",
                        "client_encoding",
                        nullptr};
  const char* values[] = {connect_timeout.c_str(),
                          "1",
                          idle.c_str(),
                          interval.c_str(),
                          count.c_str(),
                          app.c_str(),
                          url.c_str(),
                          "UTF8",
                          nullptr};
  return PQconnectdbParams(keys, values, /*expand_dbname=*/1);
}

}  // namespace

std::string one_line(std::string m) {
  for (char& c : m)
    if (c == '\n' || c == '\t') c = ' ';
  while (!m.empty() && m.back() == ' ') m.pop_back();
  std::string out;
  for (char c : m)
    if (c != ' ' || out.empty() || out.back() != ' ') out.push_back(c);
  return out;
}

// ---- rows and parameters ----------------------------------------------------------------------------------------

std::int64_t PgRow::int64(int c) const {
  const char* v = PQgetvalue(r_, i_, c);
  const char* end = v + PQgetlength(r_, i_, c);
  std::int64_t out = 0;
  auto [ptr, ec] = std::from_chars(v, end, out);
  if (ec != std::errc() || ptr != end) throw CorruptRow(std::string("column ") + PQfname(r_, c) + " is not a number");
  return out;
}

std::string PgRow::bytes(int c) const {
  const char* v = PQgetvalue(r_, i_, c);
  const int n = PQgetlength(r_, i_, c);
  if (n < 2 || v[0] != '\\' || v[1] != 'x' || n % 2 != 0) throw CorruptRow("bytea value is not in hex format");
  std::string out;
  out.reserve(static_cast<size_t>(n - 2) / 2);
  for (int k = 2; k < n; k += 2) out.push_back(static_cast<char>(hex_value(v[k]) << 4 | hex_value(v[k + 1])));
  return out;
}

const char* const* PgParams::values() {
  ptrs_.clear();
  for (const auto& v : values_) ptrs_.push_back(v ? v->data() : nullptr);
  return ptrs_.data();
}

void PgParams::add(Bytes b) {
  values_.emplace_back(b.bytes);
  lengths_.push_back(static_cast<int>(b.bytes.size()));
  formats_.push_back(1);
}

void PgParams::text(std::string s) {
  // A text parameter is a C string to libpq, and PostgreSQL's text cannot hold NUL: refuse rather than truncate.
  if (s.find('\0') != std::string::npos) throw PgError(Code::kInvalid, "a text value contains a NUL byte");
  values_.emplace_back(std::move(s));
  lengths_.push_back(0);
  formats_.push_back(0);
}

void PgParams::null() {
  values_.emplace_back(std::nullopt);
  lengths_.push_back(0);
  formats_.push_back(0);
}

// ---- the connection ---------------------------------------------------------------------------------------------

std::unique_ptr<PgConn> PgConn::connect(const std::string& url, const std::string& redacted,
                                        const PgStoreOptions& options) {
  auto conn = std::make_unique<PgConn>(connect_raw(url, options));
  if (!conn->pg) throw PgError(Code::kUnavailable, "cannot connect to " + redacted + ": out of memory");
  if (PQstatus(conn->pg) != CONNECTION_OK) {
    throw PgError(Code::kUnavailable, "cannot connect to " + redacted + ": " + one_line(PQerrorMessage(conn->pg)));
  }
  PQsetNoticeReceiver(conn->pg, on_notice, &conn->doomed);
  conn->query("SELECT set_config('statement_timeout', $1, false), set_config('bytea_output', 'hex', false)",
              PgParams(std::to_string(options.statement_timeout.count())));
  return conn;
}

PgResult PgConn::query(const char* sql, PgParams params) {
  auto it = prepared.find(sql);
  if (it == prepared.end()) {
    std::string name = "orch_" + std::to_string(prepared.size() + 1);
    checked(pg, PQprepare(pg, name.c_str(), sql, params.size(), nullptr), "prepare");
    it = prepared.emplace(sql, std::move(name)).first;
  }
  return checked(pg,
                 PQexecPrepared(pg, it->second.c_str(), params.size(), params.values(), params.lengths(),
                                params.formats(), /*resultFormat=*/0),
                 "query");
}

PgResult PgConn::exec_simple(const char* sql) { return checked(pg, PQexec(pg, sql), "statement"); }

int PgConn::changed(const PgResult& r) {
  const char* n = PQcmdTuples(r.get());
  return n && *n ? std::atoi(n) : 0;
}

bool PgConn::alive() {
  if (doomed || PQstatus(pg) != CONNECTION_OK) return false;
  pollfd p{PQsocket(pg), POLLIN, 0};
  if (p.fd < 0) return false;
  if (::poll(&p, 1, 0) > 0) {
    if (PQconsumeInput(pg) == 0) return false;
    while (PGnotify* n = PQnotifies(pg)) PQfreemem(n);
  }
  return !doomed && PQstatus(pg) == CONNECTION_OK && PQtransactionStatus(pg) == PQTRANS_IDLE;
}

bool PgConn::reusable() const {
  return !doomed && PQstatus(pg) == CONNECTION_OK && PQtransactionStatus(pg) == PQTRANS_IDLE;
}

Status PgConn::failure(const char* what) {
  try {
    throw;
  } catch (const PgError& e) {
    return Status{e.code, std::string("database error (") + what + "): " + e.what()};
  } catch (...) {
    return failure_of_current_exception(what);
  }
}

PgConn::Txn::Txn(PgConn& c, WriteGate::Priority) : c_(c) { c_.exec_simple("BEGIN"); }

PgConn::Txn::~Txn() {
  if (open_) PQclear(PQexec(c_.pg, "ROLLBACK"));  // best effort: a broken connection is discarded anyway
}

void PgConn::Txn::commit() {
  PgResult r = c_.exec_simple("COMMIT");
  open_ = false;
  // COMMIT of a transaction that failed inside reports ROLLBACK instead of an error: never take it for success.
  if (std::strcmp(PQcmdStatus(r.get()), "COMMIT") != 0) throw PgError(Code::kInternal, "the transaction rolled back");
}

}  // namespace orch
