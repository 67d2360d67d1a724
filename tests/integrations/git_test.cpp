#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <fstream>

#include "integrations/git.h"
#include "integrations/worker_pool.h"
#include "integrations/worktree_lifecycle.h"
#include "tests/support/engine_fixture.h"
#include "tests/support/git_repo.h"

using namespace orch;
using namespace orch::testing;
namespace fs = std::filesystem;

namespace {

// Runs git for the test's own setup and checks (not through the code under test); returns its trimmed output.
Config config_with_remote(const fs::path& remote) {
  Config c = default_config();
  c.projects[0].clone_url = remote.string();
  return c;
}

TaskRow task_row(const std::string& key) {
  TaskRow t;
  t.id = 1;
  t.project = "shop";
  t.work_item_id = "wi-" + key;
  t.work_item_key = key;
  t.branch = branch_for(key, t.work_item_id);
  t.stage = "analysis";
  return t;
}

}  // namespace

TEST_CASE(
    "ensure_worktree makes the clone, branch and worktree once, and a second call or a new instance runs no git") {
  TempDir dir;
  fs::path remote = make_remote(dir.path());
  TestLog log;
  DataLayout layout(dir.path() / "data");
  ProcessRunner runner;
  ProjectSpec project = config_with_remote(remote).projects[0];
  TaskRow task = task_row("SHOP-7");

  GitWorkspaces git_a(layout, runner, Secret(), log);
  auto made = git_a.ensure_worktree(project, task);
  REQUIRE_MESSAGE(made.ok(), made.status().to_string());
  CHECK(made.value().created);
  CHECK(made.value().path == layout.worktree(task));
  CHECK(made.value().branch == "orch/shop-7");
  CHECK(fs::exists(layout.worktree(task) / "README.md"));
  CHECK(git({"rev-parse", "--abbrev-ref", "HEAD"}, layout.worktree(task), dir.path() / "scratch") == "orch/shop-7");
  CHECK(git({"rev-parse", "orch/shop-7"}, layout.clone("shop"), dir.path() / "scratch") ==
        git({"rev-parse", "main"}, remote, dir.path() / "scratch"));
  const int ran = git_a.commands_run();
  CHECK(ran > 0);

  auto again = git_a.ensure_worktree(project, task);
  REQUIRE(again.ok());
  CHECK_FALSE(again.value().created);
  CHECK(git_a.commands_run() == ran);

  GitWorkspaces git_b(layout, runner, Secret(), log);  // a restart
  auto restarted = git_b.ensure_worktree(project, task);
  REQUIRE(restarted.ok());
  CHECK_FALSE(restarted.value().created);
  CHECK(git_b.commands_run() == 0);
  CHECK(git_b.ensure_clone(project).ok());
  CHECK(git_b.commands_run() == 0);
}

TEST_CASE("catch_up_worktree fast-forwards to what another replica pushed, and refuses a branch that diverged") {
  TempDir dir;
  fs::path remote = make_remote(dir.path());
  TestLog log;
  ProcessRunner runner;
  ProjectSpec project = config_with_remote(remote).projects[0];
  TaskRow task = task_row("SHOP-9");
  const fs::path scratch = dir.path() / "scratch";
  // Two replicas, each with its own data directory, on one remote.
  DataLayout layout_a(dir.path() / "a"), layout_b(dir.path() / "b");
  GitWorkspaces a(layout_a, runner, Secret(), log), b(layout_b, runner, Secret(), log);
  REQUIRE(a.ensure_worktree(project, task).ok());
  REQUIRE(b.ensure_worktree(project, task).ok());
  CHECK(b.catch_up_worktree(project, task).ok());  // the remote has no such branch yet: nothing to do

  // Replica A's worker runs a stage and pushes.
  std::ofstream(layout_a.worktree(task) / "analysis.md") << "done\n";
  git({"add", "analysis.md"}, layout_a.worktree(task), scratch);
  git({"commit", "--quiet", "-m", "analysis"}, layout_a.worktree(task), scratch);
  REQUIRE(a.push_branch(project, task).ok());
  const std::string pushed = git({"rev-parse", "refs/heads/orch/shop-9"}, remote, scratch);

  // Replica B runs the next stage: its old worktree catches up first, so its own push will fast-forward.
  REQUIRE(b.catch_up_worktree(project, task).ok());
  CHECK(git({"rev-parse", "HEAD"}, layout_b.worktree(task), scratch) == pushed);
  CHECK(fs::exists(layout_b.worktree(task) / "analysis.md"));
  CHECK(log.contains("caught up with the remote"));
  const int ran = b.commands_run();
  CHECK(b.catch_up_worktree(project, task).ok());  // up to date: nothing merged
  CHECK(git({"rev-parse", "HEAD"}, layout_b.worktree(task), scratch) == pushed);
  CHECK(b.commands_run() > ran);  // it did look (a fetch), which is the point

  // B commits without pushing, A pushes something else: B's branch can never be pushed again.
  std::ofstream(layout_b.worktree(task) / "b.txt") << "b\n";
  git({"add", "b.txt"}, layout_b.worktree(task), scratch);
  git({"commit", "--quiet", "-m", "b"}, layout_b.worktree(task), scratch);
  REQUIRE(a.catch_up_worktree(project, task).ok());
  std::ofstream(layout_a.worktree(task) / "a.txt") << "a\n";
  git({"add", "a.txt"}, layout_a.worktree(task), scratch);
  git({"commit", "--quiet", "-m", "a"}, layout_a.worktree(task), scratch);
  REQUIRE(a.push_branch(project, task).ok());
  Status diverged = b.catch_up_worktree(project, task);
  CHECK(diverged.code == Code::kConflict);
  CHECK(diverged.message.find("diverged") != std::string::npos);
}

TEST_CASE("remove_worktree removes the worktree and keeps the branch, and a second removal does nothing") {
  TempDir dir;
  fs::path remote = make_remote(dir.path());
  TestLog log;
  DataLayout layout(dir.path() / "data");
  ProcessRunner runner;
  ProjectSpec project = config_with_remote(remote).projects[0];
  TaskRow task = task_row("SHOP-8");
  GitWorkspaces git_ws(layout, runner, Secret(), log);
  REQUIRE(git_ws.ensure_worktree(project, task).ok());
  std::ofstream(layout.worktree(task) / "scratch.txt") << "uncommitted\n";

  CHECK(git_ws.remove_worktree(project, task).ok());
  CHECK_FALSE(fs::exists(layout.worktree(task)));
  CHECK_FALSE(
      git({"rev-parse", "--verify", "refs/heads/orch/shop-8"}, layout.clone("shop"), dir.path() / "scratch").empty());
  const int ran = git_ws.commands_run();
  CHECK(git_ws.remove_worktree(project, task).ok());
  CHECK(git_ws.commands_run() == ran);

  auto back = git_ws.ensure_worktree(project, task);  // re-entering a stage later finds the branch again
  REQUIRE_MESSAGE(back.ok(), back.status().to_string());
  CHECK(back.value().created);

  fs::remove_all(layout.worktree(task));  // deleted by hand: git still has it registered; prune and add again
  auto rebuilt = git_ws.ensure_worktree(project, task);
  REQUIRE_MESSAGE(rebuilt.ok(), rebuilt.status().to_string());
  CHECK(rebuilt.value().created);
  CHECK(fs::exists(layout.worktree(task) / "README.md"));
}

TEST_CASE("push_branch publishes the task branch, and a branch already on the remote is continued, not restarted") {
  TempDir dir;
  fs::path remote = make_remote(dir.path());
  TestLog log;
  DataLayout layout(dir.path() / "data");
  ProcessRunner runner;
  ProjectSpec project = config_with_remote(remote).projects[0];
  TaskRow task = task_row("SHOP-9");
  GitWorkspaces git_ws(layout, runner, Secret(), log);
  REQUIRE(git_ws.ensure_worktree(project, task).ok());
  std::ofstream(layout.worktree(task) / "work.txt") << "work\n";
  git({"add", "work.txt"}, layout.worktree(task), dir.path() / "scratch");
  git({"commit", "--quiet", "-m", "work"}, layout.worktree(task), dir.path() / "scratch");

  REQUIRE(git_ws.push_branch(project, task).ok());
  auto head = git_ws.branch_head(project, task.branch);
  REQUIRE(head.ok());
  CHECK(head.value().size() == 40);
  CHECK(git({"rev-parse", "refs/heads/orch/shop-9"}, remote, dir.path() / "scratch") == head.value());
  CHECK(git_ws.push_branch(project, task).ok());  // up to date: fine

  // The data directory is lost; the pushed branch is on the remote: the new worktree continues from it.
  TempDir fresh;
  DataLayout layout2(fresh.path() / "data");
  GitWorkspaces git2(layout2, runner, Secret(), log);
  auto again = git2.ensure_worktree(project, task);
  REQUIRE_MESSAGE(again.ok(), again.status().to_string());
  CHECK(fs::exists(layout2.worktree(task) / "work.txt"));
}

TEST_CASE("git failures are values with git's own words, the token never shows, and unsafe branch names run no git") {
  TempDir dir;
  TestLog log;
  DataLayout layout(dir.path() / "data");
  ProcessRunner runner;
  ProjectSpec missing;
  missing.name = "shop";
  missing.clone_url = (dir.path() / "no-such-repo.git").string();
  GitWorkspaces git_ws(layout, runner, Secret("s3cret-token-value"), log);
  Status s = git_ws.ensure_clone(missing);
  CHECK(s.code == Code::kUnavailable);
  CHECK(s.message.find("git clone") != std::string::npos);
  CHECK(s.message.find("does not exist") != std::string::npos);
  CHECK_FALSE(fs::exists(layout.clone("shop")));
  CHECK_FALSE(fs::exists(layout.clone("shop").string() + ".partial"));

  ProjectSpec http = missing;
  http.clone_url = "http://127.0.0.1:9/acme/shop.git";  // nothing listens on the discard port
  Status h = git_ws.ensure_clone(http);
  CHECK_FALSE(h.ok());
  CHECK(h.message.find("s3cret") == std::string::npos);
  CHECK(log.all().find("s3cret") == std::string::npos);

  TaskRow bad = task_row("SHOP-1");
  const int ran = git_ws.commands_run();
  for (const char* name : {"--upload-pack=touch", "orch/../x", "orch/a b", "orch/x.lock", "-x", "orch/$(id)"}) {
    bad.branch = name;
    CHECK(git_ws.ensure_worktree(missing, bad).status().code == Code::kInvalid);
    CHECK(git_ws.push_branch(missing, bad).code == Code::kInvalid);
  }
  CHECK(git_ws.commands_run() == ran);
  CHECK(is_safe_branch_name(branch_for("../../$(touch pwned)", "x")));
}

TEST_CASE(
    "the worktree lifecycle runs no git on entering a working stage or on replay, and a worker removes the "
    "worktree at done") {
  TempDir remote_dir;
  fs::path remote = make_remote(remote_dir.path());
  // No stage has an agent here, so the pool's workers only remove worktrees: a job's own ensure_worktree would run
  // git on a worker while the test counts what entering a stage runs.
  Config config = config_with_remote(remote);
  for (StageSpec& s : config.stages) s.agent.clear();
  EngineFixture f(config);
  ProcessRunner runner;
  GitWorkspaces git_ws(f.layout, runner, Secret(), f.log);
  WorktreeLifecycle lifecycle(git_ws, f.config, f.pipeline);
  // The removal runs on a worker of a real pool, not on the thread that fired the transition.
  AttemptPolicy attempts(*f.store, f.pipeline, WriteBack::off(), f.clock, f.log);
  JobRunner jobs(
      JobRunnerDeps{*f.store, f.engine, attempts, git_ws, runner, f.gitea, f.config, f.layout, f.clock, f.log});
  std::atomic<std::thread::id> removed_on{};
  WorkerPool pool(jobs, *f.store, f.clock, f.log, [&](const TaskRow& t) {
    removed_on = std::this_thread::get_id();
    return lifecycle.remove(t);
  });
  lifecycle.subscribe_to(f.bus, pool);
  pool.start();

  // Entering a working stage makes nothing: the worker makes the worktree before the job runs (ADR 0006), so a
  // webhook burst or a start-up replay of many tasks runs no git on the threads that handle them.
  TaskRow task = f.task_in("analysis", "SHOP-42");
  CHECK_FALSE(fs::exists(f.layout.worktree(task)));
  auto replayed = f.engine.replay_non_terminal();
  REQUIRE(replayed.ok());
  CHECK(replayed.value() == 1);
  CHECK(git_ws.commands_run() == 0);

  // What the worker does before a job; then every later stage keeps it, and done removes it.
  REQUIRE(git_ws.ensure_worktree(*f.config.find_project("shop"), task).ok());
  CHECK(fs::exists(f.layout.worktree(task) / ".git"));
  const int ran = git_ws.commands_run();
  for (const char* stage : {"development", "review"}) {
    AdvanceRequest r;
    r.to = stage;
    REQUIRE(f.engine.advance_stage(task.id, r).ok());
    CHECK(fs::exists(f.layout.worktree(task) / ".git"));
  }
  CHECK(git_ws.commands_run() == ran);
  AdvanceRequest done;
  done.to = "done";
  REQUIRE(f.engine.advance_stage(task.id, done).ok());
  CHECK(eventually([&] { return !fs::exists(f.layout.worktree(task)); }));
  CHECK(removed_on.load() != std::thread::id{});
  CHECK(removed_on.load() != std::this_thread::get_id());
  CHECK_FALSE(
      git({"rev-parse", "--verify", "refs/heads/orch/shop-42"}, f.layout.clone("shop"), remote_dir.path() / "scratch")
          .empty());
  // A duplicate done event finds nothing to remove.
  const int after_done = git_ws.commands_run();
  CHECK(lifecycle.remove(*f.store->find_task(task.id).value()).ok());
  CHECK(git_ws.commands_run() == after_done);
  CHECK_FALSE(f.log.contains("subscriber worktree lifecycle failed"));
}
