// The reconcile pass and its thread: kill switches (start-up defaults, persisted values, flips between passes),
// the sweeper's place in a pass, prompt stop / poke, and convergence: with a share of the events lost, repeated
// passes bring every item to done with exactly one unblock per lost event, and none when nothing is lost.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>

#include <nlohmann/json.hpp>

#include "app/queue_document.h"
#include "app/settings.h"
#include "reconciler/reconciler.h"
#include "tests/support/engine_fixture.h"
#include "tests/support/reconciler_rig.h"
#include "tests/support/flag_leadership.h"
#include "webhooks/handlers/handlers.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

struct Rig : ReconcilerRig {
  explicit Rig(ReconcileDefaults defaults = {}, bool with_sweeper = false, const Leadership* leadership = nullptr)
      : ReconcilerRig({.defaults = defaults, .with_sweeper = with_sweeper, .leadership = leadership}) {}

  // A development task idle past its grace with green CI: what a lost CI webhook leaves behind.
  TaskRow stuck_in_development(const std::string& key, const std::string& sha) {
    TaskRow t = task_in("development", key);
    finish_all_jobs();
    gitea.set_branch(t.branch, sha);
    gitea.set_status(sha, CiState::kSuccess);
    return t;
  }
};

}  // namespace

TEST_CASE("the kill switch: a persisted 0 stops every pass, a flip back applies on the next pass") {
  Rig f;
  TaskRow t = f.stuck_in_development("SHOP-1", "abc1234");
  f.plane.set_item(WorkItem{"wi-9", f.shop().plane_project_id, 9, "t", "", "In Progress", std::nullopt});
  f.clock.advance(31min);
  f.set(kSettingReconcileEnabled, "0");  // `orch reconcile disable`, from another process
  const int plane_calls = f.plane.calls();
  PassReport off = f.pass.run_once();
  CHECK_FALSE(off.enabled);
  CHECK_FALSE(off.ran);
  CHECK(f.gitea.calls() == 0);
  CHECK(f.plane.calls() == plane_calls);
  CHECK(f.reload(t.id).stage == "development");
  CHECK_FALSE(f.has_snapshot());

  f.set(kSettingReconcileEnabled, "1");  // `orch reconcile enable`
  PassReport on = f.pass.run_once();
  CHECK(on.ran);
  CHECK(on.unblocked.size() == 2);
  CHECK(f.reload(t.id).stage == "review");
  CHECK(f.has_snapshot());
}

TEST_CASE("the persisted switch wins over the start-up default, both ways") {
  SUBCASE("default off, persisted on") {
    Rig f(ReconcileDefaults{.enabled = false});
    TaskRow t = f.stuck_in_development("SHOP-1", "abc1234");
    f.clock.advance(31min);
    CHECK_FALSE(f.pass.run_once().ran);
    CHECK(f.reload(t.id).stage == "development");
    f.set(kSettingReconcileEnabled, "1");
    CHECK(f.pass.run_once().ran);
    CHECK(f.reload(t.id).stage == "review");
  }
  SUBCASE("default on, persisted off") {
    Rig f(ReconcileDefaults{.enabled = true});
    f.set(kSettingReconcileEnabled, "0");
    CHECK_FALSE(f.pass.run_once().ran);
  }
  SUBCASE("an unreadable value falls back to the default and says so") {
    Rig f(ReconcileDefaults{.enabled = true});
    f.set(kSettingReconcileEnabled, "maybe");
    CHECK(f.pass.run_once().ran);
    CHECK(f.log.contains("reconciler.enabled is 'maybe'"));
  }
}

TEST_CASE("the plane switch stops only the tracker side, and flips apply between passes") {
  Rig f(ReconcileDefaults{.plane_enabled = false});
  TaskRow t = f.stuck_in_development("SHOP-1", "abc1234");
  f.plane.set_item(WorkItem{"wi-9", f.shop().plane_project_id, 9, "t", "", "In Progress", std::nullopt});
  f.clock.advance(31min);
  const int plane_calls = f.plane.calls();

  PassReport p1 = f.pass.run_once();  // start-up default: tracker side off
  CHECK(p1.ran);
  CHECK_FALSE(p1.plane_enabled);
  CHECK_FALSE(p1.tracker);
  CHECK(f.plane.calls() == plane_calls);
  CHECK(f.reload(t.id).stage == "review");  // the gate side still ran
  CHECK_FALSE(f.store->find_task_by_work_item("wi-9").value());

  f.set(kSettingReconcilePlaneEnabled, "1");
  PassReport p2 = f.pass.run_once();
  REQUIRE(p2.tracker);
  CHECK(f.store->find_task_by_work_item("wi-9").value());

  f.set(kSettingReconcilePlaneEnabled, "0");
  f.plane.set_item(WorkItem{"wi-10", f.shop().plane_project_id, 10, "t", "", "In Progress", std::nullopt});
  PassReport p3 = f.pass.run_once();
  CHECK_FALSE(p3.tracker);
  CHECK_FALSE(f.store->find_task_by_work_item("wi-10").value());
}

TEST_CASE("a pass runs the sweeper after both sides, and a task whose worker died is reconciled later") {
  Rig f({}, /*with_sweeper=*/true);
  TaskRow t = f.task_in("development", "SHOP-1");
  auto analyst = f.store->claim_job("w/1", f.clock.now()).value();
  REQUIRE(analyst);
  REQUIRE(f.store->finish_job(analyst->id, JobStatus::kSucceeded, "", f.clock.now()).ok());
  auto job = f.store->claim_job("dead/1", f.clock.now()).value();  // the worker dies holding the developer job
  REQUIRE(job);
  REQUIRE(job->stage == "development");
  f.gitea.set_branch(t.branch, "abc1234");
  f.gitea.set_status("abc1234", CiState::kSuccess);
  f.clock.advance(10min);
  PassReport p1 = f.pass.run_once();
  REQUIRE(p1.sweep);
  CHECK(p1.sweep->orphaned == 1);
  CHECK(p1.unblocked.empty());  // the job was still running when the gate side looked
  // The sweeper queued the orphan's next attempt (AttemptPolicy, Retry::kNow): a live worker runs it.
  CHECK(p1.sweep->retried == 1);
  f.finish_all_jobs();
  f.clock.advance(31min);
  PassReport p2 = f.pass.run_once();
  REQUIRE(p2.unblocked.size() == 1);
  CHECK(f.reload(t.id).stage == "review");
  CHECK_FALSE(f.pass.run_once({.dry_run = true}).sweep);  // a dry run sweeps nothing
}

TEST_CASE("the snapshot keeps the running total across passes and reports the last pass's error") {
  Rig f;
  f.stuck_in_development("SHOP-1", "sha1");
  f.clock.advance(31min);
  f.pass.run_once();
  f.stuck_in_development("SHOP-2", "sha2");
  f.clock.advance(31min);
  f.gitea.fail_with(invalid("gitea: 404 repository not found"));  // the review gate of SHOP-1 cannot be read
  f.finish_all_jobs();
  f.clock.advance(1h);
  f.pass.run_once();
  auto snap = f.snapshot();
  CHECK(snap["unblocked_total"] == 1);
  CHECK(snap["last_unblocked"] == "SHOP-1");
  CHECK(snap["last_error"].get<std::string>().find("404") != std::string::npos);
  f.gitea.fail_with(std::nullopt);
  f.clock.advance(2h);
  f.pass.run_once();
  snap = f.snapshot();
  CHECK(snap["unblocked_total"] == 2);
  CHECK(snap["last_unblocked"] == "SHOP-2");
  CHECK(snap["last_error"].is_null());
  // What /queue.json shows, from the database alone.
  auto doc = queue_document(*f.store, f.clock.now(), QueueDefaults{}, waiting_rules(f.settings, f.pipeline)).value();
  CHECK(doc["reconciler"]["unblocked_total"] == 2);
  CHECK(doc["reconciler"]["last_unblocked"] == "SHOP-2");
}

TEST_CASE("the reconciler thread runs a pass at start, at once when poked, and stops promptly") {
  Rig f;
  Reconciler reconciler(f.pass, std::chrono::hours(1), f.log);
  const auto before = reconciler.last_tick();
  reconciler.start();
  CHECK(reconciler.running());
  REQUIRE(eventually([&] { return f.has_snapshot(); }, 10s));
  const auto first = reconciler.last_tick();
  CHECK(first >= before);
  reconciler.poke();
  REQUIRE(eventually([&] { return reconciler.last_tick() > first; }, 10s));
  const auto t0 = std::chrono::steady_clock::now();
  reconciler.stop();
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);  // an hour-long interval does not delay stop()
  CHECK_FALSE(reconciler.running());
  reconciler.stop();  // idempotent
}

namespace {

// One run of the pipeline for `n` items while each transition-causing event is lost with probability `loss`.
// The world acts like Plane, Gitea and the worker pool: an agent finishes (its gate still red), then the truth
// moves (the item is approved, CI turns green, the PR is approved) and the matching event is delivered or lost.
struct Convergence {
  int dropped = 0;
  long long unblocked_total = 0;
  std::size_t notifications = 0;
  bool all_done = true;
};

Convergence converge(int n, double loss, unsigned seed) {
  Rig f;
  std::mt19937 rng(seed);
  std::bernoulli_distribution lost(loss);
  Convergence out;
  struct World {
    bool started = false, approved = false, ci = false, reviewed = false;
  };
  std::vector<World> world(n);
  auto deliver = [&](const std::function<void()>& event) {
    if (lost(rng))
      ++out.dropped;
    else
      event();
  };
  auto item = [&](int i, const char* state) {
    WorkItem w{"conv-" + std::to_string(i), f.shop().plane_project_id, i + 1, "Item", "", state, f.clock.now()};
    f.plane.set_item(w);
    return w;
  };
  auto all_done = [&] {
    for (int i = 0; i < n; ++i) {
      auto t = f.store->find_task_by_work_item("conv-" + std::to_string(i)).value();
      if (!t || t->stage != "done") return false;
    }
    return true;
  };

  for (int tick = 0; tick < 400 && !all_done(); ++tick) {
    f.clock.advance(1min);
    while (auto job = f.store->claim_job("w/1", f.clock.now()).value()) {  // the worker pool
      REQUIRE(f.store->finish_job(job->id, JobStatus::kSucceeded, "", f.clock.now()).ok());
      (void)f.engine.advance_if_gate_passed(job->task_id, Cause::kAgent, job->agent);
    }
    for (int i = 0; i < n; ++i) {
      World& w = world[i];
      if (!w.started) {
        if (tick < i) continue;  // items arrive over time
        w.started = true;
        WorkItem wi = item(i, "In Progress");
        deliver([&] { REQUIRE(f.handlers.handle_status_start(f.shop(), wi, Cause::kWebhook).ok()); });
        continue;
      }
      auto task = f.store->find_task_by_work_item("conv-" + std::to_string(i)).value();
      if (!task) continue;
      bool busy = false;
      const std::vector<JobRow> jobs = f.store->jobs_for_task(task->id).value();
      for (const JobRow& j : jobs) busy = busy || j.status == JobStatus::kQueued || j.status == JobStatus::kRunning;
      if (busy) continue;
      if (task->stage == "analysis" && !w.approved) {
        w.approved = true;
        WorkItem wi = item(i, "Approved");
        deliver([&] { REQUIRE(f.handlers.handle_verdict(f.shop(), wi, true, "", Cause::kWebhook).ok()); });
      } else if (task->stage == "development" && !w.ci) {
        w.ci = true;
        const std::string sha = "sha" + std::to_string(i);
        f.gitea.set_branch(task->branch, sha);
        f.gitea.set_status(sha, CiState::kSuccess);
        deliver([&] { REQUIRE(f.engine.advance_if_gate_passed(task->id, Cause::kWebhook).ok()); });
      } else if (task->stage == "review" && !w.reviewed) {
        w.reviewed = true;
        f.gitea.set_pr(task->branch,
                       PullRequestInfo{i + 1, true, false, task->branch, "sha" + std::to_string(i), "main", ""});
        f.gitea.set_approved(i + 1, true);
        deliver([&] { REQUIRE(f.engine.advance_if_gate_passed(task->id, Cause::kWebhook).ok()); });
      }
    }
    PassReport report = f.pass.run_once();
    CHECK(report.error.empty());
  }

  out.all_done = all_done();
  CHECK(f.store->count_tasks().value() == n);
  for (int i = 0; i < n; ++i) {
    auto t = f.store->find_task_by_work_item("conv-" + std::to_string(i)).value();
    REQUIRE(t);
    auto rows = f.store->transitions_for_task(t->id).value();
    CHECK(rows.size() == 4);  // created -> analysis -> development -> review -> done, nothing twice
    CHECK(f.store->jobs_for_task(t->id).value().size() == 3);
  }
  out.unblocked_total = f.snapshot()["unblocked_total"].get<long long>();
  out.notifications = f.store->all_notifications().value().size();
  return out;
}

}  // namespace

TEST_CASE("convergence: with 30% of events lost every item reaches done, with one unblock per lost event") {
  Convergence c = converge(/*n=*/24, /*loss=*/0.3, /*seed=*/7);
  MESSAGE("lost " << c.dropped << " of 96 events; unblocked " << c.unblocked_total);
  CHECK(c.all_done);
  CHECK(c.dropped > 10);  // the seed loses a fair share of the 96 events
  CHECK(c.unblocked_total == c.dropped);
  CHECK(c.notifications == static_cast<std::size_t>(c.dropped));
}

TEST_CASE("convergence: with no loss the reconciler never unblocks anything") {
  Convergence c = converge(/*n=*/24, /*loss=*/0.0, /*seed=*/7);
  CHECK(c.all_done);
  CHECK(c.dropped == 0);
  CHECK(c.unblocked_total == 0);
  CHECK(c.notifications == 0);
}

TEST_CASE("deliveries still queued in the inbox defer both sides: a queued event is not a lost one") {
  Rig f;
  ReconcilePass pass(
      ReconcileParts{.store = *f.store, .gate = f.gate_side, .tracker = &f.tracker_side, .leadership = f.sole}, f.clock,
      f.log, {});
  TaskRow t = f.stuck_in_development("SHOP-1", "abc1234");
  f.clock.advance(31min);
  // The CI webhook arrived and was acknowledged, but the inbox processor has not reached it yet.
  NewDelivery d{Source::kGitea, "d-1", "status", "digest-1", "{}", f.clock.now()};
  REQUIRE(f.store->insert_delivery(d, false).ok());
  PassReport deferred = pass.run_once();
  CHECK(deferred.ran);
  CHECK(deferred.deferred_for_inbox == 1);
  CHECK(deferred.unblocked.empty());
  CHECK(f.gitea.calls() == 0);
  CHECK(f.reload(t.id).stage == "development");
  CHECK(f.store->all_notifications().value().empty());

  auto row = f.store->next_pending_delivery(0).value();
  REQUIRE(f.store->finish_delivery(row->seq, {DeliveryStatus::kHandled, "", 0, ""}, f.clock.now()).ok());
  PassReport after = pass.run_once();  // the inbox is drained: a still-stuck task is now truly stuck
  CHECK(after.deferred_for_inbox == 0);
  CHECK(after.unblocked.size() == 1);
  CHECK(f.reload(t.id).stage == "review");
}

TEST_CASE("a pass runs only on the leader, and stops between tasks the moment this replica stops leading") {
  FlagLeadership leadership(false);
  Rig f({}, /*with_sweeper=*/true, &leadership);
  for (const char* key : {"SHOP-1", "SHOP-2", "SHOP-3"}) f.stuck_in_development(key, std::string("sha-") + key);
  f.clock.advance(31min);

  // A follower does nothing at all: no transition, no Plane call, no snapshot.
  const int plane_calls = f.plane.calls();
  PassReport follower = f.pass.run_once();
  CHECK_FALSE(follower.leader);
  CHECK_FALSE(follower.ran);
  CHECK(f.store->recent_transitions(10).value().size() == 6);  // only the seeding: 3 tasks x 2 steps
  CHECK(f.plane.calls() == plane_calls);
  CHECK_FALSE(f.has_snapshot());

  // The leader loses its lock right after its first unblock: the pass stops before the next task.
  leadership.set(true);
  bool lost_once = false;
  f.bus.subscribe("lock lost", [&leadership, &lost_once](const TransitionFired&) {
    if (!lost_once) leadership.set(false);
    lost_once = true;
    return Status{};
  });
  PassReport cut = f.pass.run_once();
  CHECK(cut.leader);
  CHECK(cut.interrupted);
  CHECK(cut.unblocked.size() == 1);
  CHECK_FALSE(cut.sweep.has_value());  // the sweeper is the next leader's
  CHECK(f.log.contains("stopped leading during the pass"));

  // Leading again (or another replica taking over with the same store), the rest is picked up.
  leadership.set(true);
  f.clock.advance(1s);
  PassReport rest = f.pass.run_once();
  CHECK(rest.unblocked.size() + cut.unblocked.size() == 3);
}

TEST_CASE(
    "each unblock's notification is queued, and the unblock counted in the snapshot, before the pass touches "
    "the next task, so a killed leader loses at most the one in flight") {
  Rig f;
  for (const char* key : {"SHOP-1", "SHOP-2", "SHOP-3"}) f.stuck_in_development(key, std::string("sha-") + key);
  f.clock.advance(31min);

  // At each reconciler transition, how many notifications are already in the outbox: the earlier ones' only.
  // And what the snapshot's unblocked_total says at that moment.
  std::vector<std::size_t> queued_before;
  std::vector<long long> counted_before;
  f.bus.subscribe("outbox probe", [&f, &queued_before, &counted_before](const TransitionFired& t) {
    if (t.cause != Cause::kReconciler) return Status{};
    queued_before.push_back(f.store->all_notifications().value().size());
    counted_before.push_back(f.has_snapshot() ? f.snapshot().value("unblocked_total", 0LL) : 0);
    return Status{};
  });
  PassReport report = f.pass.run_once();
  REQUIRE(report.unblocked.size() == 3);
  CHECK(queued_before == std::vector<std::size_t>{0, 1, 2});
  CHECK(counted_before == std::vector<long long>{0, 1, 2});
  CHECK(f.store->all_notifications().value().size() == 3);
  CHECK(f.snapshot()["unblocked_total"] == 3);  // counted once each: not again at the end of the pass
  CHECK(f.snapshot()["last_unblocked"] == report.unblocked.back().work_item_key);
  CHECK(f.snapshot().contains("last_pass_started_at"));
  f.clock.advance(31min);
  CHECK(f.pass.run_once().unblocked.empty());
  CHECK(f.snapshot()["unblocked_total"] == 3);
}
