// integrations/git.h: GitWorkspaces keeps one local clone per project under DataLayout::clone() and one git worktree
// per task under DataLayout::worktree(), on the task's branch. git runs as a subprocess (ProcessRunner: an argv
// array, never a shell) with a timeout and a clean environment; a failure is a value carrying the tail of git's output.
// Every operation is idempotent: a second call, a replay or a restart finds the clone, branch and worktree and runs
// no git at all. Thread- and process-safe: mutating operations on one project hold an flock on "<clone>.lock".
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "engine/config.h"
#include "engine/layout.h"
#include "engine/model.h"
#include "engine/secret.h"
#include "engine/status.h"
#include "integrations/process_runner.h"

namespace orch {

struct GitOptions {
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};  // per git command (a first clone can be large)
  std::string gitea_base_url;  // for projects without clone_url: <gitea_base_url>/<gitea_repo>.git
};

struct WorktreeInfo {
  std::filesystem::path path;
  std::string branch;
  bool created = false;  // false: it was already there and nothing ran
};

class GitWorkspaces {
 public:
  // `token` (ORCH_GITEA_TOKEN) is sent to http(s) remotes only, as an http.extraHeader passed through
  // GIT_CONFIG_COUNT/KEY/VALUE in git's environment: never in a URL, an argv, a config file or a log line.
  GitWorkspaces(const DataLayout& layout, ProcessRunner& runner, Secret token, spdlog::logger& log,
                GitOptions options = {});

  // The clone URL of a project: clone_url, else derived from the Gitea base URL.
  std::string clone_url(const ProjectSpec& project) const;

  // Clones the project (no checkout) unless its clone exists.
  Status ensure_clone(const ProjectSpec& project);
  Status fetch(const ProjectSpec& project);
  // Clone, branch (from origin/<branch> if the remote has it, else origin/<default_branch>) and worktree, each
  // only if missing. The branch is task.branch, which must be a plain ref name (kInvalid otherwise).
  Result<WorktreeInfo> ensure_worktree(const ProjectSpec& project, const TaskRow& task);
  // Brings an existing worktree up to the remote's branch when the remote moved ahead: another replica's worker ran
  // the previous stage and pushed, or a human pushed to the branch. Fetches, then fast-forwards only; a branch that
  // diverged from the remote is kConflict (an agent run on it could never be pushed). Nothing to merge when the
  // remote has no such branch yet or is behind.
  Status catch_up_worktree(const ProjectSpec& project, const TaskRow& task);
  // Removes the task's worktree (uncommitted changes with it); the branch stays. Nothing to do when it is gone.
  Status remove_worktree(const ProjectSpec& project, const TaskRow& task);
  // git push origin refs/heads/<branch>: fast-forward only, never forced.
  Status push_branch(const ProjectSpec& project, const TaskRow& task);
  // The sha of the local branch.
  Result<std::string> branch_head(const ProjectSpec& project, const std::string& branch);

  // How many git processes this object started: tests check that an idempotent call ran none.
  int commands_run() const { return commands_run_.load(); }

 private:
  struct Run {
    int exit_code = 0;
    std::string output;  // stdout and stderr interleaved, at most the last 64 KiB
  };
  // Runs git with `args` in `cwd`; a non-zero exit is a value here, not an error. `remote` is the URL of the remote
  // the command talks to ("" = none): only then may the token go into git's environment.
  Result<Run> exec(const std::vector<std::string>& args, const std::filesystem::path& cwd,
                   const std::string& remote = "");
  // exec(), with a non-zero exit turned into kUnavailable naming the subcommand and the output's tail.
  Status check(const std::vector<std::string>& args, const std::filesystem::path& cwd, const std::string& remote = "");
  Status ensure_clone_locked(const ProjectSpec& project);
  std::vector<std::string> environment(const std::string& remote) const;

  const DataLayout& layout_;
  ProcessRunner& runner_;
  const Secret token_;
  spdlog::logger& log_;
  const GitOptions options_;
  std::atomic<int> commands_run_{0};
};

// A branch name orch is willing to hand to git: [A-Za-z0-9._/-], no "..", no leading '-' or '/', no "//", no
// trailing '/', '.' or ".lock". branch_for() always produces one.
bool is_safe_branch_name(std::string_view branch);

}  // namespace orch
