#include "tests/support/orch_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "tests/support/temp_dir.h"

namespace orch::testing {
namespace {

std::vector<std::string> env_lines(const std::map<std::string, std::string>& env) {
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

std::vector<char*> c_array(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

std::map<std::string, std::string> with_defaults(std::map<std::string, std::string> env) {
  if (!env.count("PATH")) env["PATH"] = std::getenv("PATH") ? std::getenv("PATH") : "/usr/local/bin:/usr/bin:/bin";
  if (!env.count("HOME")) env["HOME"] = std::getenv("HOME") ? std::getenv("HOME") : "/tmp";
  // The sanitizer presets' options (halt on the first report, the suppressions file) reach the `orch` children
  // too, so that a report in the real binary fails the test instead of only landing in its log.
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"})
    if (!env.count(name) && std::getenv(name)) env[name] = std::getenv(name);
  return env;
}

// fork + execve with stdout/stderr redirected to fds; the child gets its own process group.
pid_t spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env, int out_fd,
            int err_fd) {
  std::vector<std::string> args = argv;
  std::vector<std::string> envs = env_lines(env);
  std::vector<char*> cargs = c_array(args);
  std::vector<char*> cenv = c_array(envs);
  pid_t pid = fork();
  if (pid != 0) return pid;
  setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  int devnull = open("/dev/null", O_RDONLY);
  if (devnull >= 0) dup2(devnull, 0);
  if (out_fd >= 0) dup2(out_fd, 1);
  if (err_fd >= 0) dup2(err_fd, 2);
  execve(cargs[0], cargs.data(), cenv.data());
  _exit(127);
}

// Waits for `pid` to exit: its exit code, -signal if one ended it, nullopt if it did not exit in time. Clears pid.
std::optional<int> wait_child(pid_t& pid, std::chrono::milliseconds deadline) {
  if (pid <= 0) return std::nullopt;
  int status = 0;
  if (!eventually([&] { return waitpid(pid, &status, WNOHANG) == pid; }, deadline)) return std::nullopt;
  pid = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1000;
}

void kill_child(pid_t& pid) {
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  pid = -1;
}

}  // namespace

int free_loopback_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

int run_capture(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env, std::string* out,
                std::chrono::milliseconds timeout) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return -1;
  pid_t pid = spawn(argv, with_defaults(env), pipefd[1], -1);
  close(pipefd[1]);
  if (pid < 0) {
    close(pipefd[0]);
    return -1;
  }
  std::string data;
  char buf[65536];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  if (!eventually([&] { return waitpid(pid, &status, WNOHANG) != 0; }, timeout)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
  }
  if (out) *out = std::move(data);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

OrchProcess::OrchProcess(std::string config_path, std::map<std::string, std::string> env, std::string log_path)
    : config_path_(std::move(config_path)), env_(with_defaults(std::move(env))), log_path_(std::move(log_path)) {}

OrchProcess::~OrchProcess() { kill_hard(); }

bool OrchProcess::start(std::chrono::milliseconds deadline) {
  if (pid_ > 0) return false;
  std::map<std::string, std::string> env = env_;
  if (auto it = env.find("ORCH_LISTEN"); it != env.end()) {
    port_ = std::stoi(it->second.substr(it->second.rfind(':') + 1));
  } else {
    port_ = free_loopback_port();
    env["ORCH_LISTEN"] = "127.0.0.1:" + std::to_string(port_);
  }
  int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_ = spawn({ORCH_BINARY, "serve", "--config", config_path_}, env, log_fd, log_fd);
  if (log_fd >= 0) close(log_fd);
  if (pid_ < 0) return false;
  return eventually(
             [&] {
               if (pid_ <= 0) return false;
               int status = 0;
               if (waitpid(pid_, &status, WNOHANG) == pid_) {
                 pid_ = -1;  // died during start-up
                 return true;
               }
               httplib::Client c("127.0.0.1", port_);
               c.set_connection_timeout(std::chrono::milliseconds(200));
               auto r = c.Get("/healthz");
               return r && r->status == 200;
             },
             deadline) &&
         pid_ > 0;
}

std::optional<int> OrchProcess::wait_exit(std::chrono::milliseconds deadline) { return wait_child(pid_, deadline); }

std::optional<int> OrchProcess::terminate(std::chrono::milliseconds deadline) {
  if (pid_ <= 0) return std::nullopt;
  kill(pid_, SIGTERM);
  auto code = wait_exit(deadline);
  if (!code) kill_hard();
  return code;
}

void OrchProcess::kill_hard() { kill_child(pid_); }

nlohmann::json OrchProcess::status_json() const {
  std::string out;
  int code = run_capture({ORCH_BINARY, "status", "--json", "--config", config_path_}, env_, &out);
  if (code != 0) return nullptr;
  return nlohmann::json::parse(out, nullptr, false);
}

nlohmann::json OrchProcess::explain_json(const std::string& work_item_key) const {
  std::string out;
  int code = run_capture({ORCH_BINARY, "explain", work_item_key, "--json", "--config", config_path_}, env_, &out);
  if (code != 0) return nullptr;
  return nlohmann::json::parse(out, nullptr, false);
}

std::string OrchProcess::log_tail(std::size_t max_bytes) const {
  const std::string s = read_file(log_path_);
  return s.size() > max_bytes ? s.substr(s.size() - max_bytes) : s;
}

RunnerProcess::RunnerProcess(std::vector<std::string> args, std::map<std::string, std::string> env,
                             std::string log_path)
    : args_(std::move(args)), env_(with_defaults(std::move(env))), log_path_(std::move(log_path)) {}

RunnerProcess::~RunnerProcess() { kill_hard(); }

bool RunnerProcess::start() {
  if (pid_ > 0) return false;
  std::vector<std::string> argv = {ORCH_BINARY, "runner"};
  argv.insert(argv.end(), args_.begin(), args_.end());
  int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_ = spawn(argv, env_, log_fd, log_fd);
  if (log_fd >= 0) close(log_fd);
  return pid_ > 0;
}

void RunnerProcess::signal(int sig) const {
  if (pid_ > 0) kill(pid_, sig);
}

std::optional<int> RunnerProcess::wait_exit(std::chrono::milliseconds deadline) { return wait_child(pid_, deadline); }

std::optional<int> RunnerProcess::terminate(std::chrono::milliseconds deadline) {
  if (pid_ <= 0) return std::nullopt;
  kill(pid_, SIGCONT);  // a stopped runner cannot act on SIGTERM
  kill(pid_, SIGTERM);
  auto code = wait_exit(deadline);
  if (!code) kill_hard();
  return code;
}

void RunnerProcess::kill_hard() { kill_child(pid_); }

std::string RunnerProcess::log() const { return read_file(log_path_); }

}  // namespace orch::testing
