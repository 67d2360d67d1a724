// DESIGN: every operation first checks the file system for what it would create (the clone's .git, the worktree's
// .git file) and returns at once when it is there, so the start-up replay of a hundred tasks runs no git. Only when
// something is missing does it take the project's flock, check again (another thread or process may have made it
// meanwhile), and run git. A first clone goes to "<clone>.partial" and is renamed into place, so a crash mid-clone
// leaves nothing that looks like a finished clone. git's environment is built from scratch: no inherited
// credentials helpers, no system or global config, no terminal prompt, and the token only as an extraHeader.
#include "integrations/git.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <system_error>

namespace orch {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kOutputKeep = 64 * 1024;  // of git's output kept in memory
constexpr std::size_t kTailChars = 600;         // of it quoted in an error

// An flock on a file: serialises git on one repository across threads (each lock opens its own description) and
// across processes. Released when destroyed.
class FileLock {
 public:
  explicit FileLock(const fs::path& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) return;
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        ::close(fd_);
        fd_ = -1;
        return;
      }
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

fs::path lock_path(const fs::path& clone) { return fs::path(clone.string() + ".lock"); }

bool is_clone(const fs::path& clone) {
  std::error_code ec;
  return fs::is_directory(clone / ".git", ec);
}

bool is_worktree(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path / ".git", ec);  // a linked worktree has a .git *file* naming its gitdir
}

// The output's last kTailChars, on one line: enough to say why, short enough for a log line or a job error.
std::string tail_of(const std::string& output) {
  std::string t = output.size() > kTailChars ? output.substr(output.size() - kTailChars) : output;
  for (char& c : t)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  while (!t.empty() && t.back() == ' ') t.pop_back();
  return t;
}

bool is_http(const std::string& url) { return url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0; }

std::string read_tail(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  std::streamoff start = size > static_cast<std::streamoff>(kOutputKeep) ? size - kOutputKeep : 0;
  in.seekg(start);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

bool is_safe_branch_name(std::string_view b) {
  if (b.empty() || b.size() > 200) return false;
  if (b.front() == '-' || b.front() == '/' || b.back() == '/' || b.back() == '.') return false;
  if (b.size() >= 5 && b.substr(b.size() - 5) == ".lock") return false;
  if (b.find("..") != std::string_view::npos || b.find("//") != std::string_view::npos) return false;
  if (b.find("/.") != std::string_view::npos || b.front() == '.') return false;
  for (char c : b) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.' || c == '/';
    if (!ok) return false;
  }
  return true;
}

GitWorkspaces::GitWorkspaces(const DataLayout& layout, ProcessRunner& runner, Secret token, spdlog::logger& log,
                             GitOptions options)
    : layout_(layout), runner_(runner), token_(std::move(token)), log_(log), options_(std::move(options)) {}

std::string GitWorkspaces::clone_url(const ProjectSpec& project) const {
  if (!project.clone_url.empty()) return project.clone_url;
  std::string base = options_.gitea_base_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/" + project.gitea_repo + ".git";
}

std::vector<std::string> GitWorkspaces::environment(const std::string& remote) const {
  std::vector<std::string> env = {
      "PATH=/usr/local/bin:/usr/bin:/bin",
      "HOME=" + layout_.root().string(),
      "LC_ALL=C",
      "GIT_TERMINAL_PROMPT=0",
      "GIT_CONFIG_NOSYSTEM=1",
      "GIT_CONFIG_GLOBAL=/dev/null",
      // Config names the remote; still, never let a URL run a helper program (ext::) behind our back.
      "GIT_ALLOW_PROTOCOL=file:git:http:https:ssh",
  };
  if (!token_.empty() && is_http(remote)) {
    env.push_back("GIT_CONFIG_COUNT=1");
    env.push_back("GIT_CONFIG_KEY_0=http.extraHeader");
    env.push_back("GIT_CONFIG_VALUE_0=Authorization: token " + token_.reveal());
  }
  return env;
}

Result<GitWorkspaces::Run> GitWorkspaces::exec(const std::vector<std::string>& args, const fs::path& cwd,
                                               const std::string& remote) {
  std::error_code ec;
  fs::path tmp_dir = layout_.root() / "tmp";
  fs::create_directories(tmp_dir, ec);
  std::string out_path = (tmp_dir / "git-XXXXXX").string();
  int fd = ::mkstemp(out_path.data());
  if (fd < 0) return unavailable("git: cannot create an output file under " + tmp_dir.string());
  ::close(fd);

  ProcessSpec spec;
  spec.argv = {"git"};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.cwd = cwd.string();
  spec.env = environment(remote);
  spec.log_path = out_path;
  spec.timeout = options_.timeout;
  spec.kill_grace = std::chrono::seconds(2);
  ++commands_run_;
  Result<int> code = runner_.run(spec);
  std::string output = read_tail(out_path);
  fs::remove(out_path, ec);
  const std::string what = args.empty() ? "git" : "git " + args.front();
  if (!code.ok()) {
    std::string tail = tail_of(output);
    return Status{code.status().code == Code::kInvalid ? Code::kInternal : Code::kUnavailable,
                  what + ": " + code.status().message + (tail.empty() ? "" : ": " + tail)};
  }
  return Run{code.value(), std::move(output)};
}

Status GitWorkspaces::check(const std::vector<std::string>& args, const fs::path& cwd, const std::string& remote) {
  auto run = exec(args, cwd, remote);
  if (!run.ok()) return run.status();
  if (run.value().exit_code == 0) return {};
  std::string tail = tail_of(run.value().output);
  return unavailable("git " + (args.empty() ? std::string() : args.front()) + " exited " +
                     std::to_string(run.value().exit_code) + (tail.empty() ? "" : ": " + tail));
}

Status GitWorkspaces::ensure_clone(const ProjectSpec& project) {
  if (is_clone(layout_.clone(project.name))) return {};
  std::error_code ec;
  fs::create_directories(layout_.clone(project.name).parent_path(), ec);
  FileLock lock(lock_path(layout_.clone(project.name)));
  if (!lock.held()) return unavailable("git: cannot lock the clone of " + project.name);
  return ensure_clone_locked(project);
}

Status GitWorkspaces::ensure_clone_locked(const ProjectSpec& project) {
  const fs::path clone = layout_.clone(project.name);
  if (is_clone(clone)) return {};
  if (!is_safe_branch_name(project.default_branch))
    return invalid("project " + project.name + ": default branch '" + project.default_branch + "' is not a plain name");
  const std::string url = clone_url(project);
  if (url.empty() || url.front() == '-') return invalid("project " + project.name + " has no usable clone URL");
  std::error_code ec;
  const fs::path partial = clone.string() + ".partial";
  fs::remove_all(partial, ec);  // a clone interrupted by a crash: start over
  fs::remove_all(clone, ec);    // a directory without .git is not ours to keep
  if (Status s = check({"clone", "--no-checkout", "--origin", "origin", "--", url, partial.string()},
                       clone.parent_path(), url);
      !s.ok()) {
    fs::remove_all(partial, ec);
    return s;
  }
  fs::rename(partial, clone, ec);
  if (ec) return unavailable("git: cannot move the new clone of " + project.name + " into place: " + ec.message());
  log_.info("git: cloned {} into {}", project.name, clone.string());
  return {};
}

Status GitWorkspaces::fetch(const ProjectSpec& project) {
  if (Status s = ensure_clone(project); !s.ok()) return s;
  FileLock lock(lock_path(layout_.clone(project.name)));
  if (!lock.held()) return unavailable("git: cannot lock the clone of " + project.name);
  return check({"fetch", "--quiet", "origin"}, layout_.clone(project.name), clone_url(project));
}

Result<WorktreeInfo> GitWorkspaces::ensure_worktree(const ProjectSpec& project, const TaskRow& task) {
  WorktreeInfo info{layout_.worktree(task), task.branch, false};
  if (!is_safe_branch_name(task.branch))
    return invalid("task " + task.work_item_key + ": branch name is not a plain ref name");
  if (is_worktree(info.path)) return info;

  const fs::path clone = layout_.clone(project.name);
  std::error_code ec;
  fs::create_directories(clone.parent_path(), ec);
  FileLock lock(lock_path(clone));
  if (!lock.held()) return unavailable("git: cannot lock the clone of " + project.name);
  if (is_worktree(info.path)) return info;  // made by another thread or process while we waited
  if (Status s = ensure_clone_locked(project); !s.ok()) return s;

  const std::string local = "refs/heads/" + task.branch;
  auto has_local = exec({"rev-parse", "--verify", "--quiet", local}, clone);
  if (!has_local.ok()) return has_local.status();
  if (has_local.value().exit_code != 0) {
    // The remote may hold the branch already (pushed before a data directory was lost): continue from it.
    const std::string url = clone_url(project);
    if (Status s = check({"fetch", "--quiet", "origin"}, clone, url); !s.ok()) return s;
    const std::string remote = "refs/remotes/origin/" + task.branch;
    auto has_remote = exec({"rev-parse", "--verify", "--quiet", remote}, clone);
    if (!has_remote.ok()) return has_remote.status();
    const std::string start =
        has_remote.value().exit_code == 0 ? remote : "refs/remotes/origin/" + project.default_branch;
    if (Status s = check({"branch", "--no-track", task.branch, start}, clone); !s.ok()) return s;
  }

  // A directory left by an interrupted `worktree add` is ours to clear; a registration whose directory is gone (a
  // worktree deleted by hand) makes the add fail: prune it and try once more.
  if (fs::exists(info.path, ec)) fs::remove_all(info.path, ec);
  fs::create_directories(info.path.parent_path(), ec);
  const std::vector<std::string> add = {"worktree", "add", "--quiet", info.path.string(), task.branch};
  if (Status s = check(add, clone); !s.ok()) {
    if (Status p = check({"worktree", "prune"}, clone); !p.ok()) return s;
    fs::remove_all(info.path, ec);
    if (Status again = check(add, clone); !again.ok()) return again;
  }
  info.created = true;
  log_.info("git: worktree for {} on {} at {}", task.work_item_key, task.branch, info.path.string());
  return info;
}

Status GitWorkspaces::remove_worktree(const ProjectSpec& project, const TaskRow& task) {
  const fs::path path = layout_.worktree(task);
  std::error_code ec;
  if (!fs::exists(path, ec)) return {};
  const fs::path clone = layout_.clone(project.name);
  FileLock lock(lock_path(clone));
  if (!lock.held()) return unavailable("git: cannot lock the clone of " + project.name);
  if (!fs::exists(path, ec)) return {};
  if (is_clone(clone)) {
    Status removed = check({"worktree", "remove", "--force", path.string()}, clone);
    if (!removed.ok() || fs::exists(path, ec)) {
      // A worktree git no longer knows (or a half-made one): the directory goes, and prune drops the registration.
      fs::remove_all(path, ec);
      if (Status s = check({"worktree", "prune"}, clone); !s.ok()) return s;
    }
  } else {
    fs::remove_all(path, ec);
  }
  if (fs::exists(path, ec)) return unavailable("git: cannot remove the worktree of " + task.work_item_key);
  log_.info("git: removed the worktree of {} (branch {} kept)", task.work_item_key, task.branch);
  return {};
}

Status GitWorkspaces::catch_up_worktree(const ProjectSpec& project, const TaskRow& task) {
  if (!is_safe_branch_name(task.branch))
    return invalid("task " + task.work_item_key + ": branch name is not a plain ref name");
  const fs::path path = layout_.worktree(task);
  if (!is_worktree(path)) return not_found("task " + task.work_item_key + " has no worktree");
  const fs::path clone = layout_.clone(project.name);
  FileLock lock(lock_path(clone));
  if (!lock.held()) return unavailable("git: cannot lock the clone of " + project.name);
  const std::string remote_ref = "refs/remotes/origin/" + task.branch;
  // Only this branch: a fetch of the whole remote per job would grow with the number of branches.
  auto fetched =
      exec({"fetch", "--quiet", "origin", "+refs/heads/" + task.branch + ":" + remote_ref}, clone, clone_url(project));
  if (!fetched.ok()) return fetched.status();
  if (fetched.value().exit_code != 0) {
    auto listed = exec({"ls-remote", "--exit-code", "origin", "refs/heads/" + task.branch}, clone, clone_url(project));
    if (listed.ok() && listed.value().exit_code == 2) return {};  // the remote has no such branch yet
    return unavailable("git fetch of " + task.branch + " failed: " + tail_of(fetched.value().output));
  }
  auto behind = exec({"merge-base", "--is-ancestor", remote_ref, "HEAD"}, path);
  if (!behind.ok()) return behind.status();
  if (behind.value().exit_code == 0) return {};  // the remote is not ahead of us
  auto merged = exec({"merge", "--ff-only", "--quiet", remote_ref}, path);
  if (!merged.ok()) return merged.status();
  if (merged.value().exit_code != 0)
    return conflict("branch " + task.branch + " diverged from the remote: " + tail_of(merged.value().output));
  log_.info("git: worktree of {} caught up with the remote's {}", task.work_item_key, task.branch);
  return {};
}

Status GitWorkspaces::push_branch(const ProjectSpec& project, const TaskRow& task) {
  if (!is_safe_branch_name(task.branch))
    return invalid("task " + task.work_item_key + ": branch name is not a plain ref name");
  const fs::path clone = layout_.clone(project.name);
  if (!is_clone(clone)) return not_found("project " + project.name + " has no clone");
  FileLock lock(lock_path(clone));
  if (!lock.held()) return unavailable("git: cannot lock the clone of " + project.name);
  const std::string ref = "refs/heads/" + task.branch;
  return check({"push", "--quiet", "origin", ref + ":" + ref}, clone, clone_url(project));
}

Result<std::string> GitWorkspaces::branch_head(const ProjectSpec& project, const std::string& branch) {
  if (!is_safe_branch_name(branch)) return invalid("branch name is not a plain ref name");
  const fs::path clone = layout_.clone(project.name);
  if (!is_clone(clone)) return not_found("project " + project.name + " has no clone");
  auto run = exec({"rev-parse", "--verify", "--quiet", "refs/heads/" + branch}, clone);
  if (!run.ok()) return run.status();
  if (run.value().exit_code != 0) return not_found("no branch " + branch);
  std::string sha = run.value().output;
  while (!sha.empty() && (sha.back() == '\n' || sha.back() == '\r' || sha.back() == ' ')) sha.pop_back();
  return sha;
}

}  // namespace orch
