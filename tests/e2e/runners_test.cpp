// End to end against the real binary (issue 22): `orch runner` processes on loopback run the agents, the server runs
// none. Two runners take the example pipeline to done; a runner SIGKILLed mid-job has its job run again on the
// other one after the stale bound, and its item still reaches done with nothing doubled; a runner paused (SIGSTOP) past
// the bound finds its job taken away when it resumes, stops its agent's process group and reports nothing; and the
// runner API refuses what it must (401, 409, 413, 204).
#include <doctest/doctest.h>

#include <errno.h>
#include <signal.h>

#include <fstream>

#include "tests/e2e/pipeline_run.h"
#include "tests/e2e/runners_rig.h"

using namespace orch::testing;
using namespace orch::testing::e2e;
using namespace std::chrono_literals;

namespace {

bool group_gone(pid_t pgid) { return ::kill(-pgid, 0) != 0 && errno == ESRCH; }

pid_t read_pid(const std::string& file) {
  std::ifstream in(file);
  pid_t pid = 0;
  in >> pid;
  return pid;
}

// Waits until the item's task is in `stage` with its agent's job of this visit succeeded and nothing queued or
// running (the job's own look at the gate done too); false on a blocked task or at the deadline.
bool settled_in(const World& w, const std::string& item, const std::string& stage) {
  bool blocked = false;
  const bool settled = eventually(
      [&] {
        const auto tasks = read_tasks(w);
        const auto it = tasks.find(item);
        if (it == tasks.end()) return false;
        blocked = it->second.blocked;
        return blocked || (it->second.stage == stage && it->second.active_jobs == 0 && it->second.succeeded_here == 1 &&
                           (stage != "development" || it->second.pr > 0));
      },
      60s);
  return settled && !blocked;
}

// Takes one item whose analysis succeeded on to done, as people and CI do in pipeline_run.h (each with its webhook):
// approved in Plane, CI green on the pushed head, the pull request approved in Gitea.
void drive_to_done(World& w, const std::string& item, const Runners& runners) {
  REQUIRE_MESSAGE(settled_in(w, item, "analysis"), w.log_tails() << runners.logs());
  w.plane.set_work_item_state(item, w.plane.state_id(kProjectId, "Approved"));
  CHECK(accepted(w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", w.plane.issue_webhook_body(item))));

  REQUIRE_MESSAGE(settled_in(w, item, "development"), w.log_tails() << runners.logs());
  const TaskView dev = read_tasks(w).at(item);
  const std::string sha = w.bare_head(dev.branch);  // what the runner pushed
  REQUIRE(sha.size() == 40);
  w.gitea.add_status(kRepo, sha, "ci/build", "pending");
  w.gitea.add_status(kRepo, sha, "ci/build", "success");
  CHECK(accepted(w.gitea.send_webhook(w.gitea_url(), kGiteaSecret, "push",
                                      FakeGitea::push_payload(kRepo, dev.branch, w.main_sha, sha))));
  CHECK(accepted(w.gitea.send_webhook(w.gitea_url(), kGiteaSecret, "status",
                                      FakeGitea::status_payload(kRepo, sha, "ci/build", "success"))));

  REQUIRE_MESSAGE(settled_in(w, item, "review"), w.log_tails() << runners.logs());
  w.gitea.add_review(kRepo, dev.pr, GiteaReview{});
  CHECK(accepted(w.gitea.send_webhook(w.gitea_url(), kGiteaSecret, "pull_request_review_approved",
                                      w.gitea.review_payload(kRepo, dev.pr, true))));
  const bool done = eventually([&] { return read_tasks(w).at(item).stage == "done"; }, 60s);
  REQUIRE_MESSAGE(done, w.log_tails() << runners.logs());
}

httplib::Result runner_post(const World& w, const std::string& token, const std::string& path,
                            const nlohmann::json& body) {
  httplib::Client c(w.orch->base_url());
  c.set_read_timeout(40s);
  httplib::Headers h;
  if (!token.empty()) h.emplace("Authorization", "Bearer " + token);
  return c.Post(path, h, body.dump(), "application/json");
}

// Runners take every agent; the analyst's first attempt waits until it is stopped, recording its process group in
// `pid_file`; heartbeats every second up to `stale`.
WorldOptions slow_first_world(const std::string& pid_file, const std::string& runs_on, const std::string& stale) {
  WorldOptions o;
  o.runs_on = runs_on;
  o.analyst = "slow_first.sh";
  o.analyst_env = {{"E2E_PID_FILE", pid_file}};
  o.heartbeat_stale = stale;
  return o;
}

}  // namespace

TEST_CASE("e2e runners: two runners run the example pipeline to done / no agent runs on the server") {
  std::unique_ptr<Runners> runners;
  PipelineOptions run;
  run.world.runs_on = "agents";
  run.on_started = [&](World& w) {
    runners = std::make_unique<Runners>(Runners{w, {}, {}});
    runners->add("r1");
    runners->add("r2");
  };
  run.at_end = [&](World& w, const RunResult& r) {
    check_no_server_worktree(w.data_dir);
    std::size_t reported = 0;
    for (const auto& [name, p] : runners->procs) reported += count_of(p->log(), "reported: {\"detail\"");
    CHECK_MESSAGE(reported == 3u * static_cast<std::size_t>(r.items), runners->logs());
    nlohmann::json status = w.orch->status_json();
    REQUIRE(status["runners"].size() == 2);
    for (const auto& runner : status["runners"]) {
      CHECK(runner["state"] == "online");
      CHECK(runner["labels"] == nlohmann::json::array({"agents"}));
      CHECK(runner["job_id"].is_null());
    }
    // /metrics: both runners online, nothing running on either.
    auto m = w.metrics(0);
    REQUIRE(m);
    CHECK(sum_samples(*m, "orch_runners", {"state=\"online\""}) == 2);
    CHECK(sum_samples(*m, "orch_runners", {"state=\"offline\""}) == 0);
    CHECK(sum_samples(*m, "orch_runner_jobs_running", {"runner=\"r1\""}) == 0);
    for (auto& [name, p] : runners->procs) CHECK(p->terminate() == std::optional<int>(0));
  };
  RunResult r = run_pipeline(3, Loss{}, run);
  CHECK(r.done == 3);
}

TEST_CASE(
    "e2e runners: a runner SIGKILLed mid-job / its job runs again on the other runner after the stale bound and the "
    "item reaches done, nothing doubled") {
  TempDir scratch;
  const std::string pid_file = scratch.file("agent.pid");
  World w(slow_first_world(pid_file, "agents", "3s"));
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  Runners runners{w, {}, {}};
  RunnerProcess& a = runners.add("a");
  const std::string item = start_item(w, "Kill my runner");
  REQUIRE_MESSAGE(eventually([&] { return read_pid(pid_file) > 0; }, 30s), w.log_tails() << runners.logs());
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'running' AND worker LIKE 'runner:a/%'") == 1);
  a.kill_hard();  // as its host dies; its agent would die with the host
  ::kill(-read_pid(pid_file), SIGKILL);

  runners.add("b");
  REQUIRE_MESSAGE(
      eventually(
          [&] { return w.count("SELECT COUNT(*) FROM jobs WHERE stage = 'analysis' AND status = 'succeeded'") == 1; },
          60s),
      w.log_tails() << runners.logs());
  auto jobs = w.rows("SELECT attempt, status, error FROM jobs ORDER BY id");
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[0][0] == "1");
  CHECK(jobs[0][1] == "failed");
  CHECK(jobs[0][2].rfind("orphaned", 0) == 0);
  CHECK(jobs[1][0] == "2");
  CHECK(jobs[1][1] == "succeeded");
  CHECK(count_of(runners.procs["b"]->log(), "reported") == 1);
  nlohmann::json status = w.orch->status_json();
  REQUIRE(status["runners"].size() == 2);
  CHECK(status["runners"][0]["name"] == "a");
  CHECK(status["runners"][0]["state"] == "offline");
  CHECK(status["runners"][1]["state"] == "online");
  auto m = w.metrics(0);
  REQUIRE(m);
  CHECK(sum_samples(*m, "orch_runners", {"state=\"offline\""}) == 1);
  CHECK(sum_samples(*m, "orch_runners", {"state=\"online\""}) == 1);

  // ---- on to done through the rest of the pipeline, every agent on the runner left ----
  drive_to_done(w, item, runners);
  check_nothing_doubled(w, 1);  // one task, branch and PR; one succeeded job per stage; one transition per stage
  // The orphaned attempt is the only job that did not succeed, and the only one run twice.
  using Row = std::vector<std::string>;
  CHECK(w.rows("SELECT stage, attempt, status FROM jobs ORDER BY id") ==
        std::vector<Row>{Row{"analysis", "1", "failed"}, Row{"analysis", "2", "succeeded"},
                         Row{"development", "1", "succeeded"}, Row{"review", "1", "succeeded"}});
  std::vector<std::string> moves;
  for (const auto& t : w.rows("SELECT to_stage FROM transitions ORDER BY id")) moves.push_back(t[0]);
  CHECK(moves == std::vector<std::string>{"analysis", "development", "review", "done"});
  CHECK(w.gitea.pulls(kRepo).size() == 1);
  // Each of the three successful runs was b's, reported once; the killed runner reported nothing.
  const auto ids = w.rows("SELECT id FROM jobs WHERE status = 'succeeded' ORDER BY id");
  std::map<long long, int> expected;
  for (const auto& id : ids) expected[std::stoll(id[0])] = 1;
  CHECK(reported_successes(*runners.procs["b"]) == expected);
  CHECK(count_of(a.log(), "reported") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM tasks WHERE stage = 'done'") == 1);
  check_no_server_worktree(w.data_dir);
  CHECK(runners.procs["b"]->terminate() == std::optional<int>(0));
}

TEST_CASE(
    "e2e runners: a runner paused past the stale bound / finds its job taken away, stops its agent, reports nothing") {
  TempDir scratch;
  const std::string pid_file = scratch.file("agent.pid");
  World w(slow_first_world(pid_file, "agents", "3s"));
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  Runners runners{w, {}, {}};
  RunnerProcess& a = runners.add("a");
  start_item(w, "Pause my runner");
  REQUIRE_MESSAGE(eventually([&] { return read_pid(pid_file) > 0; }, 30s), w.log_tails() << runners.logs());
  const pid_t agent = read_pid(pid_file);
  a.signal(SIGSTOP);
  REQUIRE_MESSAGE(
      eventually([&] { return w.count("SELECT COUNT(*) FROM jobs WHERE error LIKE 'orphaned%'") == 1; }, 30s),
      w.log_tails());
  runners.add("b");
  REQUIRE_MESSAGE(
      eventually(
          [&] { return w.count("SELECT COUNT(*) FROM jobs WHERE stage = 'analysis' AND status = 'succeeded'") == 1; },
          60s),
      w.log_tails() << runners.logs());
  const auto before = w.rows("SELECT id, status, error, finished_at FROM jobs ORDER BY id");

  a.signal(SIGCONT);
  CHECK_MESSAGE(eventually([&] { return count_of(a.log(), "was taken away") == 1; }, 30s), runners.logs());
  CHECK_MESSAGE(eventually([&] { return group_gone(agent); }, 30s), "the paused runner's agent still runs");
  CHECK(a.terminate() == std::optional<int>(0));
  CHECK(count_of(a.log(), "reported") == 0);
  CHECK(w.rows("SELECT id, status, error, finished_at FROM jobs ORDER BY id") ==
        before);  // its late word changed nothing
}

TEST_CASE("e2e runners: the runner API / 401 for a wrong or revoked token, 409 for a job not held, 413, 204") {
  WorldOptions o;
  o.runs_on = "agents";
  World w(o);
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  Runners runners{w, {}, {}};
  const std::string a = runners.register_runner("a", "agents");
  const std::string b = runners.register_runner("b", "agents");
  const std::string gpu = runners.register_runner("g", "gpu");
  const std::string revoked = runners.register_runner("old", "agents");
  REQUIRE(w.cli({"runner", "revoke", "old"}) == 0);
  start_item(w, "Claim me by hand");
  REQUIRE(eventually([&] { return w.count("SELECT COUNT(*) FROM jobs WHERE status = 'queued'") == 1; }, 30s));

  for (const std::string& token : {std::string(), std::string("orch_rt_wrong"), revoked}) {
    auto r = runner_post(w, token, "/runner/v1/claim", {{"wait_seconds", 0}});
    REQUIRE(r);
    CHECK(r->status == 401);
  }
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'queued'") == 1);    // nothing changed
  auto none = runner_post(w, gpu, "/runner/v1/claim", {{"wait_seconds", 1}});  // labels that match no agent
  REQUIRE(none);
  CHECK(none->status == 204);

  auto offer_r = runner_post(w, a, "/runner/v1/claim", {{"wait_seconds", 5}});
  REQUIRE(offer_r);
  REQUIRE(offer_r->status == 200);
  const nlohmann::json offer = nlohmann::json::parse(offer_r->body);
  const std::string claim = offer["claim"];
  const std::string job = "/runner/v1/jobs/" + std::to_string(offer["job"]["id"].get<long long>());
  CHECK(offer["agent"]["name"] == "analyst");
  CHECK(offer["task"]["title"] == "Claim me by hand");
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'running' AND worker = $1", {claim}) == 1);

  // Another runner, with a's claim or with one of its own: 409, and the job is still a's.
  for (const auto& [token, c] : std::vector<std::pair<std::string, std::string>>{{b, claim}, {b, "runner:b/00"}}) {
    for (const char* what : {"/heartbeat", "/finish", "/handback", "/log"}) {
      auto r = runner_post(w, token, job + what, {{"claim", c}, {"exit_code", 0}, {"data", "x"}});
      REQUIRE(r);
      CHECK_MESSAGE(r->status == 409, what);
    }
  }
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'running' AND worker = $1", {claim}) == 1);

  auto big = runner_post(w, a, job + "/log", {{"claim", claim}, {"data", std::string(300 * 1024, 'x')}});
  REQUIRE(big);
  CHECK(big->status == 413);
  auto small = runner_post(w, a, job + "/log", {{"claim", claim}, {"data", "hello from the runner\n"}});
  REQUIRE(small);
  CHECK(small->status == 200);
  auto beat = runner_post(w, a, job + "/heartbeat", {{"claim", claim}});
  REQUIRE(beat);
  CHECK(beat->status == 200);
  CHECK(nlohmann::json::parse(beat->body)["state"] == "running");

  // Handed back: queued again, and the old claim is refused from then on.
  auto back = runner_post(w, a, job + "/handback", {{"claim", claim}});
  REQUIRE(back);
  CHECK(back->status == 200);
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND worker = ''") == 1);
  auto late = runner_post(w, a, job + "/finish", {{"claim", claim}, {"exit_code", 0}, {"head_sha", w.main_sha}});
  REQUIRE(late);
  CHECK(late->status == 409);
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'queued'") == 1);
}

// Issue 22's cancel: `orch job cancel ID` reaches whoever holds the job within one heartbeat, the agent's process
// group is stopped (SIGTERM, cancel_grace, SIGKILL) and checked gone, then the job fails as cancelled and its task is
// blocked, never retried. On a runner, and on the server's own pool.
TEST_CASE(
    "e2e cancel: orch job cancel stops the agent's process group within one heartbeat / on a runner and locally") {
  for (const bool on_runner : {true, false}) {
    CAPTURE(on_runner);
    TempDir scratch;
    const std::string pid_file = scratch.file("agent.pid");
    World w(slow_first_world(pid_file, on_runner ? "agents" : "", "10s"));  // heartbeats every second
    REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
    Runners runners{w, {}, {}};
    if (on_runner) runners.add("a");
    start_item(w, "Cancel me");
    REQUIRE_MESSAGE(eventually([&] { return read_pid(pid_file) > 0; }, 30s), w.log_tails() << runners.logs());
    const pid_t agent = read_pid(pid_file);
    const std::string job = w.rows("SELECT id FROM jobs WHERE status = 'running'").at(0).at(0);

    std::string out;
    REQUIRE(w.cli({"job", "cancel", job}, &out) == 0);
    CHECK(out.find("cancel requested") != std::string::npos);
    const auto asked = std::chrono::steady_clock::now();
    CHECK_MESSAGE(eventually([&] { return group_gone(agent); }, 15s), w.log_tails() << runners.logs());
    // One heartbeat (1 s) and the agent's quick exit on SIGTERM: well inside the 10 s cancel grace.
    CHECK(std::chrono::steady_clock::now() - asked < 8s);
    REQUIRE_MESSAGE(eventually([&] { return w.count("SELECT COUNT(*) FROM tasks WHERE blocked") == 1; }, 30s),
                    w.log_tails() << runners.logs());
    auto rows = w.rows("SELECT status, error FROM jobs");
    REQUIRE(rows.size() == 1);  // never retried
    CHECK(rows[0][0] == "failed");
    CHECK(rows[0][1].rfind("cancelled: by a person", 0) == 0);
    CHECK(w.count("SELECT COUNT(*) FROM tasks WHERE blocked_reason LIKE '%cancelled%'") == 1);
    // A finished job cannot be cancelled again.
    CHECK(w.cli({"job", "cancel", job}) == 1);
    if (on_runner) {
      CHECK(count_of(runners.procs["a"]->log(), "was cancelled by a person") == 1);
      CHECK(runners.procs["a"]->terminate() == std::optional<int>(0));
    }
  }
}
