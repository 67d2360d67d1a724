// tests/support/pg_server.h: a throwaway PostgreSQL server for tests, and a plain SQL connection to poke at it.
//
// A server is initdb'd into a fresh directory under /tmp (short, so that the socket path fits in sun_path), listens
// only on a Unix socket in that directory (listen_addresses = ''), trusts every local connection and runs with
// fsync off. initdb and postgres refuse to run as root, and CI runs as root: then they run as the `postgres` system
// user (Debian's postgresql package creates it), each child switching user between fork() and exec().
//
// One server serves a whole ctest run: the CTest fixture "orch_pg" starts it (`orch_pg_fixture start`, which writes
// the state file $ORCH_TEST_TMP/pg-server.state) before the first test of a *_pg_tests executable (tests/<suite>/pg/),
// and stops it after the last one (`orch_pg_fixture stop`). A test process uses that server when the state file names
// one that answers, and otherwise (a test binary run by hand) starts a private server of its own, stopped when it
// exits. Every test takes a fresh database of its own, so tests run in parallel safely. A fresh database's URL (socket
// directory, user postgres, trust) serves child processes too: pass it as ORCH_DATABASE_URL to `orch` replicas.
// Thread-safe: fresh_database() and test_pg_server() may be called from any thread.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct pg_conn;  // libpq's PGconn

namespace orch::testing {

class PgServer {
 public:
  // initdb + pg_ctl start in a new directory; throws std::runtime_error, with the server's log, when it cannot.
  static std::unique_ptr<PgServer> start();
  // The running server a state file describes, not owned (left running); nullptr unless it answers.
  static std::unique_ptr<PgServer> attach(const std::filesystem::path& state_file);
  // The server a state file describes, owned (stopped and removed on destruction); nullptr without a state file.
  static std::unique_ptr<PgServer> adopt(const std::filesystem::path& state_file);

  ~PgServer();  // drops the databases it created; an owned server is also stopped and its directory removed
  PgServer(const PgServer&) = delete;
  PgServer& operator=(const PgServer&) = delete;

  const std::filesystem::path& socket_dir() const { return root_; }
  // A libpq URL of `database` on this server, for this process and for child processes alike.
  std::string url(const std::string& database) const;
  std::string admin_url() const { return url("postgres"); }
  // CREATE DATABASE under a name no other process or test uses; returns its URL. Throws on failure.
  std::string fresh_database();

  void write_state(const std::filesystem::path& state_file) const;
  void detach() { owned_ = false; }  // leave it running when this object goes (the fixture's start)
  void stop();                       // owned servers only; idempotent

 private:
  PgServer(std::filesystem::path root, std::filesystem::path bin_dir, bool owned);

  std::filesystem::path root_;     // socket directory, data/ and the logs
  std::filesystem::path bin_dir_;  // /usr/lib/postgresql/<version>/bin
  bool owned_;
  std::mutex mu_;
  std::vector<std::string> created_;  // guarded by mu_
};

// $ORCH_TEST_TMP/pg-server.state, or empty when ORCH_TEST_TMP is not set (not under ctest).
std::filesystem::path shared_state_file();
// The server of this test process (see above). Throws when no server can be had: a PG test fails, never skips.
PgServer& test_pg_server();
// A new empty database on test_pg_server(), dropped when the process exits: its URL.
std::string fresh_pg_database();

// A plain libpq connection for tests: pg_terminate_backend, raw SQL, an open transaction held across store calls.
// Throws std::runtime_error on any error. Not thread-safe (one connection).
class PgSql {
 public:
  explicit PgSql(const std::string& url);
  ~PgSql();
  PgSql(const PgSql&) = delete;
  PgSql& operator=(const PgSql&) = delete;

  // Every row, every column as text ("" for NULL); parameters bound as text.
  std::vector<std::vector<std::string>> rows(const std::string& sql, const std::vector<std::string>& params = {});
  // The first column of the first row, "" when there is none.
  std::string value(const std::string& sql, const std::vector<std::string>& params = {});
  void exec(const std::string& sql, const std::vector<std::string>& params = {}) { rows(sql, params); }
  int backend_pid() const;

 private:
  pg_conn* pg_;
};

}  // namespace orch::testing
