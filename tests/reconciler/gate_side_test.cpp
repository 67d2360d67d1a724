// The gate side (F-1) on a manual clock: grace per stage and overrides, what it never touches (human stages,
// gate-less stages, tasks with a job), green advances once and is seen, red is silent, failures are contained
// and backed off, and a pass is bounded and resumes where the last one stopped.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "app/queue_document.h"
#include "app/settings.h"
#include "reconciler/reconciler.h"
#include "tests/support/engine_fixture.h"
#include "tests/support/reconciler_rig.h"
#include "webhooks/handlers/handlers.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

using RigOptions = ReconcilerRigOptions;

struct Rig : ReconcilerRig {
  using ReconcilerRig::ReconcilerRig;

  // A task idle in `stage` since now, its agent done, its branch pushed at `sha`.
  TaskRow idle_task(const std::string& stage, const std::string& key, const std::string& sha) {
    TaskRow t = task_in(stage, key);
    finish_all_jobs();
    gitea.set_branch(t.branch, sha);
    return t;
  }
};

// Calls `during` once, inside the first CI status read: a webhook landing mid-evaluation.
class HookedCodeHost final : public CodeHost {
 public:
  HookedCodeHost(CodeHost& inner, std::function<void()> during) : inner_(inner), during_(std::move(during)) {}
  Result<CiState> combined_status(const std::string& repo, const std::string& ref) override {
    if (auto f = std::exchange(during_, nullptr)) f();
    return inner_.combined_status(repo, ref);
  }
  Result<std::string> branch_head(const std::string& repo, const std::string& branch) override {
    return inner_.branch_head(repo, branch);
  }
  Result<std::optional<PullRequestInfo>> pull_request_for_branch(const std::string& repo,
                                                                 const std::string& branch) override {
    return inner_.pull_request_for_branch(repo, branch);
  }
  Result<std::vector<PullRequestInfo>> open_pull_requests(const std::string& repo) override {
    return inner_.open_pull_requests(repo);
  }
  Result<bool> pull_request_approved(const std::string& repo, std::int64_t number) override {
    return inner_.pull_request_approved(repo, number);
  }
  Result<PullRequestInfo> create_pull_request(const std::string& repo, const std::string& head, const std::string& base,
                                              const std::string& title, const std::string& body) override {
    return inner_.create_pull_request(repo, head, base, title, body);
  }

 private:
  CodeHost& inner_;
  std::function<void()> during_;
};

}  // namespace

TEST_CASE("an idle task advances exactly when its own stage's grace has passed") {
  Rig f;  // development: its own grace 30 min; review: the default 15 min
  TaskRow dev = f.idle_task("development", "SHOP-1", "aaa1111");
  TaskRow rev = f.idle_task("review", "SHOP-2", "bbb2222");
  f.gitea.set_status("aaa1111", CiState::kSuccess);
  f.gitea.set_pr(rev.branch, PullRequestInfo{7, true, false, rev.branch, "bbb2222", "main", ""});
  f.gitea.set_approved(7, true);

  f.clock.advance(15min);  // exactly the review grace: not yet
  CHECK(f.gate_side.run_once().unblocked.empty());
  f.clock.advance(1s);
  auto report = f.gate_side.run_once();
  REQUIRE(report.unblocked.size() == 1);
  CHECK(report.unblocked[0].work_item_key == "SHOP-2");
  CHECK(f.reload(rev.id).stage == "done");
  CHECK(f.reload(dev.id).stage == "development");

  f.clock.advance(15min - 1s);  // exactly 30 min for development
  CHECK(f.gate_side.run_once().unblocked.empty());
  f.clock.advance(1s);
  REQUIRE(f.gate_side.run_once().unblocked.size() == 1);
  CHECK(f.reload(dev.id).stage == "review");
}

TEST_CASE("the grace counts from the last job's finish, not only from the stage entry") {
  Rig f;
  TaskRow t = f.task_in("development", "SHOP-1");
  f.clock.advance(2h);  // the developer agent runs for two hours
  f.finish_all_jobs();
  f.gitea.set_branch(t.branch, "abc1234");
  f.gitea.set_status("abc1234", CiState::kSuccess);
  f.clock.advance(29min);  // CI's own webhook may still be on its way
  CHECK(f.gate_side.run_once().unblocked.empty());
  f.clock.advance(2min);
  CHECK(f.gate_side.run_once().unblocked.size() == 1);
}

TEST_CASE("ORCH_RECONCILE_GRACE_OVERRIDES_JSON moves the boundary — each invalid form warns and keeps the default") {
  SUBCASE("a valid override wins over the stage's own grace") {
    RigOptions o;
    o.env["ORCH_RECONCILE_GRACE_OVERRIDES_JSON"] = R"({"development": 60})";
    Rig f(o);
    CHECK(f.settings.warnings.empty());
    TaskRow t = f.idle_task("development", "SHOP-1", "abc1234");
    f.gitea.set_status("abc1234", CiState::kSuccess);
    f.clock.advance(60s);
    CHECK(f.gate_side.run_once().unblocked.empty());
    f.clock.advance(1s);
    CHECK(f.gate_side.run_once().unblocked.size() == 1);
    CHECK(f.reload(t.id).stage == "review");
  }
  SUBCASE("a valid default applies to stages without their own grace") {
    RigOptions o;
    o.env["ORCH_RECONCILE_GRACE_DEFAULT_S"] = "120";
    Rig f(o);
    TaskRow t = f.idle_task("review", "SHOP-1", "abc1234");
    f.gitea.set_pr(t.branch, PullRequestInfo{3, false, true, t.branch, "abc1234", "main", ""});
    f.clock.advance(120s);
    CHECK(f.gate_side.run_once().unblocked.empty());
    f.clock.advance(1s);
    CHECK(f.gate_side.run_once().unblocked.size() == 1);
  }
  for (const char* bad :
       {"{not json", "[1, 2]", R"({"development": "fast"})", R"({"development": -5})", R"({"development": 1.5})"}) {
    CAPTURE(bad);
    RigOptions o;
    o.env["ORCH_RECONCILE_GRACE_OVERRIDES_JSON"] = bad;
    Rig f(o);
    REQUIRE(f.settings.warnings.size() == 1);
    CHECK(f.settings.warnings[0].find("ORCH_RECONCILE_GRACE_OVERRIDES_JSON") != std::string::npos);
    f.idle_task("development", "SHOP-1", "abc1234");
    f.gitea.set_status("abc1234", CiState::kSuccess);
    f.clock.advance(30min);  // the stage's own grace still stands
    CHECK(f.gate_side.run_once().unblocked.empty());
    f.clock.advance(1s);
    CHECK(f.gate_side.run_once().unblocked.size() == 1);
  }
}

TEST_CASE("a human stage is never advanced by the gate side, even when the tracker says approved") {
  Rig f;
  TaskRow t = f.idle_task("analysis", "SHOP-1", "abc1234");
  f.plane.set_item(WorkItem{t.work_item_id, "p", 1, "t", "", "Approved", std::nullopt});
  const int plane_calls = f.plane.calls();
  f.clock.advance(24h);
  auto report = f.gate_side.run_once();
  CHECK(report.unblocked.empty());
  CHECK(report.evaluated == 0);
  CHECK(report.skipped == 1);
  CHECK(f.plane.calls() == plane_calls);  // not even asked
  CHECK(f.reload(t.id).stage == "analysis");
}

TEST_CASE("a stage without a gate is skipped") {
  Config c = default_config();
  c.stages[2].gate.reset();  // review: no gate
  RigOptions o;
  o.config = c;
  Rig f(o);
  TaskRow t = f.idle_task("review", "SHOP-1", "abc1234");
  f.clock.advance(24h);
  CHECK(f.gate_side.run_once().unblocked.empty());
  CHECK(f.reload(t.id).stage == "review");
}

TEST_CASE("a task with a queued or running job is not a candidate") {
  Rig f;
  TaskRow t = f.task_in("development", "SHOP-1");  // its analyst and developer jobs are queued
  auto analyst = f.store->claim_job("w/1", f.clock.now()).value();
  REQUIRE(analyst);
  REQUIRE(f.store->finish_job(analyst->id, JobStatus::kSucceeded, "", f.clock.now()).ok());
  f.gitea.set_branch(t.branch, "abc1234");
  f.gitea.set_status("abc1234", CiState::kSuccess);
  f.clock.advance(24h);
  CHECK(f.gate_side.run_once().unblocked.empty());
  auto job = f.store->claim_job("w/1", f.clock.now());  // the developer job is now running
  REQUIRE(job.value());
  REQUIRE(job.value()->stage == "development");
  f.clock.advance(24h);
  CHECK(f.gate_side.run_once().unblocked.empty());
  CHECK(f.gitea.calls() == 0);
  CHECK(f.reload(t.id).stage == "development");
}

TEST_CASE("a green gate advances once: one transition with cause reconciler, one notification, one log line") {
  Rig f;
  TaskRow t = f.idle_task("development", "SHOP-1", "abc1234");
  f.gitea.set_status("abc1234", CiState::kSuccess);
  const std::size_t before = f.transitions(t.id);
  f.clock.advance(31min);

  PassReport report = f.pass.run_once();
  CHECK(report.ran);
  CHECK(report.error.empty());
  REQUIRE(report.unblocked.size() == 1);
  auto rows = f.store->transitions_for_task(t.id).value();
  REQUIRE(rows.size() == before + 1);
  CHECK(rows.back().from == "development");
  CHECK(rows.back().to == "review");
  CHECK(rows.back().cause == Cause::kReconciler);
  CHECK(f.reload(t.id).stage == "review");
  CHECK(f.store->jobs_for_task(t.id).value().back().stage == "review");  // the next agent was enqueued

  auto notes = f.store->all_notifications().value();
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].dedup_key == "unblock:" + std::to_string(t.id) + ":" + std::to_string(f.reload(t.id).visit));
  CHECK(notes[0].text.find("SHOP-1") != std::string::npos);
  CHECK(f.count_lines("unblocked (lost webhook)") == 1);
  CHECK(f.log.contains("info reconciler: SHOP-1 development unblocked (lost webhook) via gate"));
  auto snap = f.snapshot();
  CHECK(snap["unblocked_total"] == 1);
  CHECK(snap["last_unblocked"] == "SHOP-1");
  CHECK(snap["last_error"].is_null());
  CHECK(snap["last_pass_started_at"] == format_rfc3339(f.clock.now()));
  CHECK(snap["interval_s"] == 60);

  // A second pass (the review agent done, its gate red) finds nothing to do and says nothing.
  f.finish_all_jobs();
  f.clock.advance(1h);
  const std::size_t lines = f.info_lines();
  PassReport again = f.pass.run_once();
  CHECK(again.unblocked.empty());
  CHECK(f.transitions(t.id) == before + 1);
  CHECK(f.notifications() == 1);
  CHECK(f.info_lines() == lines);
  CHECK(f.snapshot()["unblocked_total"] == 1);
}

TEST_CASE("a red gate stays silent: no rows, no notifications, no log lines at info or above") {
  Rig f;
  TaskRow t = f.idle_task("development", "SHOP-1", "abc1234");  // CI pending
  TaskRow u = f.idle_task("review", "SHOP-2", "def5678");       // no pull request
  const std::size_t t_rows = f.transitions(t.id), u_rows = f.transitions(u.id);
  const std::size_t jobs = f.store->jobs_for_task(t.id).value().size();
  const std::size_t lines = f.info_lines();
  for (int i = 0; i < 3; ++i) {
    f.clock.advance(1h);
    PassReport report = f.pass.run_once();
    CHECK(report.gate.red == 2);
    CHECK(report.unblocked.empty());
    CHECK(report.error.empty());
  }
  CHECK(f.transitions(t.id) == t_rows);
  CHECK(f.transitions(u.id) == u_rows);
  CHECK(f.store->jobs_for_task(t.id).value().size() == jobs);
  CHECK(f.notifications() == 0);
  CHECK(f.info_lines() == lines);
  CHECK(f.reload(t.id).updated_at == t.updated_at);
}

TEST_CASE("a webhook that moves the task while its gate is being read wins cleanly") {
  Rig f;
  TaskRow t = f.idle_task("development", "SHOP-1", "abc1234");
  f.gitea.set_status("abc1234", CiState::kSuccess);
  // The CI webhook lands while the gate side is reading the CI status: the engine moves the task first.
  HookedCodeHost hooked(f.gitea, [&] {
    AdvanceRequest r;
    r.cause = Cause::kWebhook;
    REQUIRE(f.engine.advance_stage(t.id, r).ok());
  });
  GateEvaluator gates(f.config, hooked, f.plane, f.runner, f.layout);
  StageEngine engine(*f.store, f.pipeline, gates, f.bus, f.clock, f.log);
  GateSide gate_side(*f.store, engine, f.clock, f.log, f.grace());
  f.clock.advance(31min);
  const std::size_t rows = f.transitions(t.id);
  auto report = gate_side.run_once();
  CHECK(report.evaluated == 1);
  CHECK(report.unblocked.empty());
  CHECK(report.failed == 0);
  auto all = f.store->transitions_for_task(t.id).value();
  REQUIRE(all.size() == rows + 1);  // the webhook's, and nothing of ours
  CHECK(all.back().cause == Cause::kWebhook);
  CHECK(f.reload(t.id).stage == "review");
  CHECK(f.count_lines("unblocked") == 0);
}

TEST_CASE("one failing task does not stop the pass") {
  Rig f;
  // A task whose project is no longer configured: its gate cannot be evaluated (kInvalid).
  auto ghost = f.store->create_task_atomic({"ghost", "wi-ghost", "GHOST-1", "t", "", "orch/ghost-1"}, f.clock.now());
  REQUIRE(ghost.ok());
  for (const char* to : {"analysis", "development"}) {
    AdvanceRequest r;
    r.to = to;
    REQUIRE(f.engine.advance_stage(ghost.value().task.id, r).ok());
  }
  f.clock.advance(1s);
  TaskRow t = f.idle_task("development", "SHOP-1", "abc1234");
  f.gitea.set_status("abc1234", CiState::kSuccess);
  f.clock.advance(31min);
  PassReport report = f.pass.run_once();
  CHECK(report.gate.failed == 1);
  REQUIRE(report.unblocked.size() == 1);
  CHECK(report.unblocked[0].work_item_key == "SHOP-1");
  CHECK(f.reload(t.id).stage == "review");
  CHECK(f.log.contains("warning gate side: task GHOST-1 skipped"));
  CHECK(report.error.find("GHOST-1") != std::string::npos);
  CHECK(f.snapshot()["last_error"].get<std::string>().find("GHOST-1") != std::string::npos);
}

TEST_CASE("Gitea down: each task backs off exponentially and a pass stops after a run of failures") {
  RigOptions o;
  o.gate.backoff_base = 60s;
  o.gate.backoff_cap = 10min;
  Rig f(o);
  TaskRow t = f.idle_task("development", "SHOP-1", "abc1234");
  f.gitea.set_status("abc1234", CiState::kSuccess);
  f.gitea.fail_with(unavailable("gitea: connection refused"));
  f.clock.advance(31min);

  auto first = f.gate_side.run_once();
  CHECK(first.failed == 1);
  CHECK(f.gitea.calls() == 1);
  f.clock.advance(30s);  // inside the first backoff (60 s): not asked again
  CHECK(f.gate_side.run_once().backing_off == 1);
  CHECK(f.gitea.calls() == 1);
  f.clock.advance(30s);
  f.gate_side.run_once();
  CHECK(f.gitea.calls() == 2);
  f.clock.advance(119s);  // the second wait is 120 s
  f.gate_side.run_once();
  CHECK(f.gitea.calls() == 2);
  f.clock.advance(1s);
  f.gate_side.run_once();
  CHECK(f.gitea.calls() == 3);

  // Back up: the next try after the backoff advances it, and the backoff is forgotten.
  f.gitea.fail_with(std::nullopt);
  f.clock.advance(4min);
  REQUIRE(f.gate_side.run_once().unblocked.size() == 1);
  CHECK(f.reload(t.id).stage == "review");
}

TEST_CASE("Gitea down with many idle tasks: a pass asks a few times, not once per task") {
  Rig f;
  for (int i = 1; i <= 10; ++i) {
    f.idle_task("development", "SHOP-" + std::to_string(i), "sha" + std::to_string(i));
    f.clock.advance(1s);
  }
  f.gitea.fail_with(unavailable("gitea: 502"));
  f.clock.advance(31min);
  auto report = f.gate_side.run_once();
  CHECK(report.evaluated == 3);
  CHECK(f.gitea.calls() == 3);
  CHECK(f.count_lines("warning gate side:") == 1);  // one summary line, not one per task
  CHECK(f.log.contains("pass cut short"));
}

TEST_CASE("a pass evaluates at most max_candidates_per_pass tasks and the next pass resumes at its cursor") {
  RigOptions o;
  o.gate.max_candidates_per_pass = 2;
  Rig f(o);
  std::vector<TaskRow> tasks;
  for (int i = 1; i <= 5; ++i) {
    tasks.push_back(f.idle_task("development", "SHOP-" + std::to_string(i), "sha" + std::to_string(i)));
    f.clock.advance(1s);
  }
  for (int i = 3; i <= 5; ++i) f.gitea.set_status("sha" + std::to_string(i), CiState::kSuccess);  // 1, 2 red
  f.clock.advance(31min);

  auto p1 = f.gate_side.run_once();  // the two oldest: red
  CHECK(p1.evaluated == 2);
  CHECK(p1.red == 2);
  auto p2 = f.gate_side.run_once();  // resumes after SHOP-2, not from the start
  CHECK(p2.evaluated == 2);
  REQUIRE(p2.unblocked.size() == 2);
  CHECK(p2.unblocked[0].work_item_key == "SHOP-3");
  CHECK(p2.unblocked[1].work_item_key == "SHOP-4");
  auto p3 = f.gate_side.run_once();
  REQUIRE(p3.unblocked.size() == 1);
  CHECK(p3.unblocked[0].work_item_key == "SHOP-5");
  auto p4 = f.gate_side.run_once();  // wrapped around: the red ones again
  CHECK(p4.red == 2);
  CHECK(p4.unblocked.empty());
}

TEST_CASE("a dry run reports what it would advance and changes nothing") {
  Rig f;
  TaskRow t = f.idle_task("development", "SHOP-1", "abc1234");
  f.gitea.set_status("abc1234", CiState::kSuccess);
  f.clock.advance(31min);
  const std::size_t rows = f.transitions(t.id);
  const std::size_t lines = f.info_lines();
  PassReport report = f.pass.run_once({.dry_run = true});
  REQUIRE(report.unblocked.size() == 1);
  auto lines_out = report.lines(/*dry_run=*/true);
  REQUIRE(lines_out.size() == 1);
  CHECK(lines_out[0] == "would advance SHOP-1 from development to review (ci success on abc1234) via gate");
  CHECK(f.transitions(t.id) == rows);
  CHECK(f.notifications() == 0);
  CHECK(f.info_lines() == lines);
  CHECK_FALSE(f.store->get_setting(kSettingReconcileSnapshot).value().has_value());
  // The real pass then does exactly what the dry run said.
  PassReport real = f.pass.run_once();
  REQUIRE(real.unblocked.size() == 1);
  CHECK(real.lines(false)[0] == "advanced SHOP-1 from development to review (ci success on abc1234) via gate");
}
