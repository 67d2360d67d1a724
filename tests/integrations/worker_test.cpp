#include <doctest/doctest.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <atomic>
#include <thread>

#include <nlohmann/json.hpp>

#include "app/admin_actions.h"
#include "app/queue_document.h"
#include "integrations/git.h"
#include "integrations/gitea_client.h"
#include "integrations/http_client.h"
#include "integrations/worker_pool.h"
#include "reconciler/sweeper.h"
#include "tests/fakes/fake_gitea.h"
#include "tests/fakes/recording_sleeper.h"
#include "tests/support/engine_fixture.h"
#include "tests/support/git_repo.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

fs::path write_script(const fs::path& dir, const std::string& name, const std::string& body) {
  fs::create_directories(dir);
  fs::path p = dir / name;
  std::ofstream(p) << "#!/bin/sh\n" << body;
  fs::permissions(p, fs::perms::owner_all);
  return p;
}

using Scripts = std::map<std::string, std::string>;  // agent name -> body of its /bin/sh script

// The real engine over a bare remote made in the test, with the agents' argv pointing at scripts the test writes.
struct WorkerFixture {
  explicit WorkerFixture(const Scripts& scripts, WorkerOptions o = fast_options(),
                         const std::function<void(Config&)>& tweak = {})
      : remote(make_remote(remote_dir.path())),
        f(config_for(remote, remote_dir.path(), scripts, tweak)),
        git_ws(f.layout, processes, Secret(), f.log),
        options(o),
        attempts(*f.store, f.pipeline, WriteBack::off(), f.clock, f.log, options.attempts),
        runner(
            JobRunnerDeps{*f.store, f.engine, attempts, git_ws, processes, f.gitea, f.config, f.layout, f.clock, f.log},
            options) {}

  static WorkerOptions fast_options() {
    WorkerOptions o;
    o.heartbeat_interval = 50ms;
    o.poll_interval = 200ms;
    o.kill_grace = 300ms;
    o.attempts.retry_backoff = 30s;
    return o;
  }

  static Config config_for(const fs::path& remote, const fs::path& dir, const Scripts& scripts,
                           const std::function<void(Config&)>& tweak) {
    Config c = default_config();
    c.projects[0].clone_url = remote.string();
    for (const auto& [agent, body] : scripts)
      c.agents[agent].argv = {write_script(dir / "agents", agent, body).string()};
    for (auto& [name, agent] : c.agents) agent.env = {{"OUT", (dir / "out").string()}, {"MODEL", "large"}};
    fs::create_directories(dir / "out");
    if (tweak) tweak(c);
    return c;
  }

  // Claims the next job for `stage`, running (and so abandoning) superseded jobs of earlier stages on the way.
  JobRow claim(const std::string& stage) {
    while (true) {
      auto claimed = f.store->claim_job("test/0", f.clock.now());
      REQUIRE(claimed.ok());
      REQUIRE_MESSAGE(claimed.value(), "no claimable job for " << stage);
      if (claimed.value()->stage == stage) return *claimed.value();
      CHECK(runner.run(*claimed.value()).outcome == JobOutcome::kAbandoned);
    }
  }

  fs::path out() const { return remote_dir.path() / "out"; }

  TempDir remote_dir;
  fs::path remote;
  EngineFixture f;
  ProcessRunner processes;
  GitWorkspaces git_ws;
  WorkerOptions options;
  AttemptPolicy attempts;
  JobRunner runner;
};

bool group_gone(pid_t pgid) { return ::kill(-pgid, 0) == -1 && errno == ESRCH; }

}  // namespace

TEST_CASE("an agent that succeeds gets its work pushed, the PR opened, and the task advanced through its gate") {
  WorkerFixture w(Scripts{{"developer",
                           "set -e\n"
                           "echo \"work for $ORCH_WORK_ITEM_KEY\" > work.txt\n"
                           "git add work.txt\n"
                           "git -c user.name=agent -c user.email=agent@example.com commit -q -m work\n"
                           "echo done\n"}});
  TaskRow task = w.f.task_in("development", "SHOP-5");
  w.f.gitea.set_branch(task.branch, "cafe123");  // CI is green on the pushed head
  w.f.gitea.set_status("cafe123", CiState::kSuccess);

  JobRow job = w.claim("development");
  JobResult r = w.runner.run(job);
  CHECK_MESSAGE(r.outcome == JobOutcome::kSucceeded, r.detail);

  TaskRow after = w.f.reload(task.id);
  CHECK(after.stage == "review");
  REQUIRE(after.pr_number);
  CHECK(*after.pr_number == 1);
  const std::string pushed = git({"rev-parse", "refs/heads/orch/shop-5"}, w.remote, w.remote_dir.path() / "scratch");
  CHECK(after.head_sha == pushed);
  CHECK(git({"show", "refs/heads/orch/shop-5:work.txt"}, w.remote, w.remote_dir.path() / "scratch") ==
        "work for SHOP-5");
  auto transitions = w.f.store->transitions_for_task(task.id).value();
  CHECK(transitions.back().from == "development");
  CHECK(transitions.back().to == "review");
  CHECK(transitions.back().cause == Cause::kAgent);
  CHECK(w.f.store->find_job(job.id).value()->status == JobStatus::kSucceeded);
  auto queued = w.f.store->jobs_with_status(JobStatus::kQueued, 10).value();
  REQUIRE(queued.size() == 1);  // the reviewer, queued by the scheduler on the transition
  CHECK(queued[0].agent == "reviewer");
  const std::string log = read_file(w.f.layout.job_log(job.id));
  CHECK(log.find("[orch] job " + std::to_string(job.id) + ": developer for SHOP-5") != std::string::npos);
  CHECK(log.find("done\n") != std::string::npos);
  CHECK(log.find("[orch] exit 0") != std::string::npos);
}

TEST_CASE("a red gate after a successful agent is not a failure: the task waits in its stage") {
  WorkerFixture w(Scripts{{"developer", "exit 0\n"}});
  TaskRow task = w.f.task_in("development", "SHOP-6");
  JobRow job = w.claim("development");
  JobResult r = w.runner.run(job);
  CHECK(r.outcome == JobOutcome::kSucceeded);
  TaskRow after = w.f.reload(task.id);
  CHECK(after.stage == "development");
  CHECK_FALSE(after.blocked);
  CHECK(w.f.store->find_job(job.id).value()->status == JobStatus::kSucceeded);
  CHECK(w.f.log.contains("jobs: developer succeeded for SHOP-6 in development; waiting"));
}

TEST_CASE("a failing agent is retried with exponential backoff, then the task is blocked with one notification") {
  WorkerFixture w(Scripts{{"analyst", "echo \"$ORCH_ATTEMPT\" >> \"$OUT/attempts\"\nexit 3\n"}});
  TaskRow task = w.f.task_in("analysis", "SHOP-3");

  JobRow first = w.claim("analysis");
  JobResult r1 = w.runner.run(first);
  CHECK(r1.outcome == JobOutcome::kRetrying);
  CHECK(w.f.store->find_job(first.id).value()->status == JobStatus::kFailed);
  CHECK(w.f.store->find_job(first.id).value()->error == "agent exited 3");
  CHECK_FALSE(w.f.store->claim_job("test/0", w.f.clock.now()).value());  // backing off
  w.f.clock.advance(29s);
  CHECK_FALSE(w.f.store->claim_job("test/0", w.f.clock.now()).value());
  w.f.clock.advance(1s);
  auto second = w.f.store->claim_job("test/0", w.f.clock.now()).value();
  REQUIRE(second);
  CHECK(second->attempt == 2);
  CHECK(w.runner.run(*second).outcome == JobOutcome::kRetrying);
  w.f.clock.advance(59s);  // the second wait is twice the first
  CHECK_FALSE(w.f.store->claim_job("test/0", w.f.clock.now()).value());
  w.f.clock.advance(1s);
  auto third = w.f.store->claim_job("test/0", w.f.clock.now()).value();
  REQUIRE(third);
  CHECK(third->attempt == 3);
  JobResult r3 = w.runner.run(*third);
  CHECK(r3.outcome == JobOutcome::kBlocked);

  TaskRow after = w.f.reload(task.id);
  CHECK(after.blocked);
  CHECK(after.stage == "analysis");
  CHECK(after.blocked_reason == "analyst failed attempt 3 of 3: agent exited 3");
  auto notes = w.f.store->all_notifications().value();
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].dedup_key == "blocked:" + std::to_string(task.id) + ":" + std::to_string(task.visit));
  CHECK(notes[0].text.find("SHOP-3 is blocked in analysis") != std::string::npos);
  CHECK(read_file(w.out() / "attempts") == "1\n2\n3\n");
  w.f.clock.advance(24h);
  CHECK_FALSE(w.f.store->claim_job("test/0", w.f.clock.now()).value());  // no fourth attempt
  CHECK(w.f.log.contains("jobs: SHOP-3 blocked in analysis"));
}

TEST_CASE("a hanging agent is killed at its timeout with its whole process group, heartbeating until then") {
  ProcessRunner::become_child_subreaper();  // so the killed background child is reaped here, not left a zombie
  WorkerFixture w(Scripts{{"analyst",
                           "echo $$ > \"$OUT/pgid\"\n"
                           "sleep 1000 &\n"
                           "echo $! > \"$OUT/child\"\n"
                           "sleep 1000\n"}},
                  WorkerFixture::fast_options(), [](Config& c) { c.agents["analyst"].timeout = 2s; });
  w.f.task_in("analysis", "SHOP-4");
  JobRow job = w.claim("analysis");

  JobResult result;
  std::thread worker([&] { result = w.runner.run(job); });
  REQUIRE(eventually([&] { return fs::exists(w.out() / "child") && fs::file_size(w.out() / "child") > 0; }, 10s));
  w.f.clock.advance(10s);
  const TimePoint later = w.f.clock.now();
  CHECK(eventually([&] { return w.f.store->find_job(job.id).value()->heartbeat_at == later; }, 5s));
  worker.join();

  CHECK(result.outcome == JobOutcome::kRetrying);
  CHECK(result.detail.find("timed out") != std::string::npos);
  const pid_t pgid = std::stoi(read_file(w.out() / "pgid"));
  const pid_t child = std::stoi(read_file(w.out() / "child"));
  CHECK(group_gone(pgid));
  CHECK((::kill(child, 0) == -1 && errno == ESRCH));
  JobRow after = *w.f.store->find_job(job.id).value();
  CHECK(after.status == JobStatus::kFailed);
  CHECK(after.error.find("timed out") != std::string::npos);
}

TEST_CASE("hostile text in the title reaches the agent only as data, and names stay sanitised") {
  const std::string hostile_title = "$(touch pwned) `touch pwned` ../../etc/passwd; rm -rf /";
  const std::string hostile_key = "../../$(touch pwned)";
  WorkerFixture w(Scripts{{"analyst", "cp \"$ORCH_TASK_JSON\" \"$OUT/task.json\"\nenv > \"$OUT/env.txt\"\n"}});
  ::setenv("ORCH_TEST_LEAK", "leaked", 1);  // set in orch's own environment: the agent must not see it

  NewTask t{"shop",
            "../wi-$(touch pwned)",
            hostile_key,
            hostile_title,
            "desc with $(touch pwned)\n\"quoted\"",
            branch_for(hostile_key, "../wi-$(touch pwned)")};
  auto claim = w.f.store->create_task_atomic(t, w.f.clock.now());
  REQUIRE(claim.ok());
  AdvanceRequest enter;
  enter.to = "analysis";
  REQUIRE(w.f.engine.advance_stage(claim.value().task.id, enter).ok());
  TaskRow task = w.f.reload(claim.value().task.id);

  JobRow job = w.claim("analysis");
  JobResult r = w.runner.run(job);
  ::unsetenv("ORCH_TEST_LEAK");
  CHECK_MESSAGE(r.outcome == JobOutcome::kSucceeded, r.detail);

  CHECK_FALSE(fs::exists(fs::current_path() / "pwned"));  // where a shell run by orch itself would have made it
  for (const fs::path& root : {w.remote_dir.path(), w.f.dir.path()})
    for (const auto& entry : fs::recursive_directory_iterator(root))
      CHECK_MESSAGE(entry.path().filename() != "pwned", entry.path().string());

  auto json = nlohmann::json::parse(read_file(w.out() / "task.json"), nullptr, false);
  REQUIRE_FALSE(json.is_discarded());
  CHECK(json["title"] == hostile_title);
  CHECK(json["description"] == "desc with $(touch pwned)\n\"quoted\"");
  CHECK(json["work_item_key"] == hostile_key);
  CHECK(json["task_id"] == task.id);
  CHECK(json["job_id"] == job.id);
  CHECK(json["stage"] == "analysis");
  CHECK(json["attempt"] == 1);
  CHECK(json["branch"] == "orch/touch-pwned");
  CHECK(json["pr_number"].is_null());
  CHECK(json.contains("rejection_reason"));
  CHECK(json.contains("head_sha"));
  CHECK(json.contains("project"));
  CHECK(json.contains("work_item_id"));

  CHECK(task.branch == "orch/touch-pwned");
  const fs::path worktree = w.f.layout.worktree(task);
  CHECK(worktree.parent_path() == w.f.layout.root() / "worktrees" / "shop");
  CHECK(worktree.filename() == "touch-pwned");
  CHECK(fs::exists(worktree / ".git"));

  const std::string env = read_file(w.out() / "env.txt");
  CHECK(env.find("ORCH_TEST_LEAK") == std::string::npos);
  std::set<std::string> names;
  std::istringstream lines(env);
  for (std::string line; std::getline(lines, line);)
    if (auto eq = line.find('='); eq != std::string::npos && eq > 0) names.insert(line.substr(0, eq));
  const std::set<std::string> allowed = {"ORCH_TASK_ID",
                                         "ORCH_WORK_ITEM_ID",
                                         "ORCH_WORK_ITEM_KEY",
                                         "ORCH_PROJECT",
                                         "ORCH_STAGE",
                                         "ORCH_BRANCH",
                                         "ORCH_WORKTREE",
                                         "ORCH_ATTEMPT",
                                         "ORCH_REJECTION_REASON",
                                         "ORCH_TASK_JSON",
                                         "ORCH_OUTPUT_DIR",
                                         "PATH",
                                         "HOME",
                                         "OUT",
                                         "MODEL",
                                         "PWD",
                                         "OLDPWD",
                                         "SHLVL",
                                         "_"};  // the last four are the shell's own
  for (const auto& n : names) CHECK_MESSAGE(allowed.count(n) == 1, "unexpected variable " << n);
  CHECK(env.find("ORCH_TASK_ID=" + std::to_string(task.id) + "\n") != std::string::npos);
  CHECK(env.find("ORCH_STAGE=analysis\n") != std::string::npos);
  CHECK(env.find("ORCH_BRANCH=orch/touch-pwned\n") != std::string::npos);
  CHECK(env.find("ORCH_WORKTREE=" + worktree.string() + "\n") != std::string::npos);
  CHECK(env.find("HOME=" + worktree.string() + "\n") != std::string::npos);
  CHECK(env.find("PATH=/usr/local/bin:/usr/bin:/bin\n") != std::string::npos);
  CHECK(env.find("ORCH_ATTEMPT=1\n") != std::string::npos);
  CHECK(env.find("MODEL=large\n") != std::string::npos);
  CHECK(env.find("ORCH_TASK_JSON=" + w.f.layout.task_json(job.id).string() + "\n") != std::string::npos);
  CHECK(env.find("ORCH_OUTPUT_DIR=" + fs::absolute(w.f.layout.job_output(job.id)).lexically_normal().string() + "\n") !=
        std::string::npos);
}

TEST_CASE("the job log is capped: the start and the end of the output are kept, the middle is dropped") {
  WorkerOptions o = WorkerFixture::fast_options();
  o.log_cap_bytes = 64 * 1024;
  WorkerFixture w(
      Scripts{{"analyst", "echo FIRST-LINE\nhead -c 3000000 /dev/zero | tr '\\0' x\necho\necho LAST-LINE\n"}}, o);
  w.f.task_in("analysis", "SHOP-2");
  JobRow job = w.claim("analysis");
  CHECK(w.runner.run(job).outcome == JobOutcome::kSucceeded);
  const fs::path log = w.f.layout.job_log(job.id);
  CHECK(fs::file_size(log) <= o.log_cap_bytes + 1024);
  const std::string text = read_file(log);
  CHECK(text.find("FIRST-LINE") != std::string::npos);
  CHECK(text.find("LAST-LINE") != std::string::npos);
  CHECK(text.find("bytes of output omitted here: the job log is capped") != std::string::npos);
  CHECK(text.find("[orch] exit 0") != std::string::npos);
}

TEST_CASE("a job whose task moved on is abandoned without running its agent or retrying") {
  WorkerFixture w(Scripts{{"analyst", "touch \"$OUT/ran\"\n"}});
  TaskRow task = w.f.task_in("analysis", "SHOP-9");
  AdvanceRequest r;
  r.to = "development";
  REQUIRE(w.f.engine.advance_stage(task.id, r).ok());
  auto claimed = w.f.store->claim_job("test/0", w.f.clock.now()).value();
  REQUIRE(claimed);
  CHECK(claimed->stage == "analysis");
  JobResult result = w.runner.run(*claimed);
  CHECK(result.outcome == JobOutcome::kAbandoned);
  CHECK(result.detail.find("superseded") != std::string::npos);
  CHECK_FALSE(fs::exists(w.out() / "ran"));
  CHECK(w.f.store->find_job(claimed->id).value()->status == JobStatus::kFailed);
  CHECK_FALSE(w.f.reload(task.id).blocked);
}

TEST_CASE(
    "a running agent whose task moves on is stopped at its next heartbeat, its job failed as superseded, "
    "and the worker is free for the next stage") {
  // The agent writes its pid then becomes `sleep`: the pid is the process the runner must stop.
  // Its timeout (60 s) bounds the test if the agent were not stopped: it would end as an attempt that failed.
  WorkerFixture w(
      Scripts{{"analyst", "echo $$ > \"$OUT/pid.tmp\" && mv \"$OUT/pid.tmp\" \"$OUT/pid\"\nexec sleep 1000\n"}},
      WorkerFixture::fast_options(), [](Config& c) { c.agents["analyst"].timeout = 60s; });
  TaskRow task = w.f.task_in("analysis", "SHOP-4");
  JobRow job = w.claim("analysis");
  JobResult result;
  std::jthread running([&] { result = w.runner.run(job); });
  REQUIRE(eventually([&] { return fs::exists(w.out() / "pid"); }, 30s));
  const pid_t agent = static_cast<pid_t>(std::stol(read_file(w.out() / "pid")));

  AdvanceRequest r;
  r.to = "development";  // a human moved the item on while the analyst ran
  REQUIRE(w.f.engine.advance_stage(task.id, r).ok());
  running.join();  // bounded by the heartbeat (50 ms) and the kill grace, not by the agent's 1000 s

  CHECK(result.outcome == JobOutcome::kAbandoned);
  CHECK(result.detail.find("superseded: task is in development") != std::string::npos);
  const JobRow row = *w.f.store->find_job(job.id).value();
  CHECK(row.status == JobStatus::kFailed);
  CHECK(row.error.find("superseded") != std::string::npos);
  CHECK(::kill(agent, 0) != 0);  // the agent is gone, not left running behind us
  CHECK_FALSE(w.f.reload(task.id).blocked);
  CHECK(w.f.store->jobs_for_task(task.id).value().size() == 2);  // no retry of the analysis, the development job
  CHECK(w.f.log.contains("jobs: analyst for SHOP-4 stopped: superseded"));
}

TEST_CASE(
    "a running agent whose stage a person re-runs is not stopped: it finishes, its result does not count, and the "
    "new visit's job is claimable only after it") {
  // The agent runs until the test creates `release`; its timeout (60 s) bounds the test.
  WorkerFixture w(Scripts{{"developer",
                           "echo $$ > \"$OUT/pid.tmp\" && mv \"$OUT/pid.tmp\" \"$OUT/pid\"\n"
                           "while [ ! -e \"$OUT/release\" ]; do sleep 0.02; done\nexit 0\n"}},
                  WorkerFixture::fast_options(), [](Config& c) { c.agents["developer"].timeout = 60s; });
  TaskRow task = w.f.task_in("development", "SHOP-5");
  JobRow job = w.claim("development");
  JobResult result;
  std::jthread running([&] { result = w.runner.run(job); });
  REQUIRE(eventually([&] { return fs::exists(w.out() / "pid"); }, 30s));

  AdvanceRequest r;
  r.to = "development";
  r.rerun = true;
  auto rerun = w.f.engine.advance_stage(task.id, r);
  REQUIRE_MESSAGE(rerun.ok(), rerun.status().message);
  CHECK(rerun.value().visit == task.visit + 1);
  // A heartbeat after the re-run (it writes the clock's new time) saw the task back in its stage, and let it run.
  w.f.clock.advance(1s);
  REQUIRE(eventually([&] { return w.f.store->find_job(job.id).value()->heartbeat_at == w.f.clock.now(); }, 30s));
  // The new visit's job waits for this one: one running job per task.
  CHECK_FALSE(w.f.store->claim_job("test/1", w.f.clock.now()).value().has_value());
  std::ofstream(w.out() / "release") << "go";
  running.join();

  CHECK(result.outcome == JobOutcome::kAbandoned);
  CHECK(result.detail.find("superseded: task is in development (visit " + std::to_string(task.visit + 1)) !=
        std::string::npos);
  CHECK_FALSE(w.f.log.contains("stopped: superseded"));
  CHECK(read_file(w.f.layout.job_log(job.id)).find("[orch] exit 0") != std::string::npos);
  auto next = w.f.store->claim_job("test/1", w.f.clock.now()).value();
  REQUIRE(next.has_value());
  CHECK(next->visit == task.visit + 1);
  CHECK(next->stage == "development");
}

TEST_CASE(
    "start-up recovery queues the next attempt of jobs a dead worker left running, blocks those on their last "
    "attempt, and leaves live workers' jobs alone") {
  WorkerFixture w(Scripts{{"analyst", "exit 0\n"}});
  TaskRow a = w.f.task_in("analysis", "SHOP-1");
  TaskRow b = w.f.task_in("analysis", "SHOP-2");
  TaskRow c = w.f.task_in("analysis", "SHOP-3");
  // SHOP-2's interrupted job is its last attempt (3 of 3): attempt 1 failed, attempt 3 enqueued and claimed by hand.
  auto dead1 = w.f.store->claim_job("99999999/0", w.f.clock.now()).value();  // SHOP-1, a pid that cannot exist
  REQUIRE(dead1);
  CHECK(dead1->task_id == a.id);
  auto b1 = w.f.store->claim_job("99999999/1", w.f.clock.now()).value();
  REQUIRE(b1);
  CHECK(w.f.store->finish_job(b1->id, JobStatus::kFailed, "x", w.f.clock.now()).ok());
  auto live = w.f.store->claim_job("1/0", w.f.clock.now()).value();  // SHOP-3: pid 1 is alive
  REQUIRE(live);
  CHECK(live->task_id == c.id);
  REQUIRE(w.f.store->enqueue_job({b.id, b.visit, "analysis", "analyst", 3, w.f.clock.now()}, w.f.clock.now()).ok());
  auto b3 = w.f.store->claim_job("99999999/1", w.f.clock.now()).value();
  REQUIRE(b3);
  CHECK(b3->attempt == 3);

  RecoveryReport report = recover_interrupted_jobs(*w.f.store, w.attempts, w.options.replica_id, w.f.clock, w.f.log);
  CHECK(report.requeued == 1);
  CHECK(report.blocked == 1);
  CHECK(report.skipped == 1);

  auto a_jobs = w.f.store->jobs_for_task(a.id).value();
  REQUIRE(a_jobs.size() == 2);
  CHECK(a_jobs[0].status == JobStatus::kFailed);
  CHECK(a_jobs[0].error.find("interrupted") != std::string::npos);
  CHECK(a_jobs[1].status == JobStatus::kQueued);
  CHECK(a_jobs[1].attempt == 2);
  CHECK(a_jobs[1].run_after == w.f.clock.now());  // an interruption is not the agent's fault: no backoff
  CHECK(w.f.reload(b.id).blocked);
  CHECK(w.f.store->find_job(live->id).value()->status == JobStatus::kRunning);
  CHECK(w.f.log.contains("jobs: start-up recovery: 1 interrupted job(s) queued again, 1 blocked"));

  RecoveryReport second = recover_interrupted_jobs(*w.f.store, w.attempts, w.options.replica_id, w.f.clock,
                                                   w.f.log);  // a second pass changes nothing
  CHECK(second.requeued + second.blocked == 0);
}

TEST_CASE(
    "a job the sweeper fails goes through the worker's rule: an orphan runs again at once, its last attempt "
    "blocks the task, an expired one blocks it") {
  WorkerFixture w(Scripts{{"analyst", "exit 0\n"}});
  JobsSpec spec;  // heartbeat_stale 150 s, queued_ttl 2 h
  Sweeper sweeper(*w.f.store, w.attempts, w.f.pipeline, spec, w.f.clock, w.f.log);
  TaskRow a = w.f.task_in("analysis", "SHOP-1");
  TaskRow b = w.f.task_in("analysis", "SHOP-2");
  // SHOP-2's running job is its last attempt (3 of 3).
  auto a1 = w.f.store->claim_job("other-host/7/0", w.f.clock.now()).value();
  REQUIRE(a1);
  REQUIRE(a1->task_id == a.id);
  auto b1 = w.f.store->claim_job("other-host/7/1", w.f.clock.now()).value();
  REQUIRE(b1);
  CHECK(w.f.store->finish_job(b1->id, JobStatus::kFailed, "x", w.f.clock.now()).ok());
  REQUIRE(w.f.store->enqueue_job({b.id, b.visit, "analysis", "analyst", 3, w.f.clock.now()}, w.f.clock.now()).ok());
  auto b3 = w.f.store->claim_job("other-host/7/1", w.f.clock.now()).value();
  REQUIRE(b3);
  REQUIRE(b3->attempt == 3);

  w.f.clock.advance(151s);  // the other host died: no heartbeat since
  SweepReport r = sweeper.run_once();
  CHECK(r.orphaned == 2);
  CHECK(r.retried == 1);
  CHECK(r.blocked == 1);
  auto a_jobs = w.f.store->jobs_for_task(a.id).value();
  REQUIRE(a_jobs.size() == 2);
  CHECK(a_jobs[0].status == JobStatus::kFailed);
  CHECK(a_jobs[0].error.find("orphaned") != std::string::npos);
  CHECK(a_jobs[1].status == JobStatus::kQueued);
  CHECK(a_jobs[1].attempt == 2);
  CHECK(a_jobs[1].run_after == w.f.clock.now());  // a dead host is not the agent's fault: no backoff
  CHECK_FALSE(w.f.reload(a.id).blocked);
  const TaskRow blocked = w.f.reload(b.id);
  CHECK(blocked.blocked);
  CHECK(blocked.blocked_reason.find("orphaned") != std::string::npos);
  CHECK(w.f.log.contains("sweeper: failed 2 orphaned, 0 timed out, 0 expired job(s); 1 retried, 1 blocked"));

  // The requeued attempt is never taken (no worker for two hours): it expires and blocks SHOP-1 instead of leaving
  // it idle with a red gate.
  w.f.clock.advance(std::chrono::hours(2) + 1s);
  SweepReport later = sweeper.run_once();
  CHECK(later.expired == 1);
  CHECK(later.blocked == 1);
  CHECK(w.f.reload(a.id).blocked);
  CHECK(w.f.reload(a.id).blocked_reason.find("expired") != std::string::npos);
  CHECK(w.f.store->jobs_for_task(a.id).value().size() == 2);  // no third attempt
  CHECK(sweeper.run_once().changed() == 0);                   // and a further pass changes nothing
}

TEST_CASE("the pool runs queued jobs on its threads, wakes on poke, and stops promptly, requeueing a running agent") {
  WorkerFixture w(Scripts{{"analyst", "touch \"$OUT/started-$ORCH_TASK_ID\"\nsleep 1000\n"},
                          {"developer", "touch \"$OUT/dev-$ORCH_TASK_ID\"\n"}});
  WorkerOptions o = w.options;
  o.workers = 1;
  o.poll_interval = std::chrono::hours(1);  // only a poke can wake an idle worker in this test
  AttemptPolicy runner_attempts(*w.f.store, w.f.pipeline, WriteBack::off(), w.f.clock, w.f.log, o.attempts);
  JobRunner runner(JobRunnerDeps{*w.f.store, w.f.engine, runner_attempts, w.git_ws, w.processes, w.f.gitea, w.f.config,
                                 w.f.layout, w.f.clock, w.f.log},
                   o);
  WorkerPool pool(runner, *w.f.store, w.f.clock, w.f.log);
  pool.start();
  TaskRow task = w.f.task_in("development", "SHOP-1");  // an analysis job (superseded) and a development job
  // Each check pokes again: only pokes wake an idle worker here (the poll is an hour), and a claim that failed on a
  // busy database under load (logged, then back to waiting) must not leave the test waiting for that hour.
  const auto poked = [&](const fs::path& file) {
    pool.poke();
    return fs::exists(file);
  };
  CHECK(eventually([&] { return poked(w.out() / ("dev-" + std::to_string(task.id))); }, 60s));
  CHECK(eventually(
      [&] {
        return w.f.store->jobs_with_status(JobStatus::kQueued, 10).value().empty() &&
               w.f.store->jobs_with_status(JobStatus::kRunning, 10).value().empty();
      },
      20s));

  TaskRow hanging = w.f.task_in("analysis", "SHOP-2");
  REQUIRE(eventually([&] { return poked(w.out() / ("started-" + std::to_string(hanging.id))); }, 60s));
  auto before = std::chrono::steady_clock::now();
  pool.stop();
  CHECK(std::chrono::steady_clock::now() - before < 5s);
  auto jobs = w.f.store->jobs_for_task(hanging.id).value();
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0].status == JobStatus::kQueued);  // put back for the next start
  CHECK(jobs[0].attempt == 1);
}

TEST_CASE("the pool answers running() and liveness() from another thread while its owner starts and stops it") {
  // /readyz asks from an HTTP thread while the app starts or stops the pool. No assertion can see a data race in
  // a release build: the tsan preset fails this test when those reads are unsynchronised.
  WorkerFixture w(Scripts{{"analyst", "true\n"}});
  WorkerOptions o = w.options;
  o.workers = 2;
  AttemptPolicy runner_attempts(*w.f.store, w.f.pipeline, WriteBack::off(), w.f.clock, w.f.log, o.attempts);
  JobRunner runner(JobRunnerDeps{*w.f.store, w.f.engine, runner_attempts, w.git_ws, w.processes, w.f.gitea, w.f.config,
                                 w.f.layout, w.f.clock, w.f.log},
                   o);
  WorkerPool pool(runner, *w.f.store, w.f.clock, w.f.log);
  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  std::atomic<bool> bad_size{false};
  std::thread readiness([&] {
    while (!done.load()) {
      const bool running = pool.running();
      const auto live = pool.liveness();
      if (!live.empty() && live.size() != 2) bad_size = true;
      (void)running;
      ++reads;
    }
  });
  for (int round = 0; round < 5; ++round) {
    pool.start();
    CHECK(pool.running());
    const int seen = reads.load();
    CHECK(eventually([&] { return reads.load() > seen; }, 10s));  // the reader ran while the pool was up
    pool.stop();
    CHECK_FALSE(pool.running());
    CHECK(pool.liveness().empty());
  }
  done = true;
  readiness.join();
  CHECK_FALSE(bad_size.load());
}

TEST_CASE("two worker pools on one database file never run the same job twice") {
  // One echo is one write(2) with O_APPEND (">>"): lines from concurrent agents never interleave.
  WorkerFixture w(Scripts{{"analyst",
                           "id=$(grep -o '\"job_id\": [0-9]*' \"$ORCH_TASK_JSON\" | tr -dc '0-9')\n"
                           "echo \"$id\" >> \"$OUT/ids\"\n"}});
  // 100 jobs over 10 tasks: attempts 1..10 of each task's analysis visit, all due now.
  std::set<JobId> expected;
  for (int t = 1; t <= 10; ++t) {
    TaskRow task = w.f.task_in("analysis", "SHOP-" + std::to_string(t));
    w.f.plane.set_item(WorkItem{task.work_item_id, "p", t, "x", "", "In Progress", std::nullopt});  // gate stays red
    for (int attempt = 2; attempt <= 10; ++attempt)
      REQUIRE(w.f.store
                  ->enqueue_job({task.id, task.visit, "analysis", "analyst", attempt, w.f.clock.now()}, w.f.clock.now())
                  .ok());
  }
  const auto queued = w.f.store->jobs_with_status(JobStatus::kQueued, 1000);  // named: value() of a temporary dangles
  REQUIRE(queued.ok());
  for (const JobRow& j : queued.value()) expected.insert(j.id);
  REQUIRE(expected.size() == 100);

  // A second process, as far as the database is concerned: its own SqliteStore on the same file, its own engine.
  auto store2 = SqliteStore::open(w.f.dir.file("orch.db"));
  REQUIRE(store2.ok());
  EventBus bus2(w.f.log);
  StageEngine engine2(*store2.value(), w.f.pipeline, w.f.gates, bus2, w.f.clock, w.f.log);
  GitWorkspaces git2(w.f.layout, w.processes, Secret(), w.f.log);
  WorkerOptions o = w.options;
  o.workers = 4;
  AttemptPolicy runner1_attempts(*w.f.store, w.f.pipeline, WriteBack::off(), w.f.clock, w.f.log, o.attempts);
  JobRunner runner1(JobRunnerDeps{*w.f.store, w.f.engine, runner1_attempts, w.git_ws, w.processes, w.f.gitea,
                                  w.f.config, w.f.layout, w.f.clock, w.f.log},
                    o);
  AttemptPolicy runner2_attempts(*store2.value(), w.f.pipeline, WriteBack::off(), w.f.clock, w.f.log, o.attempts);
  JobRunner runner2(JobRunnerDeps{*store2.value(), engine2, runner2_attempts, git2, w.processes, w.f.gitea, w.f.config,
                                  w.f.layout, w.f.clock, w.f.log},
                    o);
  WorkerPool pool1(runner1, *w.f.store, w.f.clock, w.f.log);
  WorkerPool pool2(runner2, *store2.value(), w.f.clock, w.f.log);
  pool1.start();
  pool2.start();
  bool all_done = eventually(
      [&] { return w.f.store->jobs_with_status(JobStatus::kSucceeded, 1000).value().size() == expected.size(); }, 180s);
  pool1.stop();
  pool2.stop();
  REQUIRE(all_done);

  std::map<JobId, int> runs;
  std::istringstream lines(read_file(w.out() / "ids"));
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) ++runs[std::stoll(line)];
  CHECK(runs.size() == expected.size());
  for (JobId id : expected) CHECK_MESSAGE(runs[id] == 1, "job " << id << " ran " << runs[id] << " times");
  CHECK(w.f.store->jobs_with_status(JobStatus::kFailed, 1000).value().empty());
}

TEST_CASE("worker options from the [jobs] table heartbeat well inside the stale threshold") {
  JobsSpec jobs;  // 2 workers, stale after 150 s
  WorkerOptions o = worker_options_from(jobs);
  CHECK(o.workers == 2);
  CHECK(o.heartbeat_interval == 10s);
  jobs.heartbeat_stale = 20s;
  jobs.workers = 0;
  o = worker_options_from(jobs);
  CHECK(o.heartbeat_interval == 2s);
  CHECK(o.workers == 1);
}

TEST_CASE("start-up recovery leaves a job of another replica alone, and recovers its own replica's dead one") {
  WorkerFixture w(Scripts{{"analyst", "exit 0\n"}});
  TaskRow a = w.f.task_in("analysis", "SHOP-1");
  TaskRow b = w.f.task_in("analysis", "SHOP-2");
  // Same pid number, different hosts: the pid says nothing about a worker on another replica.
  auto theirs = w.f.store->claim_job("replica-b/99999999/0", w.f.clock.now()).value();
  auto ours = w.f.store->claim_job("replica-a/99999999/0", w.f.clock.now()).value();
  REQUIRE(theirs);
  REQUIRE(ours);
  WorkerOptions o = w.options;
  o.replica_id = "replica-a";
  AttemptPolicy runner_attempts(*w.f.store, w.f.pipeline, WriteBack::off(), w.f.clock, w.f.log, o.attempts);
  JobRunner runner(JobRunnerDeps{*w.f.store, w.f.engine, runner_attempts, w.git_ws, w.processes, w.f.gitea, w.f.config,
                                 w.f.layout, w.f.clock, w.f.log},
                   o);
  RecoveryReport report =
      recover_interrupted_jobs(*w.f.store, runner.attempts(), runner.options().replica_id, w.f.clock, w.f.log);
  CHECK(report.requeued == 1);
  CHECK(report.skipped == 1);
  CHECK(w.f.store->find_job(theirs->id).value()->status == JobStatus::kRunning);  // the sweeper's, not ours
  CHECK(w.f.store->find_job(ours->id).value()->status == JobStatus::kFailed);
  (void)a;
  (void)b;
}

// ---- follow-up steps (ADR 0010): push, open_pr and gate after the agent exited 0 ---------------------------------

namespace {

const std::string kStepRepo = "acme/shop";  // default_config()'s project
const std::string kStepMainSha = "1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e";

// Counts its runs in $OUT/runs and commits a change, so that push and PR have something to carry.
const std::string kCountingDeveloper =
    "set -e\n"
    "echo run >> \"$OUT/runs\"\n"
    "echo \"work $ORCH_ATTEMPT\" >> work.txt\n"
    "git add work.txt\n"
    "git -c user.name=agent -c user.email=agent@example.com commit -q -m work\n";

// The real GiteaClient over HTTP against a FakeGitea, for a JobRunner whose follow-up calls meet real 5xx answers.
struct HttpGitea {
  explicit HttpGitea(ManualClock& clock, spdlog::logger& log) : sleeper(clock) {
    fake.set_branch(kStepRepo, "main", kStepMainSha);
    HttpClientOptions o;
    o.name = "gitea";
    o.base_url = fake.base_url();
    http = std::make_unique<HttpClient>(o, sleeper, clock, log);
    client = std::make_unique<GiteaClient>(*http, Secret(""));
  }
  int pull_creates() const {
    int n = 0;
    for (const auto& r : fake.requests())
      if (r.method == "POST" && r.path.ends_with("/pulls")) ++n;
    return n;
  }
  FakeGitea fake;
  RecordingSleeper sleeper;
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<GiteaClient> client;
};

int lines_of(const fs::path& p) {
  std::string text = read_file(p);
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

}  // namespace

std::vector<JobRow> jobs_in(Store& store, TaskId task, const std::string& stage) {
  std::vector<JobRow> out;
  for (const JobRow& j : store.jobs_for_task(task).value())
    if (j.stage == stage) out.push_back(j);
  return out;
}

TEST_CASE(
    "a job whose PR creation answers 500 three times keeps its agent's success: the agent ran once and one PR "
    "exists") {
  WorkerFixture w(Scripts{{"developer", kCountingDeveloper}});
  HttpGitea gitea(w.f.clock, w.f.log);
  AttemptPolicy runner_attempts(*w.f.store, w.f.pipeline, WriteBack::off(), w.f.clock, w.f.log, w.options.attempts);
  JobRunner runner(JobRunnerDeps{*w.f.store, w.f.engine, runner_attempts, w.git_ws, w.processes, *gitea.client,
                                 w.f.config, w.f.layout, w.f.clock, w.f.log},
                   w.options);
  TaskRow task = w.f.task_in("development", "SHOP-7");
  gitea.fake.set_branch(kStepRepo, task.branch, "c0ffee0000000000000000000000000000000001");
  gitea.fake.fail_next_pull_creates(3, 500);

  JobRow job = w.claim("development");
  JobResult first = runner.run(job);
  CHECK_MESSAGE(first.outcome == JobOutcome::kStepRetrying, first.detail);
  JobRow waiting = w.f.store->find_job(job.id).value().value();
  CHECK(waiting.status == JobStatus::kQueued);  // not failed: the agent's success stands
  CHECK(waiting.attempt == 1);
  CHECK(waiting.step == "open_pr");
  CHECK(waiting.step_attempts == 1);
  CHECK(waiting.step_error.find("open_pr: ") == 0);
  // The step's own backoff, on the manual clock: 15 s after the first failed try.
  CHECK(waiting.run_after == w.f.clock.now() + 15s);
  w.f.clock.advance(14s);
  CHECK_FALSE(w.f.store->claim_job("test/0", w.f.clock.now()).value().has_value());

  // Whatever is due runs, as a worker would, until the task has its PR or gives up.
  for (int i = 0; i < 400 && !w.f.reload(task.id).pr_number && !w.f.reload(task.id).blocked; ++i) {
    auto claimed = w.f.store->claim_job("test/0", w.f.clock.now()).value();
    if (!claimed) {
      w.f.clock.advance(1s);
      continue;
    }
    CHECK(claimed->id == job.id);
    runner.run(*claimed);
  }

  const TaskRow after = w.f.reload(task.id);
  CHECK_FALSE(after.blocked);
  CHECK(lines_of(w.out() / "runs") == 1);  // the agent ran exactly once
  const auto pulls = gitea.fake.pulls(kStepRepo);
  REQUIRE(pulls.size() == 1);
  CHECK(pulls[0].head_ref == task.branch);
  REQUIRE(after.pr_number);
  CHECK(*after.pr_number == pulls[0].number);
  CHECK(gitea.pull_creates() == 4);  // three 500s, then the 201
  auto jobs = jobs_in(*w.f.store, task.id, "development");
  REQUIRE(jobs.size() == 1);  // one attempt, never a second run of the agent
  CHECK(jobs[0].status == JobStatus::kSucceeded);
  CHECK(jobs[0].attempt == 1);
  CHECK(jobs[0].step == "gate");
  CHECK(jobs[0].step_attempts == 0);
}

TEST_CASE(
    "a job left in a follow-up step by a process that died resumes that step after a restart, without "
    "running its agent again") {
  WorkerFixture w(Scripts{{"developer", kCountingDeveloper}});
  HttpGitea gitea(w.f.clock, w.f.log);
  TaskRow task = w.f.task_in("development", "SHOP-8");
  gitea.fake.set_branch(kStepRepo, task.branch, "c0ffee0000000000000000000000000000000002");
  gitea.fake.fail_next_pull_creates(1000, 502);
  JobId id = 0;
  {
    AttemptPolicy before_attempts(*w.f.store, w.f.pipeline, WriteBack::off(), w.f.clock, w.f.log, w.options.attempts);
    JobRunner before(JobRunnerDeps{*w.f.store, w.f.engine, before_attempts, w.git_ws, w.processes, *gitea.client,
                                   w.f.config, w.f.layout, w.f.clock, w.f.log},
                     w.options);
    JobRow job = w.claim("development");
    id = job.id;
    CHECK(before.run(job).outcome == JobOutcome::kStepRetrying);
    // The retry is claimed by a worker whose process then dies in the middle of the step: the row stays running.
    w.f.clock.advance(15s);
    auto dying = w.f.store->claim_job("99999999/0", w.f.clock.now()).value();
    REQUIRE(dying);
    REQUIRE(dying->id == id);
  }
  CHECK(lines_of(w.out() / "runs") == 1);
  gitea.fake.fail_next_pull_creates(0);

  // A new process: its own store over the same SQLite file, its own engine and runner.
  auto reopened = SqliteStore::open(w.f.dir.file("orch.db"));
  REQUIRE(reopened.ok());
  std::unique_ptr<SqliteStore> store = std::move(reopened).value();
  StageEngine engine(*store, w.f.pipeline, w.f.gates, w.f.bus, w.f.clock, w.f.log);
  AttemptPolicy after_attempts(*store, w.f.pipeline, WriteBack::off(), w.f.clock, w.f.log, w.options.attempts);
  JobRunner after(JobRunnerDeps{*store, engine, after_attempts, w.git_ws, w.processes, *gitea.client, w.f.config,
                                w.f.layout, w.f.clock, w.f.log},
                  w.options);
  RecoveryReport report =
      recover_interrupted_jobs(*store, after.attempts(), after.options().replica_id, w.f.clock, w.f.log);
  CHECK(report.requeued == 1);
  CHECK(report.blocked == 0);
  JobRow queued = store->find_job(id).value().value();
  CHECK(queued.status == JobStatus::kQueued);
  CHECK(queued.attempt == 1);
  CHECK(queued.step == "open_pr");
  CHECK(queued.step_attempts == 1);  // the interrupted try is not counted: it never reported
  CHECK(w.f.log.contains("jobs: job " + std::to_string(id) + " resumes step open_pr after a restart"));

  auto resumed = store->claim_job("test/0", w.f.clock.now()).value();
  REQUIRE(resumed);
  CHECK(resumed->id == id);
  JobResult r = after.run(*resumed);
  CHECK_MESSAGE(r.outcome == JobOutcome::kSucceeded, r.detail);
  CHECK(lines_of(w.out() / "runs") == 1);  // the agent did not run again
  REQUIRE(gitea.fake.pulls(kStepRepo).size() == 1);
  CHECK(store->find_task(task.id).value()->pr_number == gitea.fake.pulls(kStepRepo)[0].number);
  auto jobs = jobs_in(*store, task.id, "development");
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0].status == JobStatus::kSucceeded);
}

TEST_CASE(
    "a follow-up step out of budget fails its job with the step's error and blocks the task, and the agent "
    "ran once") {
  WorkerOptions o = WorkerFixture::fast_options();
  o.step_max_attempts = 3;
  WorkerFixture w(Scripts{{"developer", kCountingDeveloper}}, o);
  HttpGitea gitea(w.f.clock, w.f.log);
  AttemptPolicy runner_attempts(*w.f.store, w.f.pipeline, WriteBack::off(), w.f.clock, w.f.log, w.options.attempts);
  JobRunner runner(JobRunnerDeps{*w.f.store, w.f.engine, runner_attempts, w.git_ws, w.processes, *gitea.client,
                                 w.f.config, w.f.layout, w.f.clock, w.f.log},
                   w.options);
  TaskRow task = w.f.task_in("development", "SHOP-9");
  gitea.fake.set_branch(kStepRepo, task.branch, "c0ffee0000000000000000000000000000000003");
  gitea.fake.fail_next_pull_creates(1000, 500);

  JobRow job = w.claim("development");
  std::vector<JobOutcome> outcomes{runner.run(job).outcome};
  for (int i = 0; i < 400 && !w.f.reload(task.id).blocked; ++i) {
    auto claimed = w.f.store->claim_job("test/0", w.f.clock.now()).value();
    if (!claimed) {
      w.f.clock.advance(1s);
      continue;
    }
    outcomes.push_back(runner.run(*claimed).outcome);
  }
  CHECK(outcomes ==
        std::vector<JobOutcome>{JobOutcome::kStepRetrying, JobOutcome::kStepRetrying, JobOutcome::kBlocked});
  JobRow failed = w.f.store->find_job(job.id).value().value();
  CHECK(failed.status == JobStatus::kFailed);
  CHECK(failed.attempt == 1);
  CHECK(failed.step == "open_pr");
  CHECK(failed.step_attempts == 3);
  CHECK(failed.error.find("open_pr: ") == 0);
  CHECK(failed.error == failed.step_error);
  const TaskRow after = w.f.reload(task.id);
  CHECK(after.blocked);
  CHECK(after.blocked_reason.find("step open_pr failed 3 time(s)") == 0);
  CHECK(lines_of(w.out() / "runs") == 1);
  CHECK(jobs_in(*w.f.store, task.id, "development").size() == 1);  // no second attempt of the agent
  CHECK(gitea.pull_creates() == 3);
}

TEST_CASE(
    "a gate that cannot be read after the agent succeeded is retried as the job's gate step, and the task "
    "advances once it reads green") {
  WorkerFixture w(Scripts{{"developer", kCountingDeveloper}});
  HttpGitea gitea(w.f.clock, w.f.log);  // the PR goes to the fake Gitea; the gate reads the fixture's table
  AttemptPolicy runner_attempts(*w.f.store, w.f.pipeline, WriteBack::off(), w.f.clock, w.f.log, w.options.attempts);
  JobRunner runner(JobRunnerDeps{*w.f.store, w.f.engine, runner_attempts, w.git_ws, w.processes, *gitea.client,
                                 w.f.config, w.f.layout, w.f.clock, w.f.log},
                   w.options);
  TaskRow task = w.f.task_in("development", "SHOP-10");
  gitea.fake.set_branch(kStepRepo, task.branch, "c0ffee0000000000000000000000000000000004");
  w.f.gitea.fail_with(Status{Code::kUnavailable, "gitea: HTTP 503"});

  JobRow job = w.claim("development");
  JobResult first = runner.run(job);
  CHECK_MESSAGE(first.outcome == JobOutcome::kStepRetrying, first.detail);
  JobRow waiting = w.f.store->find_job(job.id).value().value();
  CHECK(waiting.status == JobStatus::kQueued);
  CHECK(waiting.step == "gate");
  CHECK(waiting.step_attempts == 1);
  CHECK(waiting.step_error.find("gate: ") == 0);
  CHECK(w.f.reload(task.id).pr_number);  // the steps before it stay done

  w.f.gitea.fail_with(std::nullopt);
  w.f.gitea.set_branch(task.branch, "cafe456");
  w.f.gitea.set_status("cafe456", CiState::kSuccess);
  w.f.clock.advance(15s);
  auto again = w.f.store->claim_job("test/0", w.f.clock.now()).value();
  REQUIRE(again);
  REQUIRE(again->id == job.id);
  JobResult r = runner.run(*again);
  CHECK_MESSAGE(r.outcome == JobOutcome::kSucceeded, r.detail);
  CHECK(w.f.reload(task.id).stage == "review");
  CHECK(w.f.store->find_job(job.id).value()->status == JobStatus::kSucceeded);
  CHECK(lines_of(w.out() / "runs") == 1);
  CHECK(gitea.fake.pulls(kStepRepo).size() == 1);
}

// Write-back (issue 20): the agent's output directory, its summary and the reporter told of each successful run.
namespace {

// Remembers every report; answers with `answer` (then ok) so a test can make one report fail.
struct RecordingReporter : JobReporter {
  struct Call {
    JobRow job;
    TaskRow task;
    AgentResult result;
  };
  Status agent_succeeded(const JobRow& job, const TaskRow& task, const AgentResult& result) override {
    calls.push_back({job, task, result});
    Status out = answer;
    answer = {};
    return out;
  }
  std::vector<Call> calls;
  Status answer;
};

WorkerOptions reporting_to(RecordingReporter& reporter) {
  WorkerOptions o = WorkerFixture::fast_options();
  o.reporter = &reporter;
  return o;
}

}  // namespace

TEST_CASE("the agent's ORCH_OUTPUT_DIR is absolute and empty at its start, and its summary.md reaches the reporter") {
  RecordingReporter reporter;
  WorkerFixture w(Scripts{{"analyst",
                           "ls -A \"$ORCH_OUTPUT_DIR\" > \"$OUT/listing\"\n"
                           "echo \"$ORCH_OUTPUT_DIR\" > \"$OUT/dir\"\n"
                           "printf '# Analysis\\n\\nAll **good**\\n' > \"$ORCH_OUTPUT_DIR/summary.md\"\n"
                           "echo 'a log line'\n"}},
                  reporting_to(reporter));
  TaskRow task = w.f.task_in("analysis", "SHOP-21");
  JobRow job = w.claim("analysis");
  // What an earlier attempt of the same job left behind is gone before the agent starts.
  const fs::path out_dir = fs::absolute(w.f.layout.job_output(job.id)).lexically_normal();
  fs::create_directories(out_dir / "old");
  std::ofstream(out_dir / "stale.txt") << "stale\n";

  JobResult r = w.runner.run(job);
  CHECK_MESSAGE(r.outcome == JobOutcome::kSucceeded, r.detail);
  CHECK(read_file(w.out() / "listing") == "");
  CHECK(read_file(w.out() / "dir") == out_dir.string() + "\n");
  REQUIRE(reporter.calls.size() == 1);
  const auto& call = reporter.calls[0];
  CHECK(call.job.id == job.id);
  CHECK(call.task.id == task.id);
  CHECK(call.result.exit_code == 0);
  CHECK(call.result.summary == "# Analysis\n\nAll **good**\n");
  CHECK_FALSE(call.result.verdict.has_value());  // analysis is no post_review stage
}

TEST_CASE("without a summary.md the reporter gets the last 40 lines of the agent's run, without orch's own lines") {
  RecordingReporter reporter;
  WorkerFixture w(Scripts{{"analyst",
                           "i=1\nwhile [ $i -le 50 ]; do echo \"line $i\"; i=$((i+1)); done\n"
                           "printf 'the end, without a newline'\n"}},
                  reporting_to(reporter));
  w.f.task_in("analysis", "SHOP-22");
  JobRow job = w.claim("analysis");
  CHECK(w.runner.run(job).outcome == JobOutcome::kSucceeded);
  REQUIRE(reporter.calls.size() == 1);
  std::string want;
  for (int i = 12; i <= 50; ++i) want += "line " + std::to_string(i) + "\n";
  want += "the end, without a newline\n";
  CHECK(reporter.calls[0].result.summary == want);
  // orch's exit line still has a line of its own in the log.
  CHECK(read_file(w.f.layout.job_log(job.id)).find("the end, without a newline\n[orch] exit 0\n") != std::string::npos);
}

TEST_CASE("a summary.md that is a symlink to a file outside the output directory is not followed") {
  RecordingReporter reporter;
  WorkerFixture w(Scripts{{"analyst", "ln -s \"$OUT/secret.txt\" \"$ORCH_OUTPUT_DIR/summary.md\"\necho fallback\n"}},
                  reporting_to(reporter));
  std::ofstream(w.out() / "secret.txt") << "SECRET of orch\n";
  w.f.task_in("analysis", "SHOP-23");
  JobRow job = w.claim("analysis");
  CHECK(w.runner.run(job).outcome == JobOutcome::kSucceeded);
  REQUIRE(fs::is_symlink(w.f.layout.job_output(job.id) / "summary.md"));  // the agent did make it
  REQUIRE(reporter.calls.size() == 1);
  CHECK(reporter.calls[0].result.summary == "fallback\n");
}

TEST_CASE(
    "on a post_review stage exit 3 is a successful run with the verdict REQUEST_CHANGES and exit 0 one with "
    "APPROVED, and the follow-up steps run after both") {
  RecordingReporter reporter;
  WorkerFixture w(Scripts{{"reviewer",
                           "echo 'please rename it' > \"$ORCH_OUTPUT_DIR/summary.md\"\n"
                           "[ \"$ORCH_WORK_ITEM_KEY\" = SHOP-24 ] && exit 3\nexit 0\n"}},
                  reporting_to(reporter), [](Config& c) { c.stages[2].post_review = true; });
  for (const char* key : {"SHOP-24", "SHOP-25"}) {
    INFO(key);
    TaskRow task = w.f.task_in("review", key);
    JobRow job = w.claim("review");
    REQUIRE(job.task_id == task.id);
    JobResult r = w.runner.run(job);
    CHECK_MESSAGE(r.outcome == JobOutcome::kSucceeded, r.detail);
    const JobRow row = *w.f.store->find_job(job.id).value();
    CHECK(row.status == JobStatus::kSucceeded);
    CHECK(row.step == "gate");  // push and the gate ran (the gate waits for the PR's review)
    CHECK(w.f.reload(task.id).stage == "review");
    CHECK_FALSE(w.f.reload(task.id).blocked);
  }
  REQUIRE(reporter.calls.size() == 2);
  CHECK(reporter.calls[0].result.exit_code == 3);
  CHECK(reporter.calls[0].result.verdict == std::optional<std::string>("REQUEST_CHANGES"));
  CHECK(reporter.calls[0].result.summary == "please rename it\n");
  CHECK(reporter.calls[1].result.exit_code == 0);
  CHECK(reporter.calls[1].result.verdict == std::optional<std::string>("APPROVED"));
}

TEST_CASE(
    "exit 3 on a stage without post_review, and any other exit on a post_review stage, fail the attempt "
    "unreported") {
  RecordingReporter reporter;
  WorkerFixture w(Scripts{{"analyst", "exit 3\n"}, {"reviewer", "exit 4\n"}}, reporting_to(reporter),
                  [](Config& c) { c.stages[2].post_review = true; });
  w.f.task_in("analysis", "SHOP-26");
  JobRow analysis = w.claim("analysis");
  CHECK(w.runner.run(analysis).outcome == JobOutcome::kRetrying);
  CHECK(w.f.store->find_job(analysis.id).value()->error == "agent exited 3");

  w.f.task_in("review", "SHOP-27");
  JobRow review = w.claim("review");
  CHECK(w.runner.run(review).outcome == JobOutcome::kRetrying);
  CHECK(w.f.store->find_job(review.id).value()->error == "agent exited 4");
  CHECK(reporter.calls.empty());
}

TEST_CASE(
    "a reporter failing with kUnavailable fails the attempt before any follow-up step, and the next attempt "
    "runs the agent and reports again") {
  RecordingReporter reporter;
  reporter.answer = unavailable("plane: HTTP 503");
  WorkerFixture w(Scripts{{"analyst", "echo run >> \"$OUT/runs\"\n"}}, reporting_to(reporter));
  TaskRow task = w.f.task_in("analysis", "SHOP-28");
  JobRow first = w.claim("analysis");
  JobResult r1 = w.runner.run(first);
  CHECK_MESSAGE(r1.outcome == JobOutcome::kRetrying, r1.detail);
  const JobRow failed = *w.f.store->find_job(first.id).value();
  CHECK(failed.status == JobStatus::kFailed);
  CHECK(failed.error == "report: plane: HTTP 503");
  CHECK(failed.step.empty());  // no follow-up step was recorded
  CHECK(reporter.calls.size() == 1);

  w.f.clock.advance(30s);  // the agent's retry backoff
  auto second = w.f.store->claim_job("test/0", w.f.clock.now()).value();
  REQUIRE(second);
  CHECK(second->attempt == 2);
  CHECK(w.runner.run(*second).outcome == JobOutcome::kSucceeded);
  CHECK(read_file(w.out() / "runs") == "run\nrun\n");
  REQUIRE(reporter.calls.size() == 2);
  CHECK(reporter.calls[1].job.id == second->id);
  CHECK(w.f.store->find_job(second->id).value()->status == JobStatus::kSucceeded);
  CHECK_FALSE(w.f.reload(task.id).blocked);
}

TEST_CASE(
    "an agent reporting 0.5 USD a run against a 1.0 USD task budget: the second run warns once and holds the task, "
    "no third run starts until a person raises the budget, then it does") {
  WorkerFixture w(Scripts{{"analyst",
                           "echo \"$ORCH_ATTEMPT\" >> \"$OUT/attempts\"\n"
                           "echo '{\"tokens_in\": 1200, \"tokens_out\": 300, \"model\": \"large\", \"cost_usd\": 0.5}'"
                           " > \"$ORCH_OUTPUT_DIR/usage.json\"\n"
                           "exit 1\n"}},
                  WorkerFixture::fast_options(), [](Config& c) {
                    c.agents["analyst"].max_attempts = 5;
                    c.agents["analyst"].budget_per_task = 1'000'000;
                  });
  TaskRow task = w.f.task_in("analysis", "SHOP-9");
  CHECK(w.runner.run(w.claim("analysis")).outcome == JobOutcome::kRetrying);
  CHECK(w.f.reload(task.id).spend == 500'000);
  CHECK(w.f.store->all_notifications().value().empty());  // 50 %: nothing to say yet
  w.f.clock.advance(30s);
  auto second = w.f.store->claim_job("test/0", w.f.clock.now()).value();
  REQUIRE(second);
  CHECK(w.runner.run(*second).outcome == JobOutcome::kRetrying);
  CHECK(w.f.store->find_job(second->id).value()->cost == 500'000);
  CHECK(w.f.store->find_job(second->id).value()->tokens_in == 1200);
  CHECK(w.f.store->find_job(second->id).value()->model == "large");

  // 100 %: one warning, then the hold, both said; the audit log has the hold.
  TaskRow held = w.f.reload(task.id);
  CHECK(held.spend == 1'000'000);
  CHECK(held.budget_hold.find("spent 1.00 USD of analyst's budget per task (1.00 USD)") == 0);
  auto notes = w.f.store->all_notifications().value();
  REQUIRE(notes.size() == 2);
  CHECK(notes[0].dedup_key == "budget-warning:" + std::to_string(task.id) + ":task:1000000");
  CHECK(notes[0].text == "SHOP-9 has spent 1.00 USD of analyst's budget per task (1.00 USD, 100 %)");
  CHECK(notes[1].dedup_key == "budget-held:" + std::to_string(task.id) + ":task:1000000");
  CHECK(notes[1].text.find("SHOP-9 is held in analysis: spent 1.00 USD") == 0);
  const auto audit = w.f.store->transitions_for_task(task.id).value();
  CHECK(audit.back().detail.find("held: spent 1.00 USD") == 0);
  CHECK(w.f.log.contains("budget: SHOP-9 is held in analysis"));
  // /queue.json says why it waits, and what it spent.
  const WaitingRules rules{w.f.pipeline, [](const std::string&) { return Seconds(60); }, JobLimits{}, {}};
  auto doc = queue_document(*w.f.store, w.f.clock.now(), QueueDefaults{}, rules);
  REQUIRE_MESSAGE(doc.ok(), doc.status().message);
  int seen = 0;
  for (const auto& t : doc.value()["tasks"])
    if (t["id"] == task.id) {
      ++seen;
      CHECK(t["waiting"]["reason"] == "budget_exhausted");
      CHECK(t["spend_usd"] == 1.0);
    }
  CHECK(seen == 1);

  // The third attempt is queued, but never claimed while held.
  w.f.clock.advance(24h);
  CHECK_FALSE(w.f.store->claim_job("test/0", w.f.clock.now()).value());
  CHECK(read_file(w.out() / "attempts") == "1\n2\n");

  // A resume that leaves the limit spent is refused; a raise lets the third run start.
  auto refused = resume_held_task(*w.f.store, w.f.config, task.id, 0, w.f.clock.now());
  CHECK(refused.status().code == Code::kInvalid);
  CHECK(refused.status().message ==
        "SHOP-9 has spent 1.00 USD of analyst's budget per task (1.00 USD with the raise): raise it by more than 0.00 "
        "USD");
  REQUIRE(resume_held_task(*w.f.store, w.f.config, task.id, 1'000'000, w.f.clock.now()).ok());
  CHECK(w.f.store->transitions_for_task(task.id).value().back().detail ==
        "budget raised by 1.00 USD and resumed by a person");
  auto third = w.f.store->claim_job("test/0", w.f.clock.now()).value();
  REQUIRE(third);
  CHECK(third->attempt == 3);
  CHECK(w.runner.run(*third).outcome == JobOutcome::kRetrying);
  CHECK(read_file(w.out() / "attempts") == "1\n2\n3\n");
  // 1.50 of 2.00 USD: below 80 % of the raised limit, no new warning, no hold.
  CHECK(w.f.reload(task.id).budget_hold.empty());
  CHECK(w.f.store->all_notifications().value().size() == 2);
}

TEST_CASE(
    "a spent project budget holds every task of the project before its agent starts: the job goes back to the "
    "queue unstarted") {
  WorkerFixture w(Scripts{{"analyst",
                           "echo \"$ORCH_WORK_ITEM_KEY\" >> \"$OUT/runs\"\n"
                           "echo '{\"cost_usd\": 0.5}' > \"$ORCH_OUTPUT_DIR/usage.json\"\n"}},
                  WorkerFixture::fast_options(), [](Config& c) { c.projects[0].budget = 500'000; });
  TaskRow first = w.f.task_in("analysis", "SHOP-1");
  TaskRow second = w.f.task_in("analysis", "SHOP-2");
  JobRow job1 = w.claim("analysis");
  REQUIRE(job1.task_id == first.id);
  // It succeeded, but the project's budget is spent: held at once (no agent of the project may start).
  CHECK(w.runner.run(job1).outcome == JobOutcome::kSucceeded);
  CHECK_FALSE(w.f.reload(first.id).budget_hold.empty());
  JobRow job2 = w.claim("analysis");
  REQUIRE(job2.task_id == second.id);
  CHECK(w.runner.run(job2).outcome == JobOutcome::kHeld);
  CHECK(w.f.store->find_job(job2.id).value()->status == JobStatus::kQueued);
  CHECK(w.f.store->find_job(job2.id).value()->attempt == 1);  // no attempt spent
  CHECK(w.f.reload(second.id).budget_hold.find("spent 0.50 USD of project shop's budget (0.50 USD)") == 0);
  CHECK(read_file(w.out() / "runs") == "SHOP-1\n");
  CHECK_FALSE(w.f.store->claim_job("test/0", w.f.clock.now()).value());
  // The warning is said once for the project's limit per task; each hold once.
  auto notes = w.f.store->all_notifications().value();
  CHECK(std::count_if(notes.begin(), notes.end(),
                      [](const NotificationRow& n) { return n.dedup_key.rfind("budget-held:", 0) == 0; }) == 2);
}

TEST_CASE("usage.json that is not a usage report is ignored with a warning, and the run goes on as if none") {
  WorkerFixture w(Scripts{{"analyst", "echo '{\"cost_usd\": \"lots\"}' > \"$ORCH_OUTPUT_DIR/usage.json\"\n"}},
                  WorkerFixture::fast_options(), [](Config& c) { c.agents["analyst"].budget_per_task = 1; });
  TaskRow task = w.f.task_in("analysis", "SHOP-4");
  JobRow job = w.claim("analysis");
  CHECK(w.runner.run(job).outcome == JobOutcome::kSucceeded);
  CHECK(w.f.reload(task.id).spend == 0);
  CHECK(w.f.log.contains("usage.json: 'cost_usd' must be a number of dollars, at least 0; no usage recorded"));
}
