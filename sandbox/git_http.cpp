#include "sandbox/git_http.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

namespace orch::sandbox {

namespace fs = std::filesystem;

namespace {

std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  for (const char* dir : {"/usr/local/bin", "/usr/bin", "/bin"}) {
    fs::path p = fs::path(dir) / name;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return name;
}

bool valid_component(const std::string& s) {
  if (s.empty() || s == "." || s == "..") return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

}  // namespace

ProgramRun run_program(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                       const std::string& input, const std::string& stderr_path, std::chrono::seconds timeout) {
  ProgramRun run;
  if (argv.empty()) return run;
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return run;
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    return run;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  if (stderr_path.empty())
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  else
    posix_spawn_file_actions_addopen(&fa, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group, so a timeout ends whatever it started too.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  const std::string path = find_program(argv[0]);
  std::vector<char*> args, envp;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, path.c_str(), &fa, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    return run;
  }
  // Feed stdin and drain stdout together: a CGI may answer before it has read all of a large push.
  ::fcntl(in[1], F_SETFL, O_NONBLOCK);
  size_t written = 0;
  int in_fd = in[1];
  if (input.empty()) {
    ::close(in_fd);
    in_fd = -1;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  char buf[65536];
  for (int out_fd = out[0]; out_fd >= 0;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[2] = {{out_fd, POLLIN, 0}, {in_fd, POLLOUT, 0}};
    const int n = ::poll(fds, in_fd >= 0 ? 2 : 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    if (in_fd >= 0 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t w = ::write(in_fd, input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) {
        ::close(in_fd);
        in_fd = -1;
      }
    }
    if (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) {
      const ssize_t r = ::read(out_fd, buf, sizeof buf);
      if (r > 0) {
        run.out.append(buf, static_cast<size_t>(r));
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(out_fd);
        out_fd = -1;
      }
    }
  }
  if (in_fd >= 0) ::close(in_fd);
  if (timed_out) {
    ::close(out[0]);
    ::kill(-pid, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!timed_out && WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  return run;
}

GitHttp::GitHttp(fs::path root, std::set<std::string> repos, Allowed allowed, OnPush on_push, std::string stderr_path)
    : root_(std::move(root)),
      repos_(std::move(repos)),
      allowed_(std::move(allowed)),
      on_push_(std::move(on_push)),
      stderr_path_(std::move(stderr_path)) {}

std::vector<std::string> GitHttp::git_env() const {
  return {"PATH=/usr/local/bin:/usr/bin:/bin",
          "HOME=" + root_.string(),
          "LC_ALL=C",
          "GIT_CONFIG_NOSYSTEM=1",
          "GIT_CONFIG_GLOBAL=/dev/null",
          "GIT_TERMINAL_PROMPT=0",
          "GIT_AUTHOR_NAME=sandbox",
          "GIT_AUTHOR_EMAIL=sandbox@orch.invalid",
          "GIT_COMMITTER_NAME=sandbox",
          "GIT_COMMITTER_EMAIL=sandbox@orch.invalid"};
}

Status GitHttp::ensure_repo(const std::string& repo) {
  const fs::path path = repo_path(repo);
  if (fs::exists(path / "HEAD")) return {};
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return unavailable("cannot create " + path.parent_path().string() + ": " + ec.message());
  const auto env = git_env();
  const std::string git = path.string();
  auto step = [&](std::vector<std::string> argv, const std::string& input = "") -> std::string {
    ProgramRun r = run_program(argv, env, input, stderr_path_);
    if (r.exit_code != 0) return {};
    std::string out = r.out;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out.empty() ? std::string("ok") : out;
  };
  if (step({"git", "init", "--quiet", "--bare", "-b", "main", git}).empty())
    return unavailable("git init --bare " + git + " failed");
  const std::string blob = step({"git", "--git-dir=" + git, "hash-object", "-w", "--stdin"},
                                "# shop\n\nThe sandbox's example repository (orch-sandbox).\n");
  const std::string tree =
      blob.empty() ? "" : step({"git", "--git-dir=" + git, "mktree"}, "100644 blob " + blob + "\tREADME.md\n");
  const std::string commit =
      tree.empty() ? "" : step({"git", "--git-dir=" + git, "commit-tree", tree, "-m", "initial commit"});
  if (commit.empty() || step({"git", "--git-dir=" + git, "update-ref", "refs/heads/main", commit}).empty())
    return unavailable("cannot make the initial commit in " + git);
  return {};
}

std::map<std::string, std::string> GitHttp::branches(const std::string& repo) const {
  std::map<std::string, std::string> out;
  ProgramRun r = run_program({"git", "--git-dir=" + repo_path(repo).string(), "for-each-ref",
                              "--format=%(objectname) %(refname)", "refs/heads/"},
                             git_env(), "", stderr_path_);
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const auto sp = line.find(' ');
    if (sp == std::string::npos) continue;
    const std::string ref = line.substr(sp + 1);
    if (ref.rfind("refs/heads/", 0) == 0) out[ref.substr(11)] = line.substr(0, sp);
  }
  return out;
}

bool GitHttp::fast_forward(const std::string& repo, const std::string& branch, const std::string& sha) {
  std::lock_guard lock(push_mu_);
  const std::string git = "--git-dir=" + repo_path(repo).string();
  const auto now = branches(repo);
  auto it = now.find(branch);
  if (it == now.end()) return false;
  if (run_program({"git", git, "merge-base", "--is-ancestor", it->second, sha}, git_env(), "", stderr_path_)
          .exit_code != 0)
    return false;
  return run_program({"git", git, "update-ref", "refs/heads/" + branch, sha, it->second}, git_env(), "", stderr_path_)
             .exit_code == 0;
}

void GitHttp::handle(const httplib::Request& req, httplib::Response& res) {
  const std::string owner = req.matches[1], name = req.matches[2], rest = req.matches[3];
  const std::string repo = owner + "/" + name;
  auto refuse = [&](int status, const std::string& message) {
    res.status = status;
    res.set_content(message + "\n", "text/plain");
  };
  if (!valid_component(owner) || !valid_component(name) || !repos_.count(repo)) return refuse(404, "Not found");
  // Smart HTTP only: the dumb protocol's object paths are not served.
  const bool info_refs = req.method == "GET" && rest == "info/refs";
  const bool rpc = req.method == "POST" && (rest == "git-upload-pack" || rest == "git-receive-pack");
  if (!info_refs && !rpc) return refuse(404, "Not found");
  if (!allowed_(req)) {
    res.set_header("WWW-Authenticate", R"(Basic realm="Gitea")");
    return refuse(401, "Unauthorized");
  }
  const bool push = rest == "git-receive-pack" || (info_refs && req.get_param_value("service") == "git-receive-pack");
  auto env = git_env();
  env.push_back("GIT_PROJECT_ROOT=" + root_.string());
  env.push_back("GIT_HTTP_EXPORT_ALL=1");
  env.push_back("PATH_INFO=/" + repo + ".git/" + rest);
  env.push_back("REQUEST_METHOD=" + req.method);
  const auto q = req.target.find('?');
  env.push_back("QUERY_STRING=" + (q == std::string::npos ? std::string() : req.target.substr(q + 1)));
  env.push_back("CONTENT_TYPE=" + req.get_header_value("Content-Type"));
  // cpp-httplib has already undone a chunked or gzip-encoded body, so http-backend gets plain bytes and their
  // length (HTTP_CONTENT_ENCODING would make it gunzip them again).
  env.push_back("CONTENT_LENGTH=" + std::to_string(req.body.size()));
  env.push_back("REMOTE_ADDR=127.0.0.1");
  // http-backend allows receive-pack only to an authenticated user; the token was checked above.
  env.push_back("REMOTE_USER=orch");
  if (req.has_header("Git-Protocol")) env.push_back("HTTP_GIT_PROTOCOL=" + req.get_header_value("Git-Protocol"));

  std::unique_lock<std::mutex> lock(push_mu_, std::defer_lock);
  std::map<std::string, std::string> before;
  if (push && rpc) {
    lock.lock();
    before = branches(repo);
  }
  ProgramRun r = run_program({"git", "http-backend"}, env, req.body, stderr_path_);
  if (r.exit_code != 0 && r.out.empty()) return refuse(500, "git http-backend failed");
  // CGI: header lines, a blank line, the body. "Status: 403 Forbidden" sets the status (default 200).
  size_t split = r.out.find("\r\n\r\n");
  size_t body_at = split == std::string::npos ? std::string::npos : split + 4;
  if (split == std::string::npos) {
    split = r.out.find("\n\n");
    body_at = split == std::string::npos ? std::string::npos : split + 2;
  }
  if (split == std::string::npos) return refuse(500, "git http-backend answered no headers");
  std::istringstream headers(r.out.substr(0, split));
  std::string content_type = "application/octet-stream";
  res.status = 200;
  for (std::string line; std::getline(headers, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    std::string lower;
    for (unsigned char c : key) lower += static_cast<char>(std::tolower(c));
    if (lower == "status") {
      try {
        res.status = std::stoi(value);
      } catch (...) {
        res.status = 500;
      }
    } else if (lower == "content-type") {
      content_type = value;
    } else if (lower != "content-length") {
      res.set_header(key, value);
    }
  }
  res.set_content(r.out.substr(body_at), content_type);
  if (!(push && rpc)) return;
  const auto after = branches(repo);
  std::vector<RefChange> changes;
  for (const auto& [branch, sha] : after) {
    auto it = before.find(branch);
    if (it == before.end())
      changes.push_back({branch, "", sha});
    else if (it->second != sha)
      changes.push_back({branch, it->second, sha});
  }
  for (const auto& [branch, sha] : before)
    if (!after.count(branch)) changes.push_back({branch, sha, ""});
  lock.unlock();
  // Before the push's answer: Gitea knows a pushed branch by the time `git push` returns.
  if (!changes.empty()) on_push_(repo, changes);
}

}  // namespace orch::sandbox
