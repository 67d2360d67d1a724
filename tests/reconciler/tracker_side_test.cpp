// The tracker side (F-2) on a manual clock: lost In Progress / Approved / Rejected events are replayed through the
// handlers, in-sync items stay silent, the grace and active jobs hold a replay back, paging stops at the horizon,
// budgets and failures are contained, and a replay racing a live start webhook still makes one task and one job.
#include <doctest/doctest.h>

#include <algorithm>
#include <latch>
#include <thread>

#include <nlohmann/json.hpp>

#include "app/settings.h"
#include "reconciler/reconciler.h"
#include "tests/support/engine_fixture.h"
#include "tests/support/reconciler_rig.h"
#include "webhooks/handlers/handlers.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

// The Tracker contract says newest-updated first when asked; the table answers in id order, so sort here.
// Also counts list calls per project and can fail one project.
class SortedTracker final : public Tracker {
 public:
  explicit SortedTracker(Tracker& inner) : inner_(inner) {}
  void fail_project(const std::string& name, std::optional<Status> s) { failing_[name] = std::move(s); }
  int lists(const std::string& name) { return lists_[name]; }

  Result<TrackerState> classify_state(const ProjectSpec& p, const std::string& id) override {
    return inner_.classify_state(p, id);
  }
  Result<WorkItem> get_work_item(const ProjectSpec& p, const std::string& id) override {
    return inner_.get_work_item(p, id);
  }
  Status list_work_items(const ProjectSpec& p, bool newest_first,
                         const std::function<bool(const WorkItem&, TrackerState)>& visit) override {
    ++lists_[p.name];
    if (auto it = failing_.find(p.name); it != failing_.end() && it->second) return *it->second;
    std::vector<std::pair<WorkItem, TrackerState>> all;
    Status s = inner_.list_work_items(p, newest_first, [&](const WorkItem& w, TrackerState st) {
      all.emplace_back(w, st);
      return true;
    });
    if (!s.ok()) return s;
    if (newest_first)
      std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
        return a.first.updated_at.value_or(TimePoint::max()) > b.first.updated_at.value_or(TimePoint::max());
      });
    for (const auto& [w, st] : all)
      if (!visit(w, st)) break;
    return {};
  }
  Result<std::string> project_identifier(const ProjectSpec& p) override { return inner_.project_identifier(p); }
  Status move_work_item(const ProjectSpec& p, const std::string& id, TrackerState to) override {
    return inner_.move_work_item(p, id, to);
  }
  Status add_comment(const ProjectSpec& p, const std::string& id, const std::string& html,
                     const std::string& external_id = "") override {
    return inner_.add_comment(p, id, html, external_id);
  }

 private:
  Tracker& inner_;
  std::map<std::string, std::optional<Status>> failing_;
  std::map<std::string, int> lists_;
};

Config two_projects() {
  Config c = default_config();
  ProjectSpec blog = c.projects[0];
  blog.name = "blog";
  blog.gitea_repo = "acme/blog";
  blog.plane_project_id = "blog-project";
  c.projects.push_back(blog);
  return c;
}

struct Rig : ReconcilerRig {
  explicit Rig(TrackerSideOptions options = {}, Config c = default_config())
      : ReconcilerRig({.config = std::move(c),
                       .tracker = options,
                       .wrap_tracker = [](Tracker& table) { return std::make_unique<SortedTracker>(table); }}),
        sorted(static_cast<SortedTracker&>(*wrapped)) {}

  WorkItem item(int seq, const std::string& state, std::optional<TimePoint> updated) {
    WorkItem w{
        "wi-" + std::to_string(seq), shop().plane_project_id, seq, "Item " + std::to_string(seq), "", state, updated};
    plane.set_item(w);
    return w;
  }
  // A task in `stage` whose tracker state is recorded as `state` (what the webhook path leaves behind).
  TaskRow synced_task(const std::string& stage, int seq, const std::string& state) {
    TaskRow t = task_in(stage, "SHOP-" + std::to_string(seq));
    REQUIRE(t.work_item_id == "wi-SHOP-" + std::to_string(seq));
    TaskFacts facts;
    facts.tracker_state = state;
    REQUIRE(store->record_facts(t.id, facts, clock.now()).ok());
    return reload(t.id);
  }
  WorkItem item_for(const TaskRow& t, const std::string& state, std::optional<TimePoint> updated) {
    WorkItem w{t.work_item_id, shop().plane_project_id, 0, t.title, "", state, updated};
    plane.set_item(w);
    return w;
  }
  std::optional<TaskRow> task_of(const std::string& work_item_id) {
    return store->find_task_by_work_item(work_item_id).value();
  }

  SortedTracker& sorted;  // what the tracker side reads through
};

}  // namespace

TEST_CASE("an item In Progress with no task is started through the start handler, once") {
  Rig f;
  WorkItem w = f.item(7, "In Progress", f.clock.now() - 1h);
  PassReport report = f.pass.run_once();
  REQUIRE(report.tracker);
  REQUIRE(report.unblocked.size() == 1);
  auto task = f.task_of(w.id);
  REQUIRE(task);
  CHECK(task->work_item_key == "SHOP-7");
  CHECK(task->stage == "analysis");
  auto rows = f.store->transitions_for_task(task->id).value();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].from == "created");
  CHECK(rows[0].cause == Cause::kReconciler);
  CHECK(f.store->jobs_for_task(task->id).value().size() == 1);
  CHECK(f.log.contains("info reconciler: SHOP-7 created unblocked (lost webhook) via tracker"));
  CHECK(f.count_lines("unblocked (lost webhook)") == 1);
  auto notes = f.store->all_notifications().value();
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].dedup_key == "unblock:" + std::to_string(task->id) + ":2");

  f.finish_all_jobs();
  f.clock.advance(2h);
  const std::size_t lines = f.log.lines().size();
  PassReport again = f.pass.run_once();
  CHECK(again.unblocked.empty());
  CHECK(again.tracker->replayed == 0);
  CHECK(f.store->transitions_for_task(task->id).value().size() == 1);
  CHECK(f.store->all_notifications().value().size() == 1);
  CHECK(f.log.lines().size() == lines);
}

TEST_CASE("an item updated inside the grace waits — a missing timestamp counts as old enough") {
  Rig f;  // the grace of a start is the grace of `created`: the 15 min default
  WorkItem young = f.item(1, "In Progress", f.clock.now() - 5min);
  WorkItem undated = f.item(2, "In Progress", std::nullopt);
  auto r1 = f.tracker_side.run_once();
  CHECK(r1.young == 1);
  CHECK_FALSE(f.task_of(young.id));
  CHECK(f.task_of(undated.id));
  f.clock.advance(10min);  // exactly 15 min old: still inside
  f.tracker_side.run_once();
  CHECK_FALSE(f.task_of(young.id));
  f.clock.advance(1s);
  auto r3 = f.tracker_side.run_once();
  CHECK(r3.unblocked.size() == 1);
  CHECK(f.task_of(young.id));
}

TEST_CASE("Approved advances a task in a human stage — Rejected takes on_reject once") {
  Rig f;
  TaskRow a = f.synced_task("analysis", 1, "In Progress");
  TaskRow r = f.synced_task("analysis", 2, "In Progress");
  f.finish_all_jobs();
  f.item_for(a, "Approved", f.clock.now());
  f.item_for(r, "Rejected", f.clock.now());
  f.clock.advance(16min);
  PassReport report = f.pass.run_once();
  REQUIRE(report.unblocked.size() == 2);
  CHECK(f.reload(a.id).stage == "development");
  CHECK(f.store->transitions_for_task(a.id).value().back().cause == Cause::kReconciler);
  TaskRow rejected = f.reload(r.id);
  CHECK(rejected.stage == "analysis");
  CHECK(rejected.visit == r.visit + 1);
  CHECK(rejected.rejection_reason == "rejected in Plane");
  CHECK(f.log.contains("reconciler: SHOP-1 analysis unblocked (lost webhook) via tracker"));
  CHECK(f.log.contains("reconciler: SHOP-2 analysis unblocked (lost webhook) via tracker"));

  // The item still sits in Rejected, the analyst ran again: the verdict is not applied a second time.
  f.finish_all_jobs();
  f.clock.advance(1h);
  PassReport again = f.pass.run_once();
  CHECK(again.unblocked.empty());
  CHECK(f.reload(r.id).visit == rejected.visit);
  CHECK(f.store->all_notifications().value().size() == 2);
}

TEST_CASE("an item whose task has an active job is left to the agent's finish") {
  Rig f;
  TaskRow t = f.synced_task("analysis", 1, "In Progress");  // the analyst job is queued
  f.item_for(t, "Approved", f.clock.now());
  f.clock.advance(1h);
  auto busy = f.tracker_side.run_once();
  CHECK(busy.busy == 1);
  CHECK(busy.replayed == 0);
  CHECK(f.reload(t.id).stage == "analysis");
  f.finish_all_jobs();
  f.clock.advance(1min);
  auto done = f.tracker_side.run_once();
  CHECK(done.unblocked.size() == 1);
  CHECK(f.reload(t.id).stage == "development");
}

TEST_CASE("items in sync with their tasks stay silent: no writes, no lines") {
  Rig f;
  TaskRow dev = f.synced_task("development", 1, "In Progress");
  TaskRow ana = f.synced_task("analysis", 2, "In Progress");
  TaskRow appr = f.synced_task("review", 3, "Approved");
  TaskRow rej = f.synced_task("analysis", 4, "Rejected");  // its rejection was applied
  f.finish_all_jobs();
  for (const TaskRow* t : {&dev, &ana}) f.item_for(*t, "In Progress", f.clock.now());
  f.item_for(appr, "Approved", f.clock.now());
  f.item_for(rej, "Rejected", f.clock.now());
  f.clock.advance(1h);
  f.tracker_side.run_once();  // the first pass saves the project's horizon
  const std::size_t lines = f.log.lines().size();
  auto project = f.store->find_project("shop").value();
  REQUIRE(project);
  f.clock.advance(5min);
  auto report = f.tracker_side.run_once();
  CHECK(report.visited == 4);
  CHECK(report.in_sync == 4);
  CHECK(report.replayed == 0);
  CHECK(report.unblocked.empty());
  for (const TaskRow* t : {&dev, &ana, &appr, &rej}) {
    CHECK(f.reload(t->id).updated_at == t->updated_at);
    CHECK(f.reload(t->id).stage == t->stage);
  }
  CHECK(f.store->find_project("shop").value()->tracker_horizon == project->tracker_horizon);
  CHECK(f.store->all_notifications().value().empty());
  CHECK(f.log.lines().size() == lines);
}

TEST_CASE("incremental passes stop paging at the horizon — a full sweep runs on its slower cadence") {
  Rig f;  // longest grace: development's 30 min
  TaskRow older = f.synced_task("development", 1, "In Progress");
  TaskRow newer = f.synced_task("development", 2, "In Progress");
  f.finish_all_jobs();
  const TimePoint t0 = f.clock.now();
  f.item_for(older, "In Progress", t0 - 3h);
  f.item_for(newer, "In Progress", t0 - 2h);

  auto first = f.tracker_side.run_once();  // no horizon yet: a full sweep
  CHECK(first.full_sweeps == 1);
  CHECK(first.visited == 2);
  auto row = f.store->find_project("shop").value();
  REQUIRE(row);
  CHECK(row->tracker_horizon == t0 - 2h);
  CHECK(row->tracker_full_sweep == t0);

  f.clock.advance(1min);
  auto second = f.tracker_side.run_once();  // back to horizon - 30 min: the 3 h old item is not reached
  CHECK(second.full_sweeps == 0);
  CHECK(second.visited == 1);

  // A lost start newer than the horizon is found by the incremental pass.
  WorkItem lost = f.item(9, "In Progress", f.clock.now() - 20min);
  auto third = f.tracker_side.run_once();
  CHECK(third.full_sweeps == 0);
  CHECK(third.unblocked.size() == 1);
  CHECK(f.task_of(lost.id));
  CHECK(f.store->find_project("shop").value()->tracker_horizon == *lost.updated_at);

  f.clock.advance(1h);  // the full sweep is due again
  f.finish_all_jobs();
  auto sweep = f.tracker_side.run_once();
  CHECK(sweep.full_sweeps == 1);
  CHECK(sweep.visited == 3);
  CHECK(f.tracker_side.run_once(/*dry_run=*/false, /*full_sweep=*/true).full_sweeps == 1);  // the CLI's --once
}

TEST_CASE("an item left for later (its task busy) holds the horizon back so the next pass reaches it") {
  Rig f;
  TaskRow calm = f.synced_task("development", 2, "In Progress");
  f.finish_all_jobs();
  TaskRow busy = f.synced_task("analysis", 1, "In Progress");  // its analyst job stays queued
  const TimePoint t0 = f.clock.now();
  f.item_for(busy, "Approved", t0 - 2h);  // approved long ago, while the analyst was still running
  f.item_for(calm, "In Progress", t0);
  auto p1 = f.tracker_side.run_once();
  CHECK(p1.busy == 1);
  // Not t0 (the newest item seen): the busy item's updated_at plus the longest grace (30 min).
  CHECK(f.store->find_project("shop").value()->tracker_horizon == t0 - 2h + 30min);

  f.finish_all_jobs();
  f.clock.advance(1min);
  auto p2 = f.tracker_side.run_once();
  CHECK(p2.full_sweeps == 0);
  REQUIRE(p2.unblocked.size() == 1);
  CHECK(f.reload(busy.id).stage == "development");
  CHECK(f.store->find_project("shop").value()->tracker_horizon == t0);
}

TEST_CASE("replays per pass are capped — the rest wait for the next pass") {
  TrackerSideOptions o;
  o.max_replays_per_pass = 2;
  Rig f(o);
  for (int i = 1; i <= 3; ++i) f.item(i, "In Progress", f.clock.now() - 1h - std::chrono::minutes(i));
  auto p1 = f.tracker_side.run_once();
  CHECK(p1.unblocked.size() == 2);
  auto p2 = f.tracker_side.run_once();
  CHECK(p2.unblocked.size() == 1);
  CHECK(f.store->count_tasks().value() == 3);
}

TEST_CASE("one failing item and one failing project do not stop the pass — Plane down backs the project off") {
  Rig f(TrackerSideOptions{}, two_projects());
  f.plane.set_item(WorkItem{"", f.shop().plane_project_id, 1, "no id", "", "In Progress", std::nullopt});
  WorkItem good = f.item(2, "In Progress", std::nullopt);
  f.sorted.fail_project("blog", unavailable("plane: 429 Too Many Requests"));
  PassReport report = f.pass.run_once();
  REQUIRE(report.tracker);
  CHECK(report.tracker->failed >= 1);
  CHECK(report.tracker->projects_failed == 1);
  CHECK(f.task_of(good.id));
  CHECK(report.unblocked.size() == 1);
  CHECK(f.log.contains("warning tracker side: project blog skipped"));
  CHECK_FALSE(report.error.empty());

  CHECK(f.sorted.lists("blog") == 1);
  f.clock.advance(30s);  // inside the backoff: Plane is not asked for that project
  f.tracker_side.run_once();
  CHECK(f.sorted.lists("blog") == 1);
  CHECK(f.sorted.lists("shop") == 2);
  f.sorted.fail_project("blog", std::nullopt);
  f.clock.advance(31s);
  auto back = f.tracker_side.run_once();
  CHECK(f.sorted.lists("blog") == 2);
  CHECK(back.projects_failed == 0);
}

TEST_CASE("a tracker-side dry run reports starts and verdicts it would replay and changes nothing") {
  Rig f;
  TaskRow t = f.synced_task("analysis", 1, "In Progress");
  f.finish_all_jobs();
  f.item_for(t, "Approved", f.clock.now());
  f.item(9, "In Progress", std::nullopt);
  f.clock.advance(1h);
  const std::size_t lines = f.log.lines().size();
  PassReport report = f.pass.run_once({.dry_run = true});
  auto out = report.lines(true);
  REQUIRE(out.size() == 2);
  CHECK(std::find(out.begin(), out.end(), "would approve SHOP-1 (analysis -> development) via tracker") != out.end());
  CHECK(std::find(out.begin(), out.end(), "would start SHOP-9 (created -> analysis) via tracker") != out.end());
  CHECK(f.reload(t.id).stage == "analysis");
  CHECK_FALSE(f.task_of("wi-9"));
  CHECK_FALSE(f.store->find_project("shop").value());
  CHECK(f.store->all_notifications().value().empty());
  CHECK(f.log.lines().size() == lines);
}

TEST_CASE("the tracker side racing a live start webhook always ends with one task and one first job") {
  Rig f;
  constexpr int kRounds = 64;
  int webhook_won = 0, reconciler_won = 0;
  for (int n = 1; n <= kRounds; ++n) {
    WorkItem w = f.item(1000 + n, "In Progress", f.clock.now() - 1h);
    std::latch go(2);
    Result<HandleOutcome> live = Status{Code::kInternal, "not run"};
    // Stagger the webhook over the span of a tracker pass (spinning, not sleeping), so both orders and the
    // overlapping claim itself all occur across the rounds.
    const auto delay = std::chrono::microseconds(4 * (n % 16));
    std::thread webhook([&] {
      go.arrive_and_wait();
      const auto until = std::chrono::steady_clock::now() + delay;
      while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
      live = f.handlers.handle_status_start(f.shop(), w, Cause::kWebhook);
    });
    go.arrive_and_wait();
    TrackerSideReport report = f.tracker_side.run_once();
    webhook.join();

    REQUIRE(live.ok());
    CHECK(report.failed == 0);
    auto task = f.task_of(w.id);
    REQUIRE(task);
    CHECK(task->stage == "analysis");
    CHECK(f.store->jobs_for_task(task->id).value().size() == 1);
    CHECK(f.store->transitions_for_task(task->id).value().size() == 1);
    const bool live_changed = live.value().kind == HandleOutcome::Kind::kChanged;
    CHECK(static_cast<int>(live_changed) + static_cast<int>(report.unblocked.size()) == 1);
    live_changed ? ++webhook_won : ++reconciler_won;
    f.plane.set_state(w.id, "Done");
  }
  CHECK(f.store->count_tasks().value() == kRounds);
  MESSAGE("webhook won " << webhook_won << ", reconciler won " << reconciler_won);
}
