#include "tests/support/git_repo.h"

#include <fstream>
#include <iterator>
#include <stdexcept>

#include "integrations/process_runner.h"

namespace orch::testing {

namespace fs = std::filesystem;

std::string git(const std::vector<std::string>& args, const fs::path& cwd, const fs::path& scratch) {
  ProcessRunner runner;
  ProcessSpec spec;
  spec.argv = {"git"};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.cwd = cwd.string();
  spec.env = std::vector<std::string>{"PATH=/usr/local/bin:/usr/bin:/bin",
                                      "HOME=" + scratch.string(),
                                      "GIT_CONFIG_NOSYSTEM=1",
                                      "GIT_CONFIG_GLOBAL=/dev/null",
                                      "GIT_AUTHOR_NAME=test",
                                      "GIT_AUTHOR_EMAIL=test@example.com",
                                      "GIT_COMMITTER_NAME=test",
                                      "GIT_COMMITTER_EMAIL=test@example.com"};
  std::string text;
  spec.on_output = [&text](std::string_view out) { text.append(out); };
  auto code = runner.run(spec);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (!code.ok() || code.value() != 0)
    throw std::runtime_error("git " + args.front() + " failed: " + text + " " + code.status().message);
  return text;
}

fs::path make_remote(const fs::path& dir) {
  fs::create_directories(dir / "scratch");
  git({"init", "--quiet", "--bare", "-b", "main", (dir / "remote.git").string()}, dir, dir / "scratch");
  git({"init", "--quiet", "-b", "main", (dir / "seed").string()}, dir, dir / "scratch");
  std::ofstream(dir / "seed" / "README.md") << "hello\n";
  git({"add", "README.md"}, dir / "seed", dir / "scratch");
  git({"commit", "--quiet", "-m", "initial"}, dir / "seed", dir / "scratch");
  git({"push", "--quiet", (dir / "remote.git").string(), "main"}, dir / "seed", dir / "scratch");
  return dir / "remote.git";
}

}  // namespace orch::testing
