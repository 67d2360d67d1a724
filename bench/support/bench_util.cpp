#include "bench/support/bench_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tests/fakes/fake_server.h"

extern char** environ;

namespace orch::bench {

// ---- flags ------------------------------------------------------------------------------------------------------

Flags::Flags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument '" + a + "'");
    std::string name = a.substr(2), value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      value = argv[++i];
    }
    values_.emplace(name, value);
  }
}

std::string Flags::get(const std::string& name, const std::string& fallback) const {
  auto range = values_.equal_range(name);
  if (range.first == range.second) return fallback;
  return std::prev(range.second)->second;
}

long long Flags::num(const std::string& name, long long fallback) const {
  if (!has(name)) return fallback;
  return std::stoll(get(name));
}

double Flags::real(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  return std::stod(get(name));
}

std::vector<std::string> Flags::all(const std::string& name) const {
  std::vector<std::string> out;
  auto range = values_.equal_range(name);
  for (auto it = range.first; it != range.second; ++it) out.push_back(it->second);
  return out;
}

std::vector<long long> Flags::nums(const std::string& name, std::vector<long long> fallback) const {
  if (!has(name)) return fallback;
  std::vector<long long> out;
  std::stringstream ss(get(name));
  std::string part;
  while (std::getline(ss, part, ','))
    if (!part.empty()) out.push_back(std::stoll(part));
  return out;
}

// ---- statistics -------------------------------------------------------------------------------------------------

double percentile_sorted(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(q * static_cast<double>(sorted.size()));
  const std::size_t i = rank < 1 ? 0 : static_cast<std::size_t>(rank) - 1;
  return sorted[std::min(i, sorted.size() - 1)];
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return percentile_sorted(v, q);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// ---- processes --------------------------------------------------------------------------------------------------

long proc_status_kb(pid_t pid, const std::string& field) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/status") : "/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

double cpu_seconds(pid_t pid) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/stat") : "/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');  // the command name may hold spaces; fields count from after it
  if (close == std::string::npos) return -1;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

pid_t spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            const std::string& log_path) {
  std::vector<std::string> args = argv, envs;
  for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
  std::vector<char*> cargs, cenv;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  for (auto& e : envs) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, cargs[0], &fa, &attr, cargs.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return rc == 0 ? pid : -1;
}

bool exited(pid_t pid, int* code) {
  int status = 0;
  if (waitpid(pid, &status, WNOHANG) != pid) return false;
  if (code) *code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? -WTERMSIG(status) : -1000;
  return true;
}

int stop_process(pid_t pid, std::chrono::milliseconds grace) {
  if (pid <= 0) return -1000;
  kill(pid, SIGTERM);
  const std::int64_t until = now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(grace).count();
  int code = -1000;
  while (now_ns() < until) {
    if (exited(pid, &code)) return code;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (const char* dump = std::getenv("ORCH_BENCH_STACKS_ON_KILL"); dump && *dump) {
    // A diagnostic: where a process that ignored SIGTERM for the whole grace is stuck.
    const std::string cmd =
        "gdb -p " + std::to_string(pid) + " -batch -ex 'thread apply all bt' >> '" + std::string(dump) + "' 2>&1";
    [[maybe_unused]] int rc = std::system(cmd.c_str());
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  return -SIGKILL;
}

int http_get_status(int port, const std::string& path, std::chrono::milliseconds timeout) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int status = -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      pollfd p{fd, POLLIN, 0};
      char buf[256];
      if (poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n > 12) {
          buf[n] = 0;
          if (std::strncmp(buf, "HTTP/1.", 7) == 0) status = std::atoi(buf + 9);
        }
      }
    }
  }
  close(fd);
  return status;
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

bool set_nodelay_on_listener(int port) {
  bool found = false;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::atoi(e.path().filename().c_str());
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 || addr.sin_family != AF_INET) continue;
    if (ntohs(addr.sin_port) != port) continue;
    int listening = 0;
    socklen_t ll = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) != 0 || !listening) continue;
    int one = 1;
    found = setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0 || found;
  }
  return found;
}

struct CachingProxy::Impl {
  explicit Impl(std::string up) : upstream(std::move(up)) {}
  struct Answer {
    int status = 0;
    std::string content_type, body;
  };
  std::string upstream;
  httplib::Server server;
  std::thread thread;
  mutable std::mutex mu;
  std::map<std::string, Answer> cache;  // guarded by mu
  std::size_t hits = 0, misses = 0;     // guarded by mu
};

CachingProxy::CachingProxy(std::string upstream_base_url)
    : impl_(std::make_unique<Impl>(std::move(upstream_base_url))) {
  Impl& m = *impl_;
  m.server.set_tcp_nodelay(true);
  m.server.set_keep_alive_max_count(1000000);
  m.server.Get(".*", [&m](const httplib::Request& req, httplib::Response& res) {
    std::string key = req.path;
    if (!req.params.empty()) {
      key += "?";
      for (const auto& [k, v] : req.params) key += k + "=" + v + "&";
    }
    {
      std::lock_guard lock(m.mu);
      if (auto it = m.cache.find(key); it != m.cache.end()) {
        ++m.hits;
        res.status = it->second.status;
        res.set_content(it->second.body, it->second.content_type.c_str());
        return;
      }
    }
    httplib::Client up(m.upstream);
    httplib::Headers headers;
    for (const auto& [k, v] : req.headers)
      if (k == "X-API-Key" || k == "X-Api-Key" || k == "Authorization") headers.emplace(k, v);
    std::string target = req.target.empty() ? key : req.target;
    auto r = up.Get(target, headers);
    Impl::Answer a;
    if (r) {
      a.status = r->status;
      a.content_type = r->get_header_value("Content-Type");
      a.body = r->body;
    } else {
      a.status = 502;
      a.content_type = "text/plain";
      a.body = "upstream unreachable";
    }
    std::lock_guard lock(m.mu);
    ++m.misses;
    m.cache[key] = a;
    res.status = a.status;
    res.set_content(a.body, a.content_type.c_str());
  });
  port_ = m.server.bind_to_any_port("127.0.0.1");
  m.thread = std::thread([&m] { m.server.listen_after_bind(); });
  while (!m.server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

CachingProxy::~CachingProxy() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::size_t CachingProxy::hits() const {
  std::lock_guard lock(impl_->mu);
  return impl_->hits;
}

std::size_t CachingProxy::misses() const {
  std::lock_guard lock(impl_->mu);
  return impl_->misses;
}

// ---- output -----------------------------------------------------------------------------------------------------

void emit_result(const std::string& out_path, const std::string& bench, const nlohmann::json& metrics,
                 const nlohmann::json& info) {
  nlohmann::json line = {{"bench", bench}, {"metrics", metrics}, {"info", info}};
  const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::cout << "RESULT " << text << std::endl;
  if (!out_path.empty()) {
    std::ofstream out(out_path, std::ios::app);
    out << text << "\n";
  }
}

// ---- payloads ---------------------------------------------------------------------------------------------------

std::string bench_uuid(std::uint32_t ns, std::uint64_t n) {
  // splitmix64 of (ns, n): distinct for distinct n, stable across runs.
  auto mix = [](std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  const std::uint64_t a = mix((static_cast<std::uint64_t>(ns) << 40) ^ n);
  char buf[40];
  // The last 12 hex digits hold n itself (up to 2^48), so ids never collide.
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
                static_cast<unsigned>(0x8000 | ((a >> 48) & 0x3fff) | (ns & 0xff)),
                static_cast<unsigned long long>(n & 0xffffffffffffULL));
  return buf;
}

std::string hmac_sha256_hex(const std::string& key, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &len);
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  hex.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    hex += kHex[out[i] >> 4];
    hex += kHex[out[i] & 15];
  }
  return hex;
}

std::string plane_issue_body(const PlaneBodySpec& spec, std::uint64_t n, TimePoint updated_at) {
  using oj = nlohmann::ordered_json;
  const std::string actor_id = "7d1e0b9a-55aa-4c3e-8f0e-1b2c3d4e5f60";
  auto user = [](const std::string& id, const std::string& first, const std::string& last, const std::string& email,
                 const std::string& display) {
    return oj{{"id", id},     {"first_name", first},   {"last_name", last},      {"email", email},
              {"avatar", ""}, {"avatar_url", nullptr}, {"display_name", display}};
  };
  const std::string updated = testing::python_isoformat(updated_at);
  const std::string created = testing::python_isoformat(updated_at - std::chrono::hours(26));
  auto build = [&](const std::string& description) {
    oj data = {
        {"id", bench_uuid(1, n)},
        {"labels",
         oj::array({oj{{"id", "0ec6cfa4-e906-4aad-9390-2df0303a41ce"}, {"name", "backend"}, {"color", "#4f46e5"}}})},
        {"assignees", oj::array()},  // unassigned: keeps the body near the ~1.5 KB of the issue
        {"state",
         oj{{"id", spec.state_id}, {"name", spec.state_name}, {"color", "#3A3A3A"}, {"group", spec.state_group}}},
        {"description", oj::object()},
        {"created_at", created},
        {"updated_at", updated},
        {"deleted_at", nullptr},
        {"point", nullptr},
        {"name", "Benchmark work item " + std::to_string(n)},
        {"description_json", oj::object()},
        {"description_html", "<p>" + description + "</p>"},
        {"description_stripped", description},
        {"description_binary", nullptr},
        {"priority", "high"},
        {"start_date", nullptr},
        {"target_date", "2026-05-30"},
        {"sequence_id", static_cast<std::int64_t>(n + 1)},
        {"sort_order", 75535.0},
        {"completed_at", nullptr},
        {"archived_at", nullptr},
        {"is_draft", false},
        {"external_source", nullptr},
        {"external_id", nullptr},
        {"created_by", "13fe5f3c-642d-474f-8c6e-c70a5f8c5f40"},
        {"updated_by", actor_id},
        {"project", spec.project_id},
        {"workspace", spec.workspace_id},
        {"parent", nullptr},
        {"estimate_point", nullptr},
        {"type", nullptr},
    };
    oj body = {
        {"event", "issue"},
        {"action", "updated"},
        {"webhook_id", "3c2c32ac-82df-48b3-be2a-a3e21dbe8692"},
        {"workspace_id", spec.workspace_id},
        {"data", data},
        {"activity", oj{{"field", "state"},
                        {"new_value", spec.state_id},
                        {"old_value", "6f1c2b7e-1a0b-4d1e-9a55-2f0c9e7d3a10"},
                        {"actor", user(actor_id, "Bot", "", "bot@example.com", "approvals-bot")},
                        {"old_identifier", nullptr},
                        {"new_identifier", nullptr}}},
    };
    return testing::python_json_dumps(body);
  };
  std::string body = build("");
  if (body.size() < spec.target_bytes) {
    // Each padding byte appears twice (description_html and description_stripped).
    const std::size_t pad = (spec.target_bytes - body.size()) / 2;
    static const std::string kText =
        "Needs legal sign-off before the vendor contract is approved; see the thread with procurement. ";
    std::string description;
    while (description.size() < pad) description += kText;
    description.resize(pad);
    body = build(description);
  }
  return body;
}

// ---- orch serve -------------------------------------------------------------------------------------------------

void write_serve_config(const std::string& path, const ServeConfig& c) {
  std::ofstream f(path);
  f << "[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"" << c.data_dir << "\"\nmax_body_bytes = 1048576\n\n"
    << "[plane]\nbase_url = \"" << c.plane_base_url << "\"\n[gitea]\nbase_url = \"" << c.gitea_base_url
    << "\"\n[telegram]\napi_base = \"http://127.0.0.1:9\"\n\n"
    << "[reconciler]\nenabled = true\nplane_enabled = true\ninterval = \"60s\"\ngrace_default = \"15m\"\n"
    << "notify_unblock = false\nmax_candidates_per_pass = 500\n\n"
    << "[jobs]\nworkers = " << c.workers
    << "\nheartbeat_stale = \"150s\"\ndispatch_timeout = \"5m\"\nqueued_ttl = \"2h\"\nsweep_batch = 500\n\n"
    << "[[projects]]\nname = \"shop\"\ngitea_repo = \"" << c.repo << "\"\nclone_url = \"" << c.data_dir
    << "/remote.git\"\ndefault_branch = \"main\"\nplane_workspace = \"acme\"\nplane_project_id = \"" << c.project_id
    << "\"\nplane_states = { in_progress = \"In Progress\", approved = \"Approved\", rejected = \"Rejected\" }\n\n";
  for (const char* agent : {"analyst", "developer", "reviewer"})
    f << "[agents." << agent << "]\nargv = [\"/bin/true\"]\ntimeout = \"2m\"\nmax_attempts = 3\n\n";
  f << "[[stages]]\nname = \"analysis\"\nagent = \"analyst\"\ngate = { type = \"human_approval\" }\nhuman = true\n"
       "on_reject = \"analysis\"\n\n"
    << "[[stages]]\nname = \"development\"\nagent = \"developer\"\nopen_pr = true\ngate = { type = \"ci_green\" }\n\n"
    << "[[stages]]\nname = \"review\"\nagent = \"reviewer\"\ngate = { type = \"any\", of = [{ type = "
       "\"pr_approved\" }, { type = \"pr_merged\" }] }\non_changes_requested = \"development\"\n";
}

}  // namespace orch::bench
