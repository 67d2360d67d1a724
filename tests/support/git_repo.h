// tests/support/git_repo.h: real git for a test's own setup and checks: a command run with a clean, fixed identity
// (no user or system config), and a bare repository with one commit on main that serves as a project's remote.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace orch::testing {

// Runs `git args...` in `cwd` (HOME = `scratch`, which must exist) and returns its trimmed output; throws with the
// output when git fails.
std::string git(const std::vector<std::string>& args, const std::filesystem::path& cwd,
                const std::filesystem::path& scratch);

// `dir`/remote.git: a bare repository whose main holds one commit (README.md). `dir`/scratch is git's HOME.
std::filesystem::path make_remote(const std::filesystem::path& dir);

}  // namespace orch::testing
