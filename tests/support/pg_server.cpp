#include "tests/support/pg_server.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <stdexcept>

#include "tests/support/temp_dir.h"

extern char** environ;

namespace orch::testing {
namespace {

namespace fs = std::filesystem;

// Who runs initdb and postgres: this process, or the postgres system user when this process is root.
struct RunAs {
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

RunAs server_user() {
  RunAs as;
  if (::geteuid() != 0) return as;
  struct passwd* pw = ::getpwnam("postgres");
  if (!pw)
    throw std::runtime_error(
        "pg server: running as root, and there is no `postgres` user to run initdb and postgres as "
        "(scripts/install-deps.sh installs the postgresql package, which creates it)");
  as.switch_user = true;
  as.uid = pw->pw_uid;
  as.gid = pw->pw_gid;
  return as;
}

// The newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl ($ORCH_PG_BINDIR wins).
fs::path find_bin_dir() {
  if (const char* dir = std::getenv("ORCH_PG_BINDIR")) return dir;
  std::vector<std::pair<int, fs::path>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const fs::path bin = entry.path() / "bin";
    if (!fs::exists(bin / "initdb", ec) || !fs::exists(bin / "pg_ctl", ec)) continue;
    found.emplace_back(std::atoi(entry.path().filename().c_str()), bin);
  }
  if (found.empty())
    throw std::runtime_error(
        "pg server: no initdb and pg_ctl under /usr/lib/postgresql/*/bin: install the postgresql package "
        "(scripts/install-deps.sh)");
  std::sort(found.begin(), found.end());
  return found.back().second;
}

std::string read_tail(const fs::path& path, size_t max_bytes = 6000) {
  std::string s = read_file(path);
  if (s.size() > max_bytes) s = "..." + s.substr(s.size() - max_bytes);
  return s;
}

// Runs argv (argv[0] a path) in `cwd` as `as`, stdout and stderr appended to `output`, stdin /dev/null, no other
// file descriptor inherited (a daemonised postmaster must not hold a pipe of ctest's open). Returns the exit code.
int run_program(const std::vector<std::string>& argv, const RunAs& as, const fs::path& cwd, const fs::path& output) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // The environment minus PG* variables (PGDATA, PGHOST, ... must not steer the server we start).
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "PG", 2) != 0) env_store.emplace_back(*e);
  std::vector<char*> env;
  for (std::string& e : env_store) env.push_back(e.data());
  env.push_back(nullptr);

  const int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out < 0 || null < 0) throw std::runtime_error("pg server: cannot open " + output.string());
  if (as.switch_user && ::fchown(out, as.uid, as.gid) != 0) {
    // Not fatal: the child writes through the descriptor it inherits either way.
  }
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("pg server: fork: ") + std::strerror(errno));
  if (pid == 0) {
    // The child: async-signal-safe calls only, then exec.
    ::dup2(null, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
      for (int fd = 3; fd < 4096; ++fd) ::close(fd);
    if (::chdir(cwd.c_str()) != 0) ::_exit(126);
    if (as.switch_user) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(as.gid) != 0 || ::setuid(as.uid) != 0) ::_exit(125);
    }
    ::execve(args[0], args.data(), env.data());
    const char prefix[] = "cannot execute ";
    [[maybe_unused]] ssize_t w = ::write(2, prefix, sizeof prefix - 1);
    w = ::write(2, args[0], std::strlen(args[0]));
    w = ::write(2, "\n", 1);
    ::_exit(127);
  }
  ::close(out);
  ::close(null);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

std::string conninfo_url(const fs::path& socket_dir, const std::string& database) {
  return "postgresql:///" + database + "?host=" + socket_dir.string() + "&user=postgres";
}

bool answers(const fs::path& socket_dir) { return PQping(conninfo_url(socket_dir, "postgres").c_str()) == PQPING_OK; }

std::map<std::string, std::string> read_state(const fs::path& state_file) {
  std::map<std::string, std::string> state;
  std::ifstream in(state_file);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) state[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return state;
}

std::string unique_database_name() {
  static std::atomic<int> counter{0};
  static const unsigned salt = std::random_device{}();
  char name[64];
  std::snprintf(name, sizeof name, "t_%d_%d_%08x", static_cast<int>(::getpid()), ++counter, salt);
  return name;
}

}  // namespace

PgServer::PgServer(fs::path root, fs::path bin_dir, bool owned)
    : root_(std::move(root)), bin_dir_(std::move(bin_dir)), owned_(owned) {}

std::unique_ptr<PgServer> PgServer::start() {
  const RunAs as = server_user();
  const fs::path bin = find_bin_dir();
  // /tmp, not the build tree: the socket path must fit in 107 bytes, and the postgres user must reach the
  // directory (a build tree under a root-only home would not do).
  std::string pattern = "/tmp/orch-pg-XXXXXX";
  if (!::mkdtemp(pattern.data())) throw std::runtime_error(std::string("pg server: mkdtemp: ") + std::strerror(errno));
  const fs::path root = pattern;
  if (as.switch_user && ::chown(root.c_str(), as.uid, as.gid) != 0)
    throw std::runtime_error("pg server: cannot hand " + root.string() +
                             " to the postgres user: " + std::strerror(errno));
  std::unique_ptr<PgServer> server(new PgServer(root, bin, /*owned=*/true));
  const fs::path data = root / "data";
  const fs::path log = root / "setup.log";
  auto fail = [&](const std::string& what) -> std::runtime_error {
    std::string message = "pg server: " + what + "\n--- " + log.string() + " (removed):\n" + read_tail(log);
    if (fs::exists(root / "server.log")) message += "\n--- server.log:\n" + read_tail(root / "server.log");
    return std::runtime_error(message);
  };
  if (int code = run_program({(bin / "initdb").string(), "-D", data.string(), "-U", "postgres", "-A", "trust", "-E",
                              "UTF8", "--no-locale", "--no-sync"},
                             as, root, log);
      code != 0)
    throw fail("initdb exited with " + std::to_string(code));
  {
    std::ofstream conf(data / "postgresql.conf", std::ios::app);
    conf << "\n# orch tests: a throwaway server\n"
         << "listen_addresses = ''\n"
         << "unix_socket_directories = '" << root.string() << "'\n"
         << "port = 5432\n"
         << "max_connections = 300\n"
         << "fsync = off\n"
         << "synchronous_commit = off\n"
         << "full_page_writes = off\n"
         << "shared_buffers = 64MB\n";
    if (!conf) throw fail("cannot write postgresql.conf");
  }
  if (int code = run_program({(bin / "pg_ctl").string(), "start", "-w", "-t", "60", "-s", "-D", data.string(), "-l",
                              (root / "server.log").string()},
                             as, root, log);
      code != 0)
    throw fail("pg_ctl start exited with " + std::to_string(code));
  if (!answers(root)) throw fail("the server started but does not answer on " + root.string());
  return server;
}

std::unique_ptr<PgServer> PgServer::attach(const fs::path& state_file) {
  auto state = read_state(state_file);
  if (state["socket_dir"].empty() || !answers(state["socket_dir"])) return nullptr;
  return std::unique_ptr<PgServer>(new PgServer(state["socket_dir"], state["bin_dir"], /*owned=*/false));
}

std::unique_ptr<PgServer> PgServer::adopt(const fs::path& state_file) {
  std::error_code ec;
  if (!fs::exists(state_file, ec)) return nullptr;
  auto state = read_state(state_file);
  if (state["socket_dir"].empty()) return nullptr;
  return std::unique_ptr<PgServer>(new PgServer(state["socket_dir"], state["bin_dir"], /*owned=*/true));
}

PgServer::~PgServer() {
  if (owned_) {
    stop();
    return;
  }
  std::vector<std::string> created;
  {
    std::lock_guard lock(mu_);
    created.swap(created_);
  }
  if (created.empty()) return;
  try {
    PgSql admin(admin_url());
    for (const std::string& db : created) admin.exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pg server: cannot drop the test databases: %s\n", e.what());
  }
}

void PgServer::stop() {
  if (!owned_ || root_.empty()) return;
  const fs::path data = root_ / "data";
  std::error_code ec;
  if (fs::exists(data / "postmaster.pid", ec)) {
    const RunAs as = server_user();
    const fs::path log = root_ / "setup.log";
    if (run_program({(bin_dir_ / "pg_ctl").string(), "stop", "-w", "-t", "30", "-s", "-D", data.string(), "-m", "fast"},
                    as, root_, log) != 0)
      run_program(
          {(bin_dir_ / "pg_ctl").string(), "stop", "-w", "-t", "30", "-s", "-D", data.string(), "-m", "immediate"}, as,
          root_, log);
  }
  if (!std::getenv("ORCH_KEEP_TEST_TMP")) fs::remove_all(root_, ec);
  root_.clear();
}

std::string PgServer::url(const std::string& database) const { return conninfo_url(root_, database); }

std::string PgServer::fresh_database() {
  const std::string name = unique_database_name();
  PgSql admin(admin_url());
  // An identifier cannot be a bound parameter; the name is ours (letters, digits, '_'), never outside input.
  admin.exec("CREATE DATABASE " + name);
  {
    std::lock_guard lock(mu_);
    created_.push_back(name);
  }
  return url(name);
}

void PgServer::write_state(const fs::path& state_file) const {
  fs::create_directories(state_file.parent_path());
  const fs::path tmp = state_file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "socket_dir=" << root_.string() << "\n"
        << "bin_dir=" << bin_dir_.string() << "\n"
        << "url=" << admin_url() << "\n";
    if (!out) throw std::runtime_error("pg server: cannot write " + tmp.string());
  }
  fs::rename(tmp, state_file);  // readers see the whole file or none
}

fs::path shared_state_file() {
  const char* tmp = std::getenv("ORCH_TEST_TMP");
  if (!tmp || !*tmp) return {};
  return fs::path(tmp) / "pg-server.state";
}

PgServer& test_pg_server() {
  static std::mutex mu;
  static std::unique_ptr<PgServer> server;  // destroyed at exit: drops this process's databases, or stops its server
  std::lock_guard lock(mu);
  if (server) return *server;
  const fs::path state = shared_state_file();
  std::error_code ec;
  if (!state.empty() && fs::exists(state, ec)) {
    server = PgServer::attach(state);
    if (!server)
      std::fprintf(stderr, "pg server: %s names a server that does not answer; starting a private one\n",
                   state.c_str());
  }
  if (!server) server = PgServer::start();
  return *server;
}

std::string fresh_pg_database() { return test_pg_server().fresh_database(); }

// ---- PgSql ------------------------------------------------------------------------------------------------------

PgSql::PgSql(const std::string& url) : pg_(PQconnectdb(url.c_str())) {
  if (!pg_ || PQstatus(pg_) != CONNECTION_OK) {
    std::string message = pg_ ? PQerrorMessage(pg_) : "out of memory";
    PQfinish(pg_);
    throw std::runtime_error("pg sql: cannot connect to " + url + ": " + message);
  }
  PQsetNoticeProcessor(
      pg_, [](void*, const char*) {}, nullptr);
}

PgSql::~PgSql() { PQfinish(pg_); }

std::vector<std::vector<std::string>> PgSql::rows(const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  PGresult* r =
      PQexecParams(pg_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0);
  const ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::string message = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error("pg sql: " + sql + ": " + message);
  }
  std::vector<std::vector<std::string>> out;
  for (int i = 0; i < PQntuples(r); ++i) {
    std::vector<std::string> row;
    for (int c = 0; c < PQnfields(r); ++c) row.emplace_back(PQgetvalue(r, i, c), PQgetlength(r, i, c));
    out.push_back(std::move(row));
  }
  PQclear(r);
  return out;
}

std::string PgSql::value(const std::string& sql, const std::vector<std::string>& params) {
  auto r = rows(sql, params);
  return r.empty() || r[0].empty() ? std::string() : r[0][0];
}

int PgSql::backend_pid() const { return PQbackendPID(pg_); }

}  // namespace orch::testing
