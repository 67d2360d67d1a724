// sandbox/git_http.h: git's smart HTTP for the sandbox's Gitea. Each request runs `git http-backend` as a CGI
// subprocess (an argv, never a shell) on the bare repositories under one root; after a receive-pack it reports
// which branches moved (for-each-ref before and after), so the sandbox can do what Gitea does on a push.
// Thread-safe: every request owns its subprocess; pushes to one root are serialised so each diff is exact.
#pragma once

#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "engine/status.h"

namespace orch::sandbox {

// What one program run came to.
struct ProgramRun {
  int exit_code = -1;  // -1: could not start, killed, or timed out
  std::string out;     // its stdout
};

// Runs argv[0] (an absolute path or a name looked up on PATH) with exactly `env`, `input` on its stdin, stderr
// appended to `stderr_path` ("" = /dev/null). No shell. Killed after `timeout`.
ProgramRun run_program(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                       const std::string& input = "", const std::string& stderr_path = "",
                       std::chrono::seconds timeout = std::chrono::seconds(120));

struct RefChange {
  std::string branch;
  std::string before;  // "" when the branch was created
  std::string after;   // "" when it was deleted
};

class GitHttp {
 public:
  using Allowed = std::function<bool(const httplib::Request&)>;
  using OnPush = std::function<void(const std::string& repo, const std::vector<RefChange>& changes)>;

  // `root` holds <owner>/<name>.git; only the repositories in `repos` ("owner/name") are served.
  GitHttp(std::filesystem::path root, std::set<std::string> repos, Allowed allowed, OnPush on_push,
          std::string stderr_path);

  // Creates <root>/<repo>.git with one commit on main (a README.md) unless it exists.
  Status ensure_repo(const std::string& repo);
  // branch -> sha of every refs/heads/* of a served repository.
  std::map<std::string, std::string> branches(const std::string& repo) const;
  // Moves `branch` to `sha` if the branch is an ancestor of it (a fast-forward); false otherwise.
  bool fast_forward(const std::string& repo, const std::string& branch, const std::string& sha);
  std::filesystem::path repo_path(const std::string& repo) const { return root_ / (repo + ".git"); }

  // The route: req.matches[1..3] are owner, name and the path after "<name>.git/".
  void handle(const httplib::Request& req, httplib::Response& res);

 private:
  std::vector<std::string> git_env() const;

  const std::filesystem::path root_;
  const std::set<std::string> repos_;
  const Allowed allowed_;
  const OnPush on_push_;
  const std::string stderr_path_;
  std::mutex push_mu_;  // one receive-pack at a time, so before/after ref lists belong to one push
};

}  // namespace orch::sandbox
