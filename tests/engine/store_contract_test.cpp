// tests/engine/store_contract_test.cpp: the Store contract, every case run on both implementations: SqliteStore on a
// fresh file in a TempDir, PgStore on a fresh database of the test PostgreSQL server (tests/support/pg_server.h).
// Each case is registered once per backend, named "store: ...<sqlite>" and "store: ...<pg>". Time comes from a
// ManualClock; races run real threads, and go through several store instances (separate pools and connections,
// as separate processes or replicas would) on one database. Nothing sleeps.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "engine/store/pg_store.h"
#include "engine/store/sqlite_store.h"
#include "tests/support/manual_clock.h"
#include "tests/support/pg_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/new_task.h"

namespace orch {
namespace {

using testing::kMonday9am;
using testing::ManualClock;
using testing::TempDir;
using namespace std::chrono_literals;

// A backend makes one database and opens any number of stores on it (each its own pool of connections).
struct SqliteBackend {
  TempDir dir;
  std::unique_ptr<Store> open() {
    auto store = SqliteStore::open(dir.file("orch.db"));
    REQUIRE_MESSAGE(store.ok(), store.status().message);
    return std::move(store).value();
  }
};

struct PgBackend {
  std::string url = testing::fresh_pg_database();  // throws (the case fails) when no server can be had
  std::unique_ptr<Store> open() {
    auto store = PgStore::open(url);
    REQUIRE_MESSAGE(store.ok(), store.status().message);
    return std::move(store).value();
  }
};

}  // namespace
}  // namespace orch

TYPE_TO_STRING_AS("sqlite", orch::SqliteBackend);
TYPE_TO_STRING_AS("pg", orch::PgBackend);

// This file is compiled twice (CMakeLists.txt): into engine_tests with the SQLite backend and into engine_pg_tests,
// the executable whose tests need the shared PostgreSQL server, with the PostgreSQL one. The names stay
// "store: ...<sqlite>" and "store: ...<pg>".
#ifndef ORCH_CONTRACT_BACKENDS
#define ORCH_CONTRACT_BACKENDS orch::SqliteBackend
#endif

namespace orch {
namespace {

using testing::new_task;

TaskId make_task(Store& store, const std::string& id, TimePoint now) {
  auto claim = store.create_task_atomic(new_task(id), now);
  REQUIRE_MESSAGE(claim.ok(), claim.status().message);
  REQUIRE(claim->created);
  return claim->task.id;
}

TaskRow task_of(Store& store, TaskId id) {
  auto row = store.find_task(id);
  REQUIRE(row.ok());
  REQUIRE(row->has_value());
  return *row.value();
}

JobRow enqueue(Store& store, TaskId task, int visit, int attempt, TimePoint now, TimePoint run_after) {
  NewJob job{task, visit, "analysis", "analyst", attempt, run_after};
  auto row = store.enqueue_job(job, now);
  REQUIRE_MESSAGE(row.ok(), row.status().message);
  REQUIRE(row->has_value());
  return *row.value();
}

NewDelivery delivery(Source source, const std::string& id, const std::string& digest, TimePoint at) {
  NewDelivery d;
  d.source = source;
  d.delivery_id = id;
  d.event = source == Source::kPlane ? "issue" : "status";
  d.body_digest = digest;
  d.body = "{\"id\":\"" + id + "\"}";
  d.received_at = at;
  return d;
}

// A Gitea delivery of `lane` (digest dedup off, as for Gitea).
NewDelivery lane_delivery(const std::string& id, const std::string& lane, TimePoint at) {
  NewDelivery d = delivery(Source::kGitea, id, "h-" + id, at);
  d.lane = lane;
  return d;
}

DeliverySeq insert(Store& store, const NewDelivery& d) {
  auto in = store.insert_delivery(d, false);
  REQUIRE_MESSAGE(in.ok(), in.status().message);
  REQUIRE_FALSE(in->duplicate);
  return in->seq;
}

DeliveryRow delivery_row(Store& store, const std::string& delivery_id) {
  auto row = store.find_delivery(delivery_id);
  REQUIRE_MESSAGE(row.ok(), row.status().message);
  REQUIRE(row->has_value());
  return *row.value();
}

// The delivery claim_delivery hands out, or "-" for none (and "error: ..." on failure): one string to compare.
std::string claim(Store& store, const std::string& claimer, TimePoint now, Millis lease = 1min) {
  auto claimed = store.claim_delivery(claimer, now, lease);
  if (!claimed.ok()) return "error: " + claimed.status().message;
  return claimed.value() ? claimed.value()->delivery_id : "-";
}

std::vector<NotificationId> ids_of(const std::vector<NotificationRow>& rows) {
  std::vector<NotificationId> ids;
  for (const NotificationRow& r : rows) ids.push_back(r.id);
  return ids;
}

TaskFacts sha_fact(const std::string& sha) {
  TaskFacts f;
  f.head_sha = sha;
  return f;
}

std::vector<TaskId> ids_of(const std::vector<TaskRow>& rows) {
  std::vector<TaskId> ids;
  for (const TaskRow& r : rows) ids.push_back(r.id);
  return ids;
}

TEST_CASE_TEMPLATE("store: create_task_atomic creates a task once and returns the existing one afterwards", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  auto first = store->create_task_atomic(new_task("42"), clock.now());
  REQUIRE(first.ok());
  CHECK(first->created);
  const TaskRow& t = first->task;
  CHECK(t.stage == "created");
  CHECK(t.visit == 1);
  CHECK(t.work_item_key == "SHOP-42");
  CHECK(t.branch == "orch/shop-42");
  CHECK(t.created_at == kMonday9am);
  CHECK(t.entered_stage_at == kMonday9am);
  CHECK(t.updated_at == kMonday9am);
  CHECK_FALSE(t.blocked);
  CHECK(t.pr_state == PrState::kNone);
  CHECK_FALSE(t.pr_number.has_value());

  clock.advance(1min);
  NewTask again = new_task("42");
  again.title = "a retitled copy";
  auto second = store->create_task_atomic(again, clock.now());
  REQUIRE(second.ok());
  CHECK_FALSE(second->created);
  CHECK(second->task.id == t.id);
  CHECK(second->task.title == "title 42");  // the loser writes nothing
  CHECK(second->task.updated_at == kMonday9am);
  CHECK(store->count_tasks().value() == 1);
  CHECK(store->find_task_by_work_item("wi-42").value()->id == t.id);
  CHECK_FALSE(store->find_task_by_work_item("wi-43").value().has_value());
  CHECK(store->create_task_atomic(new_task(""), clock.now()).ok());  // "wi-": a valid id
  NewTask empty;
  CHECK(store->create_task_atomic(empty, clock.now()).status().code == Code::kInvalid);
}

TEST_CASE_TEMPLATE("store: 16 threads racing for the same work items create each exactly once", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  constexpr int kThreads = 16;
  constexpr int kRounds = 40;
  std::vector<std::array<int, kThreads>> created(kRounds);
  std::vector<std::array<TaskId, kThreads>> ids(kRounds);
  std::atomic<int> errors{0};
  std::barrier start_round(kThreads);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int round = 0; round < kRounds; ++round) {
          start_round.arrive_and_wait();
          auto claim = store->create_task_atomic(new_task(std::to_string(round)), kMonday9am);
          if (!claim.ok()) {
            ++errors;
            continue;
          }
          created[round][t] = claim->created ? 1 : 0;
          ids[round][t] = claim->task.id;
        }
      });
    }
  }
  CHECK(errors.load() == 0);
  for (int round = 0; round < kRounds; ++round) {
    int winners = 0;
    for (int t = 0; t < kThreads; ++t) winners += created[round][t];
    CHECK_MESSAGE(winners == 1, "round " << round);
    CHECK(std::all_of(ids[round].begin(), ids[round].end(), [&](TaskId id) { return id == ids[round][0]; }));
  }
  CHECK(store->count_tasks().value() == kRounds);
}

TEST_CASE_TEMPLATE("store: idle_tasks lists live tasks past the cutoff with no active job", B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  const TimePoint t0 = clock.now();
  TaskId plain = make_task(*store, "plain", clock.now());
  clock.advance(1min);
  TaskId queued = make_task(*store, "queued", clock.now());
  enqueue(*store, queued, 1, 1, clock.now(), clock.now() + 1h);  // not claimable, still active
  clock.advance(1min);
  TaskId running = make_task(*store, "running", clock.now());
  enqueue(*store, running, 1, 1, clock.now(), clock.now());
  REQUIRE(store->claim_job("w/1", clock.now()).value()->task_id == running);
  clock.advance(1min);
  TaskId finished = make_task(*store, "finished", clock.now());
  enqueue(*store, finished, 1, 1, clock.now(), clock.now());
  JobRow job = store->claim_job("w/1", clock.now()).value().value();
  REQUIRE(store->finish_job(job.id, JobStatus::kSucceeded, "", clock.now()).ok());
  clock.advance(1min);
  TaskId done = make_task(*store, "done", clock.now());
  REQUIRE(store->apply_transition({done, "created", "done", Cause::kManual, "", std::nullopt, clock.now()}).ok());
  clock.advance(1min);
  TaskId last = make_task(*store, "last", clock.now());
  const TimePoint last_at = clock.now();

  SUBCASE("terminal tasks and tasks with a queued or running job are left out") {
    auto idle = store->idle_tasks(t0 + 1h, {}, 100);
    REQUIRE(idle.ok());
    CHECK(ids_of(idle.value()) == std::vector<TaskId>{plain, finished, last});
  }
  SUBCASE("the cutoff is strict: a task updated exactly at idle_before is not idle yet") {
    CHECK(ids_of(store->idle_tasks(last_at, {}, 100).value()) == std::vector<TaskId>{plain, finished});
    CHECK(ids_of(store->idle_tasks(last_at + 1ms, {}, 100).value()) == std::vector<TaskId>{plain, finished, last});
    CHECK(store->idle_tasks(t0, {}, 100).value().empty());
  }
  SUBCASE("a finished job no longer holds the task back, and any update moves it to the back") {
    REQUIRE(store->record_facts(plain, sha_fact("abc"), clock.now() + 1s).ok());
    CHECK(ids_of(store->idle_tasks(t0 + 1h, {}, 100).value()) == std::vector<TaskId>{finished, last, plain});
  }
  SUBCASE("limit must be positive") { CHECK(store->idle_tasks(t0 + 1h, {}, 0).status().code == Code::kInvalid); }
}

TEST_CASE_TEMPLATE("store: idle_tasks pages by (updated_at, id) strictly after the cursor", B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  std::vector<TaskId> expected;
  for (int i = 0; i < 3; ++i) expected.push_back(make_task(*store, "a" + std::to_string(i), clock.now()));
  clock.advance(1s);
  for (int i = 0; i < 4; ++i) expected.push_back(make_task(*store, "b" + std::to_string(i), clock.now()));
  // Ties on updated_at are broken by id, so a page boundary inside a tie neither repeats nor skips a task.
  std::vector<TaskId> seen;
  IdleCursor cursor;
  int pages = 0;
  while (true) {
    auto page = store->idle_tasks(clock.now() + 1h, cursor, 2);
    REQUIRE(page.ok());
    if (page->empty()) break;
    ++pages;
    for (const TaskRow& t : page.value()) seen.push_back(t.id);
    cursor = {page->back().updated_at, page->back().id};
  }
  CHECK(pages == 4);
  CHECK(seen == expected);
}

TEST_CASE_TEMPLATE("store: apply_transition is a compare-and-set that writes the audit row", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  TaskId id = make_task(*store, "7", clock.now());
  REQUIRE(store->set_blocked(id, true, "waiting for a human", clock.now()).ok());
  CHECK(task_of(*store, id).blocked);
  CHECK(task_of(*store, id).blocked_reason == "waiting for a human");

  clock.advance(5min);
  auto moved = store->apply_transition({id, "created", "analysis", Cause::kWebhook, "In Progress", "", clock.now()});
  REQUIRE_MESSAGE(moved.ok(), moved.status().message);
  CHECK(moved->stage == "analysis");
  CHECK(moved->visit == 2);
  CHECK(moved->entered_stage_at == clock.now());
  CHECK(moved->updated_at == clock.now());
  CHECK(moved->created_at == kMonday9am);
  CHECK_FALSE(moved->blocked);
  CHECK(moved->blocked_reason.empty());

  clock.advance(1min);
  auto rolled = store->apply_transition(
      {id, "analysis", "analysis", Cause::kWebhook, "Rejected", std::string("needs tests"), clock.now()});
  REQUIRE(rolled.ok());
  CHECK(rolled->visit == 3);
  CHECK(rolled->rejection_reason == "needs tests");
  auto forward = store->apply_transition({id, "analysis", "development", Cause::kAgent, "", std::nullopt, clock.now()});
  REQUIRE(forward.ok());
  CHECK(forward->rejection_reason.empty());  // a forward move clears it

  SUBCASE("a stale `from` is refused and changes nothing") {
    auto stale = store->apply_transition({id, "analysis", "review", Cause::kReconciler, "", std::nullopt, clock.now()});
    CHECK(stale.status().code == Code::kConflict);
    CHECK(task_of(*store, id).stage == "development");
    CHECK(task_of(*store, id).visit == 4);
    CHECK(store->transitions_for_task(id).value().size() == 3);
  }
  SUBCASE("an unknown task is kNotFound") {
    CHECK(store->apply_transition({999, "created", "analysis", Cause::kManual, "", std::nullopt, clock.now()})
              .status()
              .code == Code::kNotFound);
  }
  SUBCASE("every transition is in the audit log, with the work item key") {
    auto log = store->transitions_for_task(id);
    REQUIRE(log.ok());
    REQUIRE(log->size() == 3);
    const TransitionRow& first = log.value()[0];
    CHECK(first.task_id == id);
    CHECK(first.work_item_key == "SHOP-7");
    CHECK(first.from == "created");
    CHECK(first.to == "analysis");
    CHECK(first.cause == Cause::kWebhook);
    CHECK(first.detail == "In Progress");
    CHECK(first.at == kMonday9am + 5min);
    CHECK(log.value()[2].cause == Cause::kAgent);
    auto recent = store->recent_transitions(2);
    REQUIRE(recent->size() == 2);
    CHECK(recent.value()[0].to == "development");  // newest first
    CHECK(recent.value()[1].to == "analysis");
  }
}

TEST_CASE_TEMPLATE("store: record_facts overwrites only the facts it carries and bumps updated_at", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  TaskId id = make_task(*store, "1", clock.now());
  clock.advance(1min);
  TaskFacts pr;
  pr.pr_number = 12;
  pr.pr_state = PrState::kOpen;
  pr.head_sha = "abc";
  REQUIRE(store->record_facts(id, pr, clock.now()).ok());
  clock.advance(1min);
  TaskFacts review;
  review.review_state = ReviewState::kApproved;
  review.tracker_state = "st-1";
  REQUIRE(store->record_facts(id, review, clock.now()).ok());
  TaskRow t = task_of(*store, id);
  CHECK(t.pr_number == 12);
  CHECK(t.pr_state == PrState::kOpen);
  CHECK(t.review_state == ReviewState::kApproved);
  CHECK(t.head_sha == "abc");
  CHECK(t.tracker_state == "st-1");
  CHECK(t.updated_at == kMonday9am + 2min);
  CHECK(t.entered_stage_at == kMonday9am);
  clock.advance(1min);
  REQUIRE(store->set_blocked(id, false, "ignored when unblocking", clock.now()).ok());
  CHECK(task_of(*store, id).updated_at == kMonday9am + 3min);
  CHECK(task_of(*store, id).blocked_reason.empty());
  CHECK(store->record_facts(999, sha_fact("x"), clock.now()).code == Code::kNotFound);
  CHECK(store->set_blocked(999, true, "x", clock.now()).code == Code::kNotFound);
}

TEST_CASE_TEMPLATE("store: task listings for the queue, the replay and branch lookups", B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  TaskId a = make_task(*store, "a", clock.now());
  TaskId b = make_task(*store, "b", clock.now());
  TaskId old_done = make_task(*store, "c", clock.now());
  REQUIRE(store->apply_transition({old_done, "created", "done", Cause::kManual, "", std::nullopt, clock.now()}).ok());
  clock.advance(25h);
  TaskId new_done = make_task(*store, "d", clock.now());
  REQUIRE(store->apply_transition({new_done, "created", "done", Cause::kManual, "", std::nullopt, clock.now()}).ok());
  REQUIRE(store->apply_transition({b, "created", "analysis", Cause::kManual, "", std::nullopt, clock.now()}).ok());

  CHECK(ids_of(store->tasks_for_queue(clock.now() - 24h).value()) == std::vector<TaskId>{a, b, new_done});
  CHECK(ids_of(store->non_terminal_tasks(0, 10).value()) == std::vector<TaskId>{a, b});
  CHECK(ids_of(store->non_terminal_tasks(a, 10).value()) == std::vector<TaskId>{b});
  CHECK(ids_of(store->non_terminal_tasks(0, 1).value()) == std::vector<TaskId>{a});
  CHECK(ids_of(store->tasks_in_stage("shop", "analysis").value()) == std::vector<TaskId>{b});
  CHECK(store->tasks_in_stage("other", "analysis").value().empty());
  CHECK(store->find_task_by_branch("shop", "orch/shop-b").value()->id == b);
  CHECK_FALSE(store->find_task_by_branch("other", "orch/shop-b").value().has_value());
  CHECK_FALSE(store->find_task(12345).value().has_value());
  CHECK(store->find_task_by_key("SHOP-b").value()->id == b);
  CHECK_FALSE(store->find_task_by_key("SHOP-zz").value().has_value());
}

TEST_CASE_TEMPLATE(
    "store: gate evaluations are kept per task, their since held while the reason stays, and only the "
    "current visit's are read",
    B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  TaskId a = make_task(*store, "a", clock.now());
  TaskId b = make_task(*store, "b", clock.now());
  REQUIRE(store->apply_transition({a, "created", "development", Cause::kManual, "", std::nullopt, clock.now()}).ok());
  REQUIRE(store->apply_transition({b, "created", "development", Cause::kManual, "", std::nullopt, clock.now()}).ok());
  const int visit = task_of(*store, a).visit;
  const TimePoint first = clock.now();
  auto red = [&](TaskId id, const std::string& why) {
    return GateEvaluation{id, "development", visit, false, why, clock.now()};
  };
  REQUIRE(store->record_gate_evaluations({red(a, "ci pending on abc")}).ok());
  clock.advance(10min);
  REQUIRE(store->record_gate_evaluations({red(a, "ci pending on abc"), red(b, "no pull request")}).ok());
  auto rows = store->current_gate_evaluations().value();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].task_id == a);
  CHECK(rows[0].stage == "development");
  CHECK(rows[0].visit == visit);
  CHECK(rows[0].why == "ci pending on abc");
  CHECK_FALSE(rows[0].green);
  CHECK(rows[0].since == first);  // the same reason: since when it holds
  CHECK(rows[1].task_id == b);
  CHECK(rows[1].since == clock.now());
  clock.advance(10min);
  REQUIRE(store->record_gate_evaluations({red(a, "ci failure on abc")}).ok());
  rows = store->current_gate_evaluations().value();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].why == "ci failure on abc");
  CHECK(rows[0].since == clock.now());  // a new reason starts again
  // Another stage or visit: the row is no longer the task's current one; done tasks are not read.
  REQUIRE(store->apply_transition({a, "development", "review", Cause::kManual, "", std::nullopt, clock.now()}).ok());
  rows = store->current_gate_evaluations().value();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].task_id == b);
  REQUIRE(store->apply_transition({b, "development", "done", Cause::kManual, "", std::nullopt, clock.now()}).ok());
  CHECK(store->current_gate_evaluations().value().empty());
  // A bad row refuses the whole batch: nothing half-written.
  CHECK(store->record_gate_evaluations({red(a, "x"), GateEvaluation{0, "development", 1, false, "x", clock.now()}})
            .code == Code::kInvalid);
  CHECK(store->record_gate_evaluations({}).ok());
}

TEST_CASE_TEMPLATE("store: current_visit_jobs reads the jobs of each live task's current visit", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  TaskId a = make_task(*store, "a", clock.now());
  TaskId b = make_task(*store, "b", clock.now());
  const JobRow old_visit = enqueue(*store, a, 1, 1, clock.now(), clock.now());
  REQUIRE(store->apply_transition({a, "created", "analysis", Cause::kManual, "", std::nullopt, clock.now()}).ok());
  const int visit = task_of(*store, a).visit;
  const JobRow first = enqueue(*store, a, visit, 1, clock.now(), clock.now());
  const JobRow retry = enqueue(*store, a, visit, 2, clock.now(), clock.now());
  const JobRow of_b = enqueue(*store, b, 1, 1, clock.now(), clock.now());
  auto ids = [&] {
    std::vector<JobId> out;
    for (const JobRow& j : store->current_visit_jobs().value()) out.push_back(j.id);
    return out;
  };
  CHECK(ids() == std::vector<JobId>{first.id, retry.id, of_b.id});
  CHECK(old_visit.id < first.id);
  REQUIRE(store->apply_transition({b, "created", "done", Cause::kManual, "", std::nullopt, clock.now()}).ok());
  CHECK(ids() == std::vector<JobId>{first.id, retry.id});
}

TEST_CASE_TEMPLATE("store: enqueue_job is idempotent per (task, visit, attempt)", B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  TaskId id = make_task(*store, "1", clock.now());
  JobRow job = enqueue(*store, id, 1, 1, clock.now(), clock.now());
  CHECK(job.status == JobStatus::kQueued);
  CHECK(job.stage == "analysis");
  CHECK(job.agent == "analyst");
  CHECK(job.created_at == clock.now());
  CHECK_FALSE(job.started_at.has_value());

  auto again = store->enqueue_job({id, 1, "analysis", "analyst", 1, clock.now()}, clock.now() + 1s);
  REQUIRE(again.ok());
  CHECK_FALSE(again->has_value());
  enqueue(*store, id, 2, 1, clock.now(), clock.now());  // a new visit is a new job
  enqueue(*store, id, 1, 2, clock.now(), clock.now());  // and so is a retry
  CHECK(store->jobs_for_task(id).value().size() == 3);
  CHECK(store->enqueue_job({999, 1, "analysis", "analyst", 1, clock.now()}, clock.now()).status().code ==
        Code::kNotFound);
}

TEST_CASE_TEMPLATE("store: claim_job takes the oldest due job, and a job finishes only from running", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  // Three tasks: the claim runs one job per task at a time.
  JobRow later = enqueue(*store, make_task(*store, "1", clock.now()), 1, 1, clock.now(), clock.now() + 10s);
  JobRow earlier = enqueue(*store, make_task(*store, "2", clock.now()), 1, 1, clock.now(), clock.now() - 1s);
  JobRow now = enqueue(*store, make_task(*store, "3", clock.now()), 1, 1, clock.now(), clock.now());

  auto first = store->claim_job("100/1", clock.now());
  REQUIRE(first.ok());
  REQUIRE(first->has_value());
  CHECK(first.value()->id == earlier.id);
  CHECK(first.value()->status == JobStatus::kRunning);
  CHECK(first.value()->worker == "100/1");
  CHECK(first.value()->started_at == clock.now());
  CHECK(first.value()->heartbeat_at == clock.now());
  CHECK(store->claim_job("100/2", clock.now()).value()->id == now.id);
  CHECK_FALSE(store->claim_job("100/2", clock.now()).value().has_value());  // `later` is not due yet
  clock.advance(10s);
  CHECK(store->claim_job("100/2", clock.now()).value()->id == later.id);

  REQUIRE(store->heartbeat_job(earlier.id, clock.now()).ok());
  CHECK(store->find_job(earlier.id).value()->heartbeat_at == clock.now());
  REQUIRE(store->finish_job(earlier.id, JobStatus::kFailed, "exit 3", clock.now()).ok());
  JobRow finished = store->find_job(earlier.id).value().value();
  CHECK(finished.status == JobStatus::kFailed);
  CHECK(finished.error == "exit 3");
  CHECK(finished.finished_at == clock.now());
  CHECK(store->finish_job(earlier.id, JobStatus::kSucceeded, "", clock.now()).code == Code::kConflict);
  CHECK(store->heartbeat_job(earlier.id, clock.now()).code == Code::kConflict);
  CHECK(store->finish_job(424242, JobStatus::kSucceeded, "", clock.now()).code == Code::kNotFound);
  CHECK(store->finish_job(now.id, JobStatus::kQueued, "", clock.now()).code == Code::kInvalid);
  CHECK(store->recent_failed_jobs(10).value().size() == 1);
  CHECK(store->jobs_with_status(JobStatus::kRunning, 10).value().size() == 2);

  SUBCASE("start-up recovery puts a running job back in the queue, once") {
    REQUIRE(store->requeue_job(now.id, clock.now()).ok());
    JobRow requeued = store->find_job(now.id).value().value();
    CHECK(requeued.status == JobStatus::kQueued);
    CHECK(requeued.worker.empty());
    CHECK_FALSE(requeued.started_at.has_value());
    CHECK(store->requeue_job(now.id, clock.now()).ok());
    CHECK(store->requeue_job(earlier.id, clock.now()).code == Code::kConflict);
    CHECK(store->claim_job("200/1", clock.now()).value()->id == now.id);
  }
}

// A task of `project` (its key unique across projects) and one queued job of `agent` for it, due at `at`.
JobRow queued_job(Store& store, const std::string& project, const std::string& id, const std::string& agent,
                  TimePoint at) {
  NewTask t = new_task(project + "-" + id);
  t.project = project;
  auto claim = store.create_task_atomic(t, at);
  REQUIRE_MESSAGE(claim.ok(), claim.status().message);
  auto row = store.enqueue_job(NewJob{claim->task.id, 1, "analysis", agent, 1, at}, at);
  REQUIRE_MESSAGE(row.ok(), row.status().message);
  REQUIRE(row->has_value());
  return *row.value();
}

// The job claim_job hands out within `scope`, or 0 for none.
JobId claim_in(Store& store, const ClaimScope& scope, TimePoint now, const std::string& worker = "w/1") {
  auto job = store.claim_job(worker, now, JobLimits{}, scope);
  REQUIRE_MESSAGE(job.ok(), job.status().message);
  return job.value() ? job.value()->id : 0;
}

TEST_CASE_TEMPLATE("store: a claim takes only the jobs of its scope: a runner's agents, the server's steps", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  const TimePoint t = clock.now();
  JobRow dev = queued_job(*store, "shop", "1", "developer", t);
  JobRow rev = queued_job(*store, "shop", "2", "reviewer", t + 1s);
  JobRow local = queued_job(*store, "shop", "3", "analyst", t + 2s);
  clock.advance(10s);
  ClaimScope runner{.fresh = true, .any_agent = false, .agents = {"developer", "reviewer"}, .steps = false};
  ClaimScope server{.fresh = true, .any_agent = false, .agents = {"analyst"}, .steps = true};
  ClaimScope none{.fresh = false, .any_agent = true, .agents = {}, .steps = false};

  CHECK(claim_in(*store, none, clock.now()) == 0);
  CHECK(claim_in(*store, server, clock.now()) == local.id);  // the oldest due job is the runner's: skipped
  CHECK(claim_in(*store, server, clock.now()) == 0);
  CHECK(claim_in(*store, runner, clock.now(), "runner:a/1") == dev.id);

  // A job whose agent succeeded goes back to the queue for its steps: only the server takes it.
  REQUIRE(store->begin_job_step(dev.id, "open_pr", clock.now()).ok());
  REQUIRE(store->requeue_job(dev.id, clock.now()).ok());
  CHECK(claim_in(*store, runner, clock.now(), "runner:a/2") == rev.id);
  CHECK(claim_in(*store, runner, clock.now(), "runner:a/3") == 0);
  JobRow steps = store->claim_job("server/1", clock.now(), JobLimits{}, server).value().value();
  CHECK(steps.id == dev.id);
  CHECK(steps.step == "open_pr");
}

TEST_CASE_TEMPLATE("store: a runner's claim fences its heartbeat and the take-over of its result", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  JobRow job = queued_job(*store, "shop", "1", "developer", clock.now());
  REQUIRE(store->claim_job("runner:a/1", clock.now()).value()->id == job.id);
  clock.advance(5s);
  REQUIRE(store->heartbeat_claim(job.id, "runner:a/1", clock.now()).ok());
  CHECK(store->find_job(job.id).value()->heartbeat_at == clock.now());
  CHECK(store->heartbeat_claim(job.id, "runner:b/1", clock.now()).code == Code::kConflict);
  CHECK(store->take_over_job(job.id, "runner:b/1", "server/1", clock.now()).code == Code::kConflict);
  CHECK(store->heartbeat_claim(424242, "runner:a/1", clock.now()).code == Code::kNotFound);

  clock.advance(5s);
  REQUIRE(store->take_over_job(job.id, "runner:a/1", "server/1", clock.now()).ok());
  JobRow taken = store->find_job(job.id).value().value();
  CHECK(taken.worker == "server/1");
  CHECK(taken.heartbeat_at == clock.now());
  CHECK(taken.status == JobStatus::kRunning);
  // The same report again, or a heartbeat of the old claim: refused, nothing changed.
  CHECK(store->take_over_job(job.id, "runner:a/1", "server/2", clock.now()).code == Code::kConflict);
  CHECK(store->heartbeat_claim(job.id, "runner:a/1", clock.now()).code == Code::kConflict);
  CHECK(store->find_job(job.id).value()->worker == "server/1");
  REQUIRE(store->finish_job(job.id, JobStatus::kSucceeded, "", clock.now()).ok());
  CHECK(store->heartbeat_claim(job.id, "server/1", clock.now()).code == Code::kConflict);
}

TEST_CASE_TEMPLATE("store: a runner claim whose agent never started goes back to the queue after dispatch_timeout", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  const TimePoint t = clock.now();
  JobRow stuck = queued_job(*store, "shop", "1", "developer", t);
  JobRow launched = queued_job(*store, "shop", "2", "developer", t + 1ms);
  JobRow local = queued_job(*store, "shop", "3", "developer", t + 2ms);
  JobRow cancelled = queued_job(*store, "shop", "4", "developer", t + 3ms);
  JobRow fresh = queued_job(*store, "shop", "5", "developer", t + 4ms);
  clock.advance(1s);
  REQUIRE(store->claim_job("runner:a/1", clock.now()).value()->id == stuck.id);
  REQUIRE(store->claim_job("runner:a/2", clock.now()).value()->id == launched.id);
  REQUIRE(store->claim_job("r0/7/1", clock.now()).value()->id == local.id);
  REQUIRE(store->claim_job("runner:a/3", clock.now()).value()->id == cancelled.id);
  clock.advance(5s);
  REQUIRE(store->claim_job("runner:b/1", clock.now()).value()->id == fresh.id);
  const TimePoint launch = clock.now();
  REQUIRE(store->launched_claim(launched.id, "runner:a/2", launch).ok());
  REQUIRE(store->request_cancel(cancelled.id, "by a person", clock.now()).ok());
  // launched_at is set once and fenced as a heartbeat is.
  clock.advance(1s);
  REQUIRE(store->launched_claim(launched.id, "runner:a/2", clock.now()).ok());
  CHECK(store->find_job(launched.id).value()->launched_at == launch);
  CHECK(store->find_job(launched.id).value()->heartbeat_at == clock.now());
  CHECK(store->launched_claim(launched.id, "runner:b/9", clock.now()).code == Code::kConflict);
  CHECK(store->find_job(stuck.id).value()->launched_at == std::nullopt);

  // Claimed before t + 4s and never launched: only the runner's claim that nobody cancelled.
  auto requeued = store->requeue_undispatched(t + 4s, 100, clock.now());
  REQUIRE_MESSAGE(requeued.ok(), requeued.status().message);
  REQUIRE(requeued.value().size() == 1);
  const JobRow& back = requeued.value()[0];
  CHECK(back.id == stuck.id);
  CHECK(back.status == JobStatus::kQueued);
  CHECK(back.attempt == 1);
  CHECK(back.worker.empty());
  CHECK(back.started_at == std::nullopt);
  CHECK(back.run_after == clock.now());
  CHECK(store->heartbeat_claim(stuck.id, "runner:a/1", clock.now()).code == Code::kConflict);
  CHECK(store->requeue_undispatched(t + 4s, 100, clock.now()).value().empty());  // a second pass changes nothing
  for (const JobRow* j : {&launched, &local, &cancelled, &fresh})
    CHECK(store->find_job(j->id).value()->status == JobStatus::kRunning);
  // Claimed again, by another runner: a new claim, not yet launched.
  JobRow again = store->claim_job("runner:b/2", clock.now()).value().value();
  CHECK(again.id == stuck.id);
  CHECK(again.attempt == 1);
  CHECK(again.launched_at == std::nullopt);
  // The cap holds.
  clock.advance(1h);
  CHECK(store->requeue_undispatched(clock.now(), 1, clock.now()).value().size() == 1);
  CHECK(store->requeue_undispatched(clock.now(), 0, clock.now()).status().code == Code::kInvalid);
}

TEST_CASE_TEMPLATE("store: a cancel fails a queued job at once and makes a running job's heartbeats fail", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  JobRow queued = queued_job(*store, "shop", "1", "analyst", clock.now());
  JobRow running = queued_job(*store, "shop", "2", "analyst", clock.now() + 1s);
  clock.advance(5s);
  REQUIRE(store->claim_job("runner:a/1", clock.now()).value()->id == queued.id);
  // The first claimed is the one that runs; cancel the other while it is queued.
  std::swap(queued, running);
  auto cancelled = store->request_cancel(queued.id, "by a person", clock.now());
  REQUIRE_MESSAGE(cancelled.ok(), cancelled.status().message);
  CHECK(cancelled.value().status == JobStatus::kFailed);
  CHECK(cancelled.value().error == "by a person");
  CHECK(cancelled.value().finished_at == clock.now());
  CHECK(store->claim_job("w/1", clock.now()).value() == std::nullopt);  // nothing else to claim

  auto asked = store->request_cancel(running.id, "by a person", clock.now());
  REQUIRE(asked.ok());
  CHECK(asked.value().status == JobStatus::kRunning);
  CHECK(asked.value().cancel_requested == "by a person");
  Status beat = store->heartbeat_claim(running.id, "runner:a/1", clock.now());
  CHECK(beat.code == Code::kConflict);
  CHECK(beat.message.find("cancelled") != std::string::npos);
  CHECK(store->heartbeat_job(running.id, clock.now()).code == Code::kConflict);
  // Its holder still takes it over to report that the agent is gone.
  REQUIRE(store->take_over_job(running.id, "runner:a/1", "server/1", clock.now()).ok());
  REQUIRE(store->finish_job(running.id, JobStatus::kFailed, "cancelled: by a person", clock.now()).ok());
  CHECK(store->request_cancel(running.id, "again", clock.now()).status().code == Code::kConflict);
  CHECK(store->request_cancel(424242, "no such job", clock.now()).status().code == Code::kNotFound);
  CHECK(store->request_cancel(running.id, "", clock.now()).status().code == Code::kInvalid);
}

TEST_CASE_TEMPLATE("store: runners are registered once by name, found by token hash, seen and revoked", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  RunnerRow a;
  a.name = "a";
  a.labels = {"developer", "gpu"};
  a.token_sha256 = "aa";
  a.registered_at = clock.now();
  RunnerRow b;
  b.name = "b";
  b.token_sha256 = "bb";
  b.registered_at = clock.now();
  REQUIRE(store->register_runner(b).ok());
  REQUIRE(store->register_runner(a).ok());
  RunnerRow again = a;
  again.token_sha256 = "cc";
  CHECK(store->register_runner(again).code == Code::kConflict);
  CHECK_FALSE(store->find_runner_by_token("cc").value().has_value());

  auto found = store->find_runner_by_token("aa");
  REQUIRE(found.ok());
  REQUIRE(found->has_value());
  CHECK(found.value()->name == "a");
  CHECK(found.value()->labels == std::vector<std::string>{"developer", "gpu"});
  CHECK_FALSE(found.value()->last_seen_at.has_value());
  CHECK_FALSE(found.value()->revoked);

  clock.advance(3s);
  REQUIRE(store->runner_seen("a", clock.now()).ok());
  CHECK(store->runner_seen("zz", clock.now()).code == Code::kNotFound);
  REQUIRE(store->revoke_runner("b").ok());
  CHECK(store->revoke_runner("zz").code == Code::kNotFound);
  auto all = store->runners().value();
  REQUIRE(all.size() == 2);
  CHECK(all[0].name == "a");
  CHECK(all[0].last_seen_at == clock.now());
  CHECK(all[1].name == "b");
  CHECK(all[1].labels.empty());
  CHECK(all[1].revoked);
}

// The job claim_job hands out under `limits`, or 0 for none.
JobId claim_under(Store& store, const JobLimits& limits, TimePoint now) {
  auto job = store.claim_job("w/1", now, limits);
  REQUIRE_MESSAGE(job.ok(), job.status().message);
  return job.value() ? job.value()->id : 0;
}

TEST_CASE_TEMPLATE("store: claim_job runs one job per task: a later visit's job waits for the running one", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  TaskId a = make_task(*store, "a", clock.now());
  TaskId b = make_task(*store, "b", clock.now());
  const JobRow first = enqueue(*store, a, 1, 1, clock.now(), clock.now());
  REQUIRE(store->claim_job("w/1", clock.now()).value()->id == first.id);
  clock.advance(1s);
  const JobRow rerun = enqueue(*store, a, 2, 1, clock.now(), clock.now());  // a re-run's job: the next visit
  clock.advance(1s);
  const JobRow other = enqueue(*store, b, 1, 1, clock.now(), clock.now());
  // The older due job of the same project is held; the other task's job is not held up behind it.
  CHECK(store->claim_job("w/2", clock.now()).value()->id == other.id);
  CHECK_FALSE(store->claim_job("w/2", clock.now()).value().has_value());
  REQUIRE(store->finish_job(first.id, JobStatus::kFailed, "superseded", clock.now()).ok());
  CHECK(store->claim_job("w/2", clock.now()).value()->id == rerun.id);
}

TEST_CASE_TEMPLATE("store: claim_job keeps a job queued while the store, its project or its agent is at max_running", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  const TimePoint t0 = clock.now();
  JobRow shop1 = queued_job(*store, "shop", "1", "analyst", t0);
  JobRow shop2 = queued_job(*store, "shop", "2", "analyst", t0 + 1s);
  JobRow docs1 = queued_job(*store, "docs", "1", "developer", t0 + 2s);
  JobRow docs2 = queued_job(*store, "docs", "2", "analyst", t0 + 3s);
  clock.advance(10s);

  SUBCASE("overall") {
    JobLimits limits;
    limits.max_running = 2;
    CHECK(claim_under(*store, limits, clock.now()) == shop1.id);
    CHECK(claim_under(*store, limits, clock.now()) == docs1.id);  // docs runs nothing yet: it goes first
    CHECK(claim_under(*store, limits, clock.now()) == 0);
    REQUIRE(store->finish_job(shop1.id, JobStatus::kSucceeded, "", clock.now()).ok());
    CHECK(claim_under(*store, limits, clock.now()) == shop2.id);
    CHECK(claim_under(*store, limits, clock.now()) == 0);
    CHECK(store->find_job(docs2.id).value()->status == JobStatus::kQueued);
  }
  SUBCASE("per project") {
    JobLimits limits;
    limits.per_project["shop"] = 1;
    CHECK(claim_under(*store, limits, clock.now()) == shop1.id);
    CHECK(claim_under(*store, limits, clock.now()) == docs1.id);
    CHECK(claim_under(*store, limits, clock.now()) == docs2.id);  // docs has no limit; shop2 waits
    CHECK(claim_under(*store, limits, clock.now()) == 0);
    REQUIRE(store->requeue_job(shop1.id, clock.now()).ok());      // a requeued job frees its slot too
    CHECK(claim_under(*store, limits, clock.now()) == shop2.id);  // shop's oldest due job: shop1 is due only now
    CHECK(claim_under(*store, limits, clock.now()) == 0);
    CHECK(store->find_job(shop1.id).value()->status == JobStatus::kQueued);
  }
  SUBCASE("per agent") {
    JobLimits limits;
    limits.per_agent["analyst"] = 1;
    CHECK(claim_under(*store, limits, clock.now()) == shop1.id);
    CHECK(claim_under(*store, limits, clock.now()) == docs1.id);  // the developer is not the analyst
    CHECK(claim_under(*store, limits, clock.now()) == 0);
    REQUIRE(store->finish_job(shop1.id, JobStatus::kFailed, "exit 1", clock.now()).ok());
    CHECK(claim_under(*store, limits, clock.now()) == shop2.id);  // docs runs one, shop none: shop's turn
  }
  SUBCASE("a limit below one is refused, not read as none") {
    JobLimits limits;
    limits.per_agent["analyst"] = 0;
    CHECK(store->claim_job("w/1", clock.now(), limits).status().code == Code::kInvalid);
    CHECK(store->find_job(shop1.id).value()->status == JobStatus::kQueued);
  }
}

TEST_CASE_TEMPLATE("store: claims are fair between projects: 2 queued jobs start within one slot of a backlog of 50", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  std::set<JobId> small;
  for (int i = 0; i < 50; ++i) queued_job(*store, "big", std::to_string(i), "analyst", clock.now() + i * 1s);
  for (int i = 0; i < 2; ++i)
    small.insert(queued_job(*store, "small", std::to_string(i), "analyst", clock.now() + 60s + i * 1s).id);
  clock.advance(2min);
  JobLimits limits;
  limits.max_running = 2;
  // Two slots; each time a slot frees, the next claim fills it. Oldest-first would start the small project's jobs
  // after the 50; fair claims start one in each of the first two slots that free.
  std::vector<JobId> order;
  std::vector<JobId> running;
  for (int round = 0; round < 6; ++round) {
    while (JobId id = claim_under(*store, limits, clock.now())) {
      order.push_back(id);
      running.push_back(id);
    }
    CHECK(running.size() == 2);
    REQUIRE(store->finish_job(running.front(), JobStatus::kSucceeded, "", clock.now()).ok());
    running.erase(running.begin());
  }
  REQUIRE(order.size() >= 4);
  CHECK(small.count(order[1]) == 1);                          // the second slot goes to the small project at once
  CHECK(small.count(order[3]) + small.count(order[2]) == 1);  // and its second job within one more slot
  CHECK(std::count_if(order.begin(), order.end(), [&](JobId id) { return small.count(id) == 1; }) == 2);
}

TEST_CASE_TEMPLATE("store: 8 threads claiming 200 jobs claim each exactly once", B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  constexpr int kJobs = 200;
  constexpr int kThreads = 8;
  std::set<JobId> all;
  for (int i = 0; i < kJobs; ++i)  // one job per task: the claim runs one job per task at a time
    all.insert(enqueue(*store, make_task(*store, std::to_string(i), kMonday9am), 1, 1, kMonday9am, kMonday9am).id);
  std::vector<std::vector<JobId>> claimed(kThreads);
  std::atomic<int> errors{0};
  std::barrier start(kThreads);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        while (true) {
          auto job = store->claim_job("w/" + std::to_string(t), kMonday9am);
          if (!job.ok()) {
            ++errors;
            return;
          }
          if (!job->has_value()) return;
          claimed[t].push_back(job.value()->id);
        }
      });
    }
  }
  CHECK(errors.load() == 0);
  std::multiset<JobId> seen;
  for (const auto& ids : claimed) seen.insert(ids.begin(), ids.end());
  CHECK(seen.size() == kJobs);
  CHECK(std::set<JobId>(seen.begin(), seen.end()) == all);
  CHECK(store->jobs_with_status(JobStatus::kRunning, 1000).value().size() == kJobs);
}

TEST_CASE_TEMPLATE("store: the sweeper rules fail only stale or expired jobs, in capped batches", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  TaskId id = make_task(*store, "1", clock.now());
  std::vector<JobId> running;
  for (int i = 1; i <= 4; ++i) {  // four tasks: one running job each
    enqueue(*store, i == 1 ? id : make_task(*store, std::to_string(i), clock.now()), 1, 1, clock.now(), clock.now());
    running.push_back(store->claim_job("w/1", clock.now()).value().value().id);
  }
  // Heartbeats at +1, +2, +3, +4 minutes; the cutoff at +3m makes the first two stale.
  for (int i = 0; i < 4; ++i) REQUIRE(store->heartbeat_job(running[i], kMonday9am + (i + 1) * 1min).ok());
  clock.set(kMonday9am + 10min);
  JobRow fresh_queued = enqueue(*store, id, 2, 1, clock.now(), clock.now());

  auto batch = store->fail_stale_running(kMonday9am + 3min, 1, "heartbeat stopped", clock.now());
  REQUIRE(batch.ok());
  REQUIRE(batch->size() == 1);
  CHECK(batch.value()[0].id == running[0]);  // the stalest first
  CHECK(batch.value()[0].status == JobStatus::kFailed);
  CHECK(batch.value()[0].error == "heartbeat stopped");
  CHECK(batch.value()[0].finished_at == clock.now());
  batch = store->fail_stale_running(kMonday9am + 3min, 10, "heartbeat stopped", clock.now());
  REQUIRE(batch->size() == 1);
  CHECK(batch.value()[0].id == running[1]);
  CHECK(store->fail_stale_running(kMonday9am + 3min, 10, "heartbeat stopped", clock.now()).value().empty());
  CHECK(store->find_job(running[2]).value()->status == JobStatus::kRunning);
  // The swept job's worker learns it lost the job when it reports.
  CHECK(store->finish_job(running[0], JobStatus::kSucceeded, "", clock.now()).code == Code::kConflict);

  clock.advance(2h);
  JobRow young = enqueue(*store, id, 3, 1, clock.now(), clock.now());
  JobRow other_old = enqueue(*store, id, 2, 2, kMonday9am, kMonday9am);  // created long ago
  auto expired = store->fail_expired_queued(clock.now() - 1h, 1, "queued too long", clock.now());
  REQUIRE(expired.ok());
  REQUIRE(expired->size() == 1);
  CHECK(expired.value()[0].id == other_old.id);  // the oldest first
  expired = store->fail_expired_queued(clock.now() - 1h, 10, "queued too long", clock.now());
  REQUIRE(expired->size() == 1);
  CHECK(expired.value()[0].id == fresh_queued.id);
  CHECK(store->find_job(young.id).value()->status == JobStatus::kQueued);
  CHECK(store->fail_expired_queued(clock.now(), 0, "x", clock.now()).status().code == Code::kInvalid);
}

TEST_CASE_TEMPLATE("store: the inbox deduplicates by delivery id, and by body digest when asked", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  auto first = store->insert_delivery(delivery(Source::kPlane, "d1", "h1", clock.now()), true);
  REQUIRE(first.ok());
  CHECK_FALSE(first->duplicate);

  auto same_id = store->insert_delivery(delivery(Source::kPlane, "d1", "h2", clock.now()), true);
  CHECK(same_id->duplicate);
  CHECK(same_id->seq == first->seq);
  auto same_body = store->insert_delivery(delivery(Source::kPlane, "d2", "h1", clock.now()), true);
  CHECK(same_body->duplicate);  // Plane's retry: a fresh id, the same bytes
  CHECK(same_body->seq == first->seq);
  CHECK_FALSE(store->insert_delivery(delivery(Source::kGitea, "g1", "h1", clock.now()), false)->duplicate);
  CHECK_FALSE(store->insert_delivery(delivery(Source::kGitea, "g2", "h1", clock.now()), false)->duplicate);
  CHECK(store->insert_delivery(delivery(Source::kGitea, "g2", "h9", clock.now()), false)->duplicate);
  CHECK_FALSE(store->insert_delivery(delivery(Source::kGitea, "d1", "h7", clock.now()), false)->duplicate);
  CHECK(store->inbox_counts().value().received == 4);
  CHECK(store->insert_delivery(delivery(Source::kGitea, "", "h1", clock.now()), false).status().code == Code::kInvalid);

  SUBCASE("the body is stored byte for byte") {
    NewDelivery d = delivery(Source::kPlane, "bin", "h-bin", clock.now());
    d.body = std::string("a\0b\xff\xfe{", 6);
    REQUIRE(store->insert_delivery(d, true).ok());
    auto found = store->find_delivery("bin");
    REQUIRE(found.ok());
    REQUIRE(found->has_value());
    CHECK(found.value()->body == d.body);
    CHECK(found.value()->source == Source::kPlane);
    CHECK(found.value()->event == "issue");
    CHECK(found.value()->status == DeliveryStatus::kPending);
    CHECK(found.value()->received_at == clock.now());
    CHECK_FALSE(found.value()->handled_at.has_value());
    CHECK_FALSE(store->find_delivery("nope").value().has_value());
  }
}

TEST_CASE_TEMPLATE("store: a batch of deliveries is one transaction that sees its own duplicates", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  REQUIRE(store->insert_delivery(delivery(Source::kGitea, "old", "h0", clock.now()), false).ok());
  std::vector<NewDelivery> batch{
      delivery(Source::kPlane, "p1", "h1", clock.now()),   // new
      delivery(Source::kPlane, "p1", "h2", clock.now()),   // same id as the first, in the same batch
      delivery(Source::kPlane, "p2", "h1", clock.now()),   // same digest as the first
      delivery(Source::kGitea, "old", "h3", clock.now()),  // stored before the batch
      delivery(Source::kGitea, "g1", "h1", clock.now()),   // digest dedup off for Gitea
  };
  auto result = store->insert_deliveries(batch, {true, true, true, false, false});
  REQUIRE_MESSAGE(result.ok(), result.status().message);
  REQUIRE(result->size() == 5);
  const auto& r = result.value();
  CHECK_FALSE(r[0].duplicate);
  CHECK(r[1].duplicate);
  CHECK(r[1].seq == r[0].seq);
  CHECK(r[2].duplicate);
  CHECK(r[2].seq == r[0].seq);
  CHECK(r[3].duplicate);
  CHECK_FALSE(r[4].duplicate);
  CHECK(r[4].seq > r[0].seq);
  CHECK(store->inbox_counts().value().received == 3);

  SUBCASE("an invalid batch writes nothing") {
    CHECK(store->insert_deliveries(batch, {true}).status().code == Code::kInvalid);
    std::vector<NewDelivery> bad{delivery(Source::kPlane, "p9", "h9", clock.now()),
                                 delivery(Source::kPlane, "", "h8", clock.now())};
    CHECK(store->insert_deliveries(bad, {true, true}).status().code == Code::kInvalid);
    CHECK(store->inbox_counts().value().received == 3);
    CHECK(store->insert_deliveries({}, {}).value().empty());
  }
}

TEST_CASE_TEMPLATE("store: deliveries are processed in arrival order and a failed one can be replayed", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  std::vector<DeliverySeq> seqs;
  for (int i = 0; i < 4; ++i) {
    auto in = store->insert_delivery(delivery(Source::kGitea, "d" + std::to_string(i), "x", clock.now()), false);
    REQUIRE(in.ok());
    seqs.push_back(in->seq);
  }
  CHECK(std::is_sorted(seqs.begin(), seqs.end()));

  auto next = store->next_pending_delivery(0);
  REQUIRE(next.value().has_value());
  CHECK(next.value()->seq == seqs[0]);
  REQUIRE(store->finish_delivery(seqs[0], {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).ok());
  REQUIRE(store->finish_delivery(seqs[1], {DeliveryStatus::kFailed, "first failure", 0, ""}, clock.now()).ok());
  REQUIRE(store->finish_delivery(seqs[2], {DeliveryStatus::kIgnored, "unknown project", 0, ""}, clock.now()).ok());
  clock.advance(1s);
  REQUIRE(store->finish_delivery(seqs[3], {DeliveryStatus::kFailed, "second failure", 0, ""}, clock.now()).ok());
  CHECK_FALSE(store->next_pending_delivery(0).value().has_value());

  InboxCounts counts = store->inbox_counts().value();
  CHECK(counts.received == 4);
  CHECK(counts.pending == 0);
  CHECK(counts.handled == 1);
  CHECK(counts.ignored == 1);
  CHECK(counts.failed == 2);
  auto failed = store->failed_deliveries(10).value();
  REQUIRE(failed.size() == 2);
  CHECK(failed[0].seq == seqs[3]);  // newest first
  CHECK(failed[1].error == "first failure");
  CHECK(failed[1].attempts == 1);
  CHECK(store->failed_deliveries(1).value().size() == 1);

  REQUIRE(store->requeue_delivery(seqs[1]).ok());
  CHECK(store->requeue_delivery(seqs[1]).ok());  // a second replay of a waiting delivery changes nothing
  DeliveryRow replayed = store->next_pending_delivery(0).value().value();
  CHECK(replayed.seq == seqs[1]);
  CHECK(replayed.error.empty());
  CHECK_FALSE(replayed.handled_at.has_value());
  CHECK(store->find_delivery("d1").value()->status == DeliveryStatus::kPending);
  CHECK_FALSE(store->next_pending_delivery(seqs[1]).value().has_value());
  CHECK(store->requeue_delivery(seqs[0]).code == Code::kConflict);
  CHECK(store->requeue_delivery(9999).code == Code::kNotFound);
  CHECK(store->finish_delivery(9999, {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).code == Code::kNotFound);
  REQUIRE(store->finish_delivery(seqs[1], {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).ok());
  CHECK(store->find_delivery("d1").value()->attempts == 2);
}

TEST_CASE_TEMPLATE("store: the delivery ledger lists outcomes, tasks and refused duplicates, newest first", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  const TaskId t7 = make_task(*store, "7", clock.now());
  const TaskId t8 = make_task(*store, "8", clock.now());
  auto insert = [&](Source source, const std::string& id, const std::string& digest) {
    auto in = store->insert_delivery(delivery(source, id, digest, clock.now()), source == Source::kPlane);
    REQUIRE(in.ok());
    clock.advance(1s);
    return in.value();
  };
  const InboxInsert p1 = insert(Source::kPlane, "p1", "h1");
  const InboxInsert g1 = insert(Source::kGitea, "g1", "x");
  const InboxInsert g2 = insert(Source::kGitea, "g2", "x");
  CHECK_FALSE(insert(Source::kPlane, "p2", "h2").duplicate);
  // Plane's retry of p1 (a new delivery id, the same body) and a re-sent g1: refused, but on the ledger.
  const InboxInsert p1_retry = insert(Source::kPlane, "p1-retry", "h1");
  const InboxInsert g1_again = insert(Source::kGitea, "g1", "x");
  CHECK(p1_retry.duplicate);
  CHECK(p1_retry.seq == p1.seq);
  CHECK(g1_again.duplicate);
  REQUIRE(store->finish_delivery(p1.seq, {DeliveryStatus::kHandled, "", t7, "created SHOP-7"}, clock.now()).ok());
  REQUIRE(store->finish_delivery(g1.seq, {DeliveryStatus::kIgnored, "no task with head abc", 0, "no task"}, clock.now())
              .ok());
  REQUIRE(
      store->finish_delivery(g2.seq, {DeliveryStatus::kFailed, "gitea: HTTP 500", t8, "gitea: HTTP 500"}, clock.now())
          .ok());
  CHECK(store->inbox_counts().value().received == 4);  // duplicates are no deliveries

  auto ledger = store->delivery_ledger(10, 0);
  REQUIRE_MESSAGE(ledger.ok(), ledger.status().message);
  REQUIRE(ledger.value().size() == 6);
  const std::vector<LedgerEntry>& l = ledger.value();
  CHECK(l[0].delivery_id == "g1");
  CHECK(l[0].duplicate);
  CHECK(l[0].duplicate_of == "g1");
  CHECK(l[0].status == DeliveryStatus::kIgnored);  // the original's
  CHECK(l[1].delivery_id == "p1-retry");
  CHECK(l[1].duplicate);
  CHECK(l[1].duplicate_of == "p1");
  CHECK(l[1].event == "issue");
  CHECK(l[1].task_id == t7);
  CHECK(l[1].work_item_key == "SHOP-7");
  CHECK(l[2].delivery_id == "p2");
  CHECK(l[2].status == DeliveryStatus::kPending);
  CHECK(l[2].task_id == 0);
  CHECK_FALSE(l[2].handled_at.has_value());
  CHECK(l[3].delivery_id == "g2");
  CHECK(l[3].status == DeliveryStatus::kFailed);
  CHECK(l[3].detail == "gitea: HTTP 500");
  CHECK(l[3].work_item_key == "SHOP-8");
  CHECK(l[4].delivery_id == "g1");
  CHECK_FALSE(l[4].duplicate);
  CHECK(l[4].detail == "no task with head abc");  // the reason it was ignored
  CHECK(l[4].work_item_key.empty());
  CHECK(l[5].delivery_id == "p1");
  CHECK(l[5].status == DeliveryStatus::kHandled);
  CHECK(l[5].detail == "created SHOP-7");  // what it changed
  CHECK(l[5].attempts == 1);
  CHECK(l[5].handled_at.has_value());
  CHECK(l[5].received_at == kMonday9am);

  CHECK(store->delivery_ledger(2, 0).value().size() == 2);
  CHECK(store->delivery_ledger(2, 0).value()[1].delivery_id == "p1-retry");
  auto about7 = store->delivery_ledger(10, t7).value();
  REQUIRE(about7.size() == 2);
  CHECK(about7[0].delivery_id == "p1-retry");
  CHECK(about7[1].delivery_id == "p1");
  auto about8 = store->delivery_ledger(10, t8).value();
  REQUIRE(about8.size() == 1);
  CHECK(about8[0].delivery_id == "g2");
  CHECK(store->delivery_ledger(10, 9999).value().empty());
  CHECK(store->delivery_ledger(0, 0).status().code == Code::kInvalid);
}

TEST_CASE_TEMPLATE("store: the outbox deduplicates by key and schedules retries", B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  CHECK(store->enqueue_notification("unblock:7:3", "SHOP-7 unblocked", clock.now()).value());
  CHECK_FALSE(store->enqueue_notification("unblock:7:3", "SHOP-7 unblocked again", clock.now()).value());
  CHECK(store->enqueue_notification("failed:8", "SHOP-8 failed", clock.now() + 1s).value());
  CHECK(store->all_notifications().value().size() == 2);

  auto due = store->due_notifications(clock.now(), 10).value();
  REQUIRE(due.size() == 1);
  const NotificationId id = due[0].id;
  CHECK(due[0].text == "SHOP-7 unblocked");
  CHECK(due[0].status == NotificationStatus::kPending);

  REQUIRE(store->mark_notification_retry(id, "telegram 502", clock.now() + 30s).ok());
  CHECK(store->due_notifications(clock.now(), 10).value().empty());
  clock.advance(30s);
  due = store->due_notifications(clock.now(), 10).value();
  REQUIRE(due.size() == 2);
  CHECK(due[0].id != id);  // ordered by next attempt: the retried one is now behind
  CHECK(due[1].id == id);
  CHECK(due[1].attempts == 1);
  CHECK(due[1].error == "telegram 502");
  CHECK(store->due_notifications(clock.now(), 1).value().size() == 1);

  REQUIRE(store->mark_notification_sent(id, clock.now()).ok());
  REQUIRE(store->mark_notification_failed(due[0].id, "chat not found").ok());
  CHECK(store->due_notifications(clock.now() + 1h, 10).value().empty());
  CHECK(store->mark_notification_sent(id, clock.now()).code == Code::kConflict);
  CHECK(store->mark_notification_retry(424242, "x", clock.now()).code == Code::kNotFound);
  auto all = store->all_notifications().value();
  CHECK(all[0].status == NotificationStatus::kSent);
  CHECK(all[0].sent_at == clock.now());
  CHECK(all[0].attempts == 2);
  CHECK(all[1].status == NotificationStatus::kFailed);
  OutboxCounts counts = store->outbox_counts().value();
  CHECK(counts.pending == 0);
  CHECK(counts.sent == 1);
  CHECK(counts.failed == 1);
}

TEST_CASE_TEMPLATE("store: settings, projects and branch heads are upserts", B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  CHECK_FALSE(store->get_setting("reconcile.enabled").value().has_value());
  REQUIRE(store->set_setting("reconcile.enabled", "false").ok());
  REQUIRE(store->set_setting("reconcile.enabled", "true").ok());
  CHECK(store->get_setting("reconcile.enabled").value() == "true");

  CHECK_FALSE(store->find_project("shop").value().has_value());
  REQUIRE(store->save_project({"shop", "SHOP", std::nullopt, std::nullopt}).ok());
  REQUIRE(store->save_project({"shop", "SHOP", clock.now(), clock.now() - 1h}).ok());
  ProjectRow p = store->find_project("shop").value().value();
  CHECK(p.plane_identifier == "SHOP");
  CHECK(p.tracker_horizon == clock.now());
  CHECK(p.tracker_full_sweep == clock.now() - 1h);

  REQUIRE(store->record_branch_head("acme/shop", "orch/shop-1", "aaa", clock.now()).ok());
  clock.advance(1s);
  REQUIRE(store->record_branch_head("acme/shop", "orch/shop-2", "aaa", clock.now()).ok());
  REQUIRE(store->record_branch_head("acme/shop", "orch/shop-1", "bbb", clock.now()).ok());
  CHECK(store->branches_with_head("acme/shop", "aaa").value() == std::vector<std::string>{"orch/shop-2"});
  CHECK(store->branches_with_head("acme/shop", "bbb").value() == std::vector<std::string>{"orch/shop-1"});
  CHECK(store->branches_with_head("acme/other", "bbb").value().empty());
}

// ---- inbox claims -----------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("store: claim_delivery hands out deliveries in arrival order, one at a time per lane", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  insert(*store, lane_delivery("a1", "project:a", clock.now()));
  insert(*store, lane_delivery("b1", "project:b", clock.now()));
  insert(*store, lane_delivery("a2", "project:a", clock.now()));
  insert(*store, lane_delivery("b2", "project:b", clock.now()));

  auto first = store->claim_delivery("r1", clock.now(), 1min);
  REQUIRE_MESSAGE(first.ok(), first.status().message);
  REQUIRE(first->has_value());
  const DeliveryRow& a1 = *first.value();
  CHECK(a1.delivery_id == "a1");
  CHECK(a1.lane == "project:a");
  CHECK(a1.status == DeliveryStatus::kPending);  // a claimed delivery stays pending: its lane waits behind it
  CHECK(a1.claimed_by == "r1");
  CHECK(a1.claim_expires_at == clock.now() + 1min);
  CHECK(a1.run_after == clock.now());  // received_at at first
  CHECK(a1.body == "{\"id\":\"a1\"}");
  CHECK(a1.event == "status");

  CHECK(claim(*store, "r2", clock.now()) == "b1");  // a1 holds lane a, not lane b
  CHECK(claim(*store, "r3", clock.now()) == "-");   // both heads are held: a2 and b2 wait behind them
  REQUIRE(store->finish_delivery(a1.seq, {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).ok());
  DeliveryRow done = delivery_row(*store, "a1");
  CHECK(done.status == DeliveryStatus::kHandled);
  CHECK(done.claimed_by.empty());  // finishing ends the claim
  CHECK_FALSE(done.claim_expires_at.has_value());
  CHECK(done.attempts == 1);
  CHECK(claim(*store, "r3", clock.now()) == "a2");  // lane a's next, in arrival order
  CHECK(claim(*store, "r1", clock.now()) == "-");
  REQUIRE(store->finish_delivery(delivery_row(*store, "b1").seq, {DeliveryStatus::kIgnored, "no", 0, ""}, clock.now())
              .ok());
  CHECK(claim(*store, "r1", clock.now()) == "b2");
  CHECK(store->inbox_counts().value().pending == 2);  // a2 and b2, claimed

  CHECK(store->claim_delivery("", clock.now(), 1min).status().code == Code::kInvalid);
  CHECK(store->claim_delivery("r1", clock.now(), 0ms).status().code == Code::kInvalid);
}

TEST_CASE_TEMPLATE("store: a lane whose head waits for its retry is skipped whole, and the other lanes go on", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  const DeliverySeq a1 = insert(*store, lane_delivery("a1", "project:a", clock.now()));
  insert(*store, lane_delivery("a2", "project:a", clock.now()));
  insert(*store, lane_delivery("b1", "project:b", clock.now()));

  CHECK(claim(*store, "r1", clock.now()) == "a1");
  REQUIRE(store->retry_delivery(a1, "gitea 502", clock.now() + 30s).ok());
  DeliveryRow waiting = delivery_row(*store, "a1");
  CHECK(waiting.status == DeliveryStatus::kPending);
  CHECK(waiting.attempts == 1);
  CHECK(waiting.error == "gitea 502");
  CHECK(waiting.run_after == clock.now() + 30s);
  CHECK(waiting.claimed_by.empty());  // the retry ends the claim
  CHECK_FALSE(waiting.claim_expires_at.has_value());

  CHECK(claim(*store, "r1", clock.now()) == "b1");  // a1 waits, a2 waits behind it; lane b goes on
  CHECK(claim(*store, "r2", clock.now()) == "-");
  clock.advance(30s - 1ms);
  CHECK(claim(*store, "r2", clock.now()) == "-");  // run_after is respected to the millisecond
  clock.advance(1ms);
  CHECK(claim(*store, "r2", clock.now()) == "a1");  // due again, for anyone: nobody holds it
  REQUIRE(store->retry_delivery(a1, "gitea 503", clock.now() + 1min).ok());
  CHECK(delivery_row(*store, "a1").attempts == 2);
  CHECK(delivery_row(*store, "a1").error == "gitea 503");

  const DeliverySeq b1 = delivery_row(*store, "b1").seq;
  REQUIRE(store->finish_delivery(b1, {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).ok());
  CHECK(store->retry_delivery(b1, "late", clock.now()).code == Code::kNotFound);  // only a pending one is retried
  CHECK(store->retry_delivery(9999, "x", clock.now()).code == Code::kNotFound);
  CHECK(delivery_row(*store, "b1").status == DeliveryStatus::kHandled);
}

TEST_CASE_TEMPLATE("store: an unexpired claim is only its holder's to take back, a lapsed one anyone's", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  insert(*store, lane_delivery("a1", "project:a", clock.now()));
  insert(*store, lane_delivery("a2", "project:a", clock.now()));

  CHECK(claim(*store, "r1", clock.now(), 1min) == "a1");
  clock.advance(10s);
  CHECK(claim(*store, "r2", clock.now(), 1min) == "-");
  // A restarted replica (same claimer) takes back its own claim at once, and the lease starts again.
  CHECK(claim(*store, "r1", clock.now(), 1min) == "a1");
  CHECK(delivery_row(*store, "a1").claim_expires_at == clock.now() + 1min);
  clock.advance(1min - 1ms);
  CHECK(claim(*store, "r2", clock.now(), 1min) == "-");
  clock.advance(1ms);
  // The holder died: at claim_expires_at the claim lapses and another claimer takes the delivery over.
  CHECK(claim(*store, "r2", clock.now(), 1min) == "a1");
  CHECK(delivery_row(*store, "a1").claimed_by == "r2");
  CHECK(claim(*store, "r1", clock.now(), 1min) == "-");  // now r2's
  REQUIRE(
      store->finish_delivery(delivery_row(*store, "a1").seq, {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).ok());
  CHECK(claim(*store, "r1", clock.now(), 1min) == "a2");
}

TEST_CASE_TEMPLATE("store: a delivery is not claimable before its run_after", B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  insert(*store, lane_delivery("later", "project:a", clock.now() + 5s));  // run_after = received_at
  insert(*store, lane_delivery("other", "project:b", clock.now()));
  CHECK(claim(*store, "r1", clock.now()) == "other");
  CHECK(claim(*store, "r2", clock.now()) == "-");
  clock.advance(5s);
  CHECK(claim(*store, "r2", clock.now()) == "later");
}

TEST_CASE_TEMPLATE("store: a failed delivery, requeued, is claimable again at the head of its lane", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  const TimePoint received = clock.now();
  const DeliverySeq a1 = insert(*store, lane_delivery("a1", "project:a", received));
  const DeliverySeq a2 = insert(*store, lane_delivery("a2", "project:a", received));
  const DeliverySeq a3 = insert(*store, lane_delivery("a3", "project:a", received));
  CHECK(claim(*store, "r1", clock.now()) == "a1");
  REQUIRE(store->retry_delivery(a1, "flaky", clock.now() + 1s).ok());
  clock.advance(1s);
  CHECK(claim(*store, "r1", clock.now()) == "a1");
  REQUIRE(store->finish_delivery(a1, {DeliveryStatus::kFailed, "boom", 0, ""}, clock.now()).ok());
  DeliveryRow failed = delivery_row(*store, "a1");
  CHECK(failed.status == DeliveryStatus::kFailed);
  CHECK(failed.attempts == 2);
  CHECK(failed.claimed_by.empty());
  CHECK_FALSE(failed.claim_expires_at.has_value());
  CHECK(claim(*store, "r2", clock.now()) == "a2");
  REQUIRE(store->finish_delivery(a2, {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).ok());

  REQUIRE(store->requeue_delivery(a1).ok());  // replay: pending again, due at once, unclaimed
  DeliveryRow replayed = delivery_row(*store, "a1");
  CHECK(replayed.status == DeliveryStatus::kPending);
  CHECK(replayed.error.empty());
  CHECK(replayed.run_after == received);
  CHECK(replayed.claimed_by.empty());
  CHECK(claim(*store, "r3", clock.now()) == "a1");  // it heads its lane again: a3 waits behind it
  CHECK(claim(*store, "r2", clock.now()) == "-");
  REQUIRE(store->finish_delivery(a1, {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).ok());
  CHECK(claim(*store, "r2", clock.now()) == "a3");
  REQUIRE(store->finish_delivery(a3, {DeliveryStatus::kHandled, "", 0, ""}, clock.now()).ok());
  CHECK(store->inbox_counts().value().handled == 3);
}

// ---- outbox claims ----------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("store: claim_due_notifications leases due notifications to one drainer until marked", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  const TimePoint t0 = clock.now();
  REQUIRE(store->enqueue_notification("n1", "first", t0).value());
  REQUIRE(store->enqueue_notification("n2", "second", t0).value());
  REQUIRE(store->enqueue_notification("n3", "third", t0 + 1min).value());
  const std::vector<NotificationId> all = ids_of(store->all_notifications().value());
  REQUIRE(all.size() == 3);

  auto batch = store->claim_due_notifications(t0, 30s, 10);
  REQUIRE_MESSAGE(batch.ok(), batch.status().message);
  CHECK(ids_of(batch.value()) == std::vector<NotificationId>{all[0], all[1]});  // due ones, oldest first
  CHECK(batch.value()[0].text == "first");
  CHECK(batch.value()[0].next_attempt_at == t0 + 30s);  // the lease
  CHECK(batch.value()[0].status == NotificationStatus::kPending);
  CHECK(batch.value()[0].attempts == 0);
  CHECK(store->claim_due_notifications(t0, 30s, 10).value().empty());  // not handed out twice while claimed
  CHECK(store->due_notifications(t0, 10).value().empty());
  clock.advance(30s - 1ms);
  CHECK(store->claim_due_notifications(clock.now(), 30s, 10).value().empty());

  clock.advance(1ms);  // the drainer died: at the end of the lease they come due again
  batch = store->claim_due_notifications(clock.now(), 30s, 1);
  CHECK(ids_of(batch.value()) == std::vector<NotificationId>{all[0]});  // capped at the limit
  REQUIRE(store->mark_notification_sent(all[0], clock.now()).ok());     // marking ends the claim

  clock.set(t0 + 1min);
  batch = store->claim_due_notifications(clock.now(), 30s, 10);
  CHECK(ids_of(batch.value()) == std::vector<NotificationId>{all[1], all[2]});
  REQUIRE(store->mark_notification_retry(all[1], "telegram 502", t0 + 5min).ok());
  REQUIRE(store->mark_notification_failed(all[2], "chat not found").ok());
  clock.advance(2min);
  CHECK(store->claim_due_notifications(clock.now(), 30s, 10).value().empty());  // the retry time, not the lease
  clock.set(t0 + 5min);
  batch = store->claim_due_notifications(clock.now(), 30s, 10);
  REQUIRE(batch->size() == 1);
  CHECK(batch.value()[0].id == all[1]);
  CHECK(batch.value()[0].attempts == 1);
  CHECK(batch.value()[0].error == "telegram 502");
  CHECK(store->mark_notification_sent(all[0], clock.now()).code == Code::kConflict);

  OutboxCounts counts = store->outbox_counts().value();
  CHECK(counts.pending == 1);
  CHECK(counts.sent == 1);
  CHECK(counts.failed == 1);
  CHECK(store->claim_due_notifications(clock.now(), 30s, 0).status().code == Code::kInvalid);
  CHECK(store->claim_due_notifications(clock.now(), 0ms, 10).status().code == Code::kInvalid);
}

OutboxMessage plane_message(const std::string& key, const std::string& lane, TaskId task = 0) {
  return OutboxMessage{std::string(kChannelPlane), key, "{\"k\":\"" + key + "\"}", lane, task};
}

// The claimed message's key, or "-" for none: one string to compare.
std::string next_message(Store& store, const std::string& channel, TimePoint now, Millis lease = 30s) {
  auto claimed = store.claim_next_message(channel, now, lease);
  if (!claimed.ok()) return "error: " + claimed.status().message;
  return claimed.value() ? claimed.value()->dedup_key : "-";
}

TEST_CASE_TEMPLATE("store: messages stored with a transition or a block share its transaction and name it", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  TaskId id = make_task(*store, "7", clock.now());
  TransitionRequest move{id, "created", "analysis", Cause::kWebhook, "In Progress", "", clock.now()};
  move.outbox = {plane_message("7:{transition}:state", "plane:wi-7"),
                 OutboxMessage{std::string(kChannelTelegram), "tg:{transition}", "SHOP-7 moved"}};
  REQUIRE(store->apply_transition(move).ok());
  const std::int64_t first = store->transitions_for_task(id).value().back().id;

  SUBCASE("the placeholder becomes the new transition's id, and each channel sees its own") {
    auto all = store->all_notifications().value();
    REQUIRE(all.size() == 2);
    CHECK(all[0].dedup_key == "7:" + std::to_string(first) + ":state");
    CHECK(all[0].channel == kChannelPlane);
    CHECK(all[0].lane == "plane:wi-7");
    CHECK(all[1].channel == kChannelTelegram);
    CHECK(store->channel_counts(std::string(kChannelPlane)).value().pending == 1);
    CHECK(store->outbox_counts().value().pending == 1);  // Telegram's only
    CHECK(ids_of(store->due_notifications(clock.now(), 10).value()) == std::vector<NotificationId>{all[1].id});
    CHECK(ids_of(store->claim_due_notifications(clock.now(), 30s, 10).value()) ==
          std::vector<NotificationId>{all[1].id});
  }
  SUBCASE("a refused transition stores none of its messages") {
    TransitionRequest stale{id, "created", "analysis", Cause::kWebhook, "again", "", clock.now()};
    stale.outbox = {plane_message("7:{transition}:again", "plane:wi-7")};
    CHECK(store->apply_transition(stale).status().code == Code::kConflict);
    CHECK(store->all_notifications().value().size() == 2);
  }
  SUBCASE("block_task blocks and stores the messages under the latest transition; a second time changes nothing") {
    const std::vector<OutboxMessage> said = {plane_message("7:{transition}:blocked", "plane:wi-7", id)};
    REQUIRE(store->block_task(id, "analyst failed 3 times", clock.now(), said).ok());
    CHECK(task_of(*store, id).blocked);
    CHECK(task_of(*store, id).blocked_reason == "analyst failed 3 times");
    REQUIRE(store->block_task(id, "analyst failed 3 times", clock.now(), said).ok());
    auto plane = store->messages(std::string(kChannelPlane), NotificationStatus::kPending, 10).value();
    REQUIRE(plane.size() == 2);
    CHECK(plane[0].dedup_key == "7:" + std::to_string(first) + ":blocked");  // newest first
    CHECK(store->block_task(999, "x", clock.now(), said).code == Code::kNotFound);
    CHECK(store->all_notifications().value().size() == 3);
  }
  SUBCASE("enqueue_messages outside a transition names the task's latest one and skips stored keys") {
    auto added = store->enqueue_messages({plane_message("7:{transition}:analysis", "plane:wi-7", id),
                                          plane_message("7:{transition}:state", "plane:wi-7", id)},
                                         clock.now());
    REQUIRE_MESSAGE(added.ok(), added.status().message);
    CHECK(added.value() == 1);  // the state move was stored with the transition
    CHECK(store->all_notifications().value().back().dedup_key == "7:" + std::to_string(first) + ":analysis");
    CHECK(store->enqueue_messages({plane_message("", "x")}, clock.now()).status().code == Code::kInvalid);
  }
}

TEST_CASE_TEMPLATE("store: claim_next_message sends a lane in order, lanes past one another, and a retry waits", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  const TimePoint t0 = clock.now();
  const std::string plane(kChannelPlane);
  REQUIRE(store
              ->enqueue_messages(
                  {plane_message("a1", "plane:a"), plane_message("a2", "plane:a"), plane_message("b1", "plane:b")}, t0)
              .ok());
  REQUIRE(store->enqueue_notification("tg", "telegram text", t0).value());
  auto id_of = [&](const std::string& key) {
    for (const NotificationRow& r : store->all_notifications().value())
      if (r.dedup_key == key) return r.id;
    FAIL("no message " << key);
    return NotificationId{0};
  };

  CHECK(next_message(*store, plane, t0) == "a1");
  CHECK(next_message(*store, plane, t0) == "b1");  // a2 waits behind a1, claimed or not
  CHECK(next_message(*store, plane, t0) == "-");   // and Telegram's row is not this channel's
  REQUIRE(store->mark_notification_retry(id_of("a1"), "plane 502", t0 + 1min).ok());
  REQUIRE(store->mark_notification_sent(id_of("b1"), t0).ok());
  CHECK(next_message(*store, plane, t0 + 59s) == "-");  // a1 waits for its retry, and a2 behind it
  CHECK(next_message(*store, plane, t0 + 1min) == "a1");
  REQUIRE(store->mark_notification_failed(id_of("a1"), "plane 400").ok());
  CHECK(next_message(*store, plane, t0 + 1min) == "a2");  // a failed message no longer holds its lane

  SUBCASE("a failed message is retried from scratch at the operator's word, and only a failed one") {
    REQUIRE(store->retry_failed_message(id_of("a1"), t0 + 2min).ok());
    auto a1 = store->messages(plane, NotificationStatus::kPending, 10).value();
    REQUIRE(a1.size() == 2);
    CHECK(a1[1].dedup_key == "a1");
    CHECK(a1[1].attempts == 0);
    CHECK(a1[1].next_attempt_at == t0 + 2min);
    CHECK(store->retry_failed_message(id_of("b1"), t0).code == Code::kConflict);
    CHECK(store->retry_failed_message(424242, t0).code == Code::kNotFound);
    CHECK(store->messages(plane, NotificationStatus::kFailed, 10).value().empty());
  }
  SUBCASE("the counts are per channel") {
    OutboxCounts counts = store->channel_counts(plane).value();
    CHECK(counts.pending == 1);
    CHECK(counts.sent == 1);
    CHECK(counts.failed == 1);
    CHECK(store->channel_counts(std::string(kChannelGitea)).value().pending == 0);
    CHECK(store->claim_next_message(plane, t0, 0ms).status().code == Code::kInvalid);
  }
}

// ---- races ------------------------------------------------------------------------------------------------------
// Threads on several store instances of one database: on PostgreSQL, separate pools and connections, as replicas.

constexpr int kStores = 4;

// Failures on worker threads, reported by the test thread (doctest's assertions belong to the test thread).
class ThreadErrors {
 public:
  void add(const std::string& what, const Status& s) {
    std::lock_guard lock(mu_);
    messages_.push_back(what + ": " + s.to_string());
  }
  bool any() const {
    std::lock_guard lock(mu_);
    return !messages_.empty();
  }
  std::string summary() const {
    std::lock_guard lock(mu_);
    std::string out;
    for (size_t i = 0; i < messages_.size() && i < 5; ++i) out += messages_[i] + "\n";
    return out + std::to_string(messages_.size()) + " error(s)";
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> messages_;  // guarded by mu_
};

template <class B>
std::vector<std::unique_ptr<Store>> open_stores(B& backend, int n = kStores) {
  std::vector<std::unique_ptr<Store>> stores;
  for (int i = 0; i < n; ++i) stores.push_back(backend.open());
  return stores;
}

TEST_CASE_TEMPLATE("store: 50 racing create_task_atomic calls for one work item on several stores create it once", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto stores = open_stores(backend);
  constexpr int kThreads = 50;
  constexpr int kRounds = 5;
  std::vector<std::array<int, kThreads>> created(kRounds);
  std::vector<std::array<TaskId, kThreads>> ids(kRounds);
  ThreadErrors errors;
  std::barrier start_round(kThreads);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        Store& store = *stores[t % kStores];
        for (int round = 0; round < kRounds; ++round) {
          start_round.arrive_and_wait();
          auto claim = store.create_task_atomic(new_task("race-" + std::to_string(round)), kMonday9am);
          if (!claim.ok()) {
            errors.add("create_task_atomic", claim.status());
            continue;
          }
          created[round][t] = claim->created ? 1 : 0;
          ids[round][t] = claim->task.id;
        }
      });
    }
  }
  CHECK_MESSAGE(!errors.any(), errors.summary());
  for (int round = 0; round < kRounds; ++round) {
    int winners = 0;
    for (int t = 0; t < kThreads; ++t) winners += created[round][t];
    CHECK_MESSAGE(winners == 1, "round " << round);
    CHECK(std::all_of(ids[round].begin(), ids[round].end(), [&](TaskId id) { return id == ids[round][0]; }));
  }
  CHECK(stores[0]->count_tasks().value() == kRounds);
}

TEST_CASE_TEMPLATE("store: claimers on several stores never get one job twice", B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto stores = open_stores(backend);
  constexpr int kJobs = 120;
  constexpr int kThreads = 8;
  std::set<JobId> all;
  for (int i = 0; i < kJobs; ++i)  // one job per task: the claim runs one job per task at a time
    all.insert(
        enqueue(*stores[0], make_task(*stores[0], std::to_string(i), kMonday9am), 1, 1, kMonday9am, kMonday9am).id);
  std::vector<std::vector<JobId>> claimed(kThreads);
  ThreadErrors errors;
  std::barrier start(kThreads);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        Store& store = *stores[t % kStores];
        start.arrive_and_wait();
        while (true) {
          auto job = store.claim_job("w/" + std::to_string(t), kMonday9am);
          if (!job.ok()) {
            errors.add("claim_job", job.status());
            return;
          }
          if (!job->has_value()) return;
          claimed[t].push_back(job.value()->id);
        }
      });
    }
  }
  CHECK_MESSAGE(!errors.any(), errors.summary());
  std::multiset<JobId> seen;
  for (const auto& ids : claimed) seen.insert(ids.begin(), ids.end());
  CHECK(seen.size() == kJobs);
  CHECK(std::set<JobId>(seen.begin(), seen.end()) == all);
  CHECK(stores[0]->jobs_with_status(JobStatus::kRunning, 1000).value().size() == kJobs);
}

TEST_CASE_TEMPLATE("store: claimers on several stores never run more jobs than max_running allows", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto stores = open_stores(backend);
  constexpr int kThreads = 8;
  constexpr int kJobs = 60;
  for (int i = 0; i < kJobs; ++i)
    queued_job(*stores[0], i % 3 == 0 ? "docs" : "shop", std::to_string(i), i % 2 ? "developer" : "analyst",
               kMonday9am);
  JobLimits limits;
  limits.max_running = 3;
  limits.per_project["shop"] = 2;
  std::map<JobId, std::string> project_of;
  for (const auto& row : stores[0]->jobs_with_status(JobStatus::kQueued, 1000).value())
    project_of[row.id] = task_of(*stores[0], row.task_id).project;
  // Each worker holds up to two jobs, so the store is at its limits most of the time and the claims race at the
  // boundary; after each claim the worker reads what the store has running, which must never pass a limit.
  std::atomic<int> most{0}, most_shop{0}, done{0};
  // Bumped when a job ends (a slot frees) or a thread fails: an idle worker waits for it, as a poked worker would,
  // instead of spinning on claims that hold SQLite's one write lock against the workers that would free a slot.
  std::atomic<int> events{0};
  auto event = [&events] {
    events.fetch_add(1);
    events.notify_all();
  };
  ThreadErrors errors;
  std::barrier start(kThreads);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        Store& store = *stores[t % kStores];
        std::deque<JobId> held;
        start.arrive_and_wait();
        while (done.load() < kJobs && !errors.any()) {
          const int seen = events.load();
          auto job = store.claim_job("w/" + std::to_string(t), kMonday9am, limits);
          if (!job.ok()) {
            errors.add("claim_job", job.status());
            event();
            return;
          }
          if (job->has_value()) {
            held.push_back(job.value()->id);
            auto running = store.jobs_with_status(JobStatus::kRunning, 1000);
            if (!running.ok()) {
              errors.add("jobs_with_status", running.status());
              event();
              return;
            }
            int all = 0, shop = 0;
            for (const JobRow& r : running.value()) {
              ++all;
              if (project_of.at(r.id) == "shop") ++shop;
            }
            for (auto [seen, n] : {std::pair{&most, all}, std::pair{&most_shop, shop}}) {
              int prev = seen->load();
              while (n > prev && !seen->compare_exchange_weak(prev, n)) {
              }
            }
          }
          if (held.size() >= 2 || (!job->has_value() && !held.empty())) {
            Status finished = store.finish_job(held.front(), JobStatus::kSucceeded, "", kMonday9am);
            if (!finished.ok()) errors.add("finish_job", finished);
            held.pop_front();
            ++done;
            event();
          } else if (!job->has_value()) {
            events.wait(seen);  // nothing claimable and nothing held: until a job ends somewhere
          }
        }
      });
    }
  }
  CHECK_MESSAGE(!errors.any(), errors.summary());
  CHECK(done.load() == kJobs);
  CHECK(most.load() <= 3);
  CHECK(most_shop.load() <= 2);
  CHECK(most.load() >= 2);  // the workers did overlap: the limits were reached, not idle
  CHECK(stores[0]->jobs_with_status(JobStatus::kSucceeded, 1000).value().size() == kJobs);
}

TEST_CASE_TEMPLATE("store: concurrent claimers never get one delivery twice nor two of one lane at once", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto stores = open_stores(backend);
  constexpr int kLanes = 4;
  constexpr int kPerLane = 12;
  constexpr int kThreads = 8;
  for (int i = 0; i < kPerLane; ++i)
    for (int lane = 0; lane < kLanes; ++lane)
      insert(*stores[0], lane_delivery("d" + std::to_string(lane) + "-" + std::to_string(i),
                                       "project:" + std::to_string(lane), kMonday9am));
  std::mutex mu;
  std::set<std::string> in_flight;              // guarded by mu: lanes a claimer holds right now
  std::map<std::string, DeliverySeq> last_seq;  // guarded by mu: per lane, the last delivery handled
  std::multiset<DeliverySeq> handled;           // guarded by mu
  int overlaps = 0, out_of_order = 0;           // guarded by mu
  std::atomic<int> finished{0};
  ThreadErrors errors;
  std::barrier start(kThreads);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        Store& store = *stores[t % kStores];
        const std::string claimer = "replica-" + std::to_string(t);
        start.arrive_and_wait();
        while (finished.load() < kLanes * kPerLane && !errors.any()) {
          auto claimed = store.claim_delivery(claimer, kMonday9am, 1h);
          if (!claimed.ok()) {
            errors.add("claim_delivery", claimed.status());
            return;
          }
          if (!claimed.value()) {  // every lane is held by someone else right now
            std::this_thread::yield();
            continue;
          }
          const DeliveryRow row = *claimed.value();
          {
            std::lock_guard lock(mu);
            if (!in_flight.insert(row.lane).second) ++overlaps;
            if (last_seq.count(row.lane) && last_seq[row.lane] >= row.seq) ++out_of_order;
            last_seq[row.lane] = row.seq;
            handled.insert(row.seq);
            in_flight.erase(row.lane);  // before finishing: the next claim of this lane can only follow the finish
          }
          if (Status s = store.finish_delivery(row.seq, {DeliveryStatus::kHandled, "", 0, ""}, kMonday9am); !s.ok()) {
            errors.add("finish_delivery", s);
            return;
          }
          ++finished;
        }
      });
    }
  }
  CHECK_MESSAGE(!errors.any(), errors.summary());
  CHECK(overlaps == 0);
  CHECK(out_of_order == 0);
  CHECK(handled.size() == kLanes * kPerLane);
  CHECK(std::set<DeliverySeq>(handled.begin(), handled.end()).size() == kLanes * kPerLane);  // none twice
  CHECK(stores[0]->inbox_counts().value().handled == kLanes * kPerLane);
}

TEST_CASE_TEMPLATE("store: one Plane delivery received at once under different delivery ids is stored once", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto stores = open_stores(backend);
  constexpr int kThreads = 12;
  constexpr int kRounds = 8;
  std::vector<std::array<InboxInsert, kThreads>> results(kRounds);
  ThreadErrors errors;
  std::barrier start_round(kThreads);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        Store& store = *stores[t % kStores];
        for (int round = 0; round < kRounds; ++round) {
          // Plane's retries: a fresh delivery id, the same bytes. Half the receivers group-commit a batch that also
          // holds a delivery of their own.
          NewDelivery retry = delivery(Source::kPlane, "p" + std::to_string(round) + "-" + std::to_string(t),
                                       "digest-" + std::to_string(round), kMonday9am);
          start_round.arrive_and_wait();
          if (t % 2 == 0) {
            auto in = store.insert_delivery(retry, true);
            if (!in.ok()) {
              errors.add("insert_delivery", in.status());
              continue;
            }
            results[round][t] = in.value();
          } else {
            NewDelivery own = delivery(Source::kPlane, "own" + std::to_string(round) + "-" + std::to_string(t),
                                       "own-" + std::to_string(round) + "-" + std::to_string(t), kMonday9am);
            auto in = store.insert_deliveries({own, retry}, {true, true});
            if (!in.ok() || in->size() != 2 || in.value()[0].duplicate) {
              errors.add("insert_deliveries", in.ok() ? internal("own delivery taken for a duplicate") : in.status());
              continue;
            }
            results[round][t] = in.value()[1];
          }
        }
      });
    }
  }
  CHECK_MESSAGE(!errors.any(), errors.summary());
  for (int round = 0; round < kRounds; ++round) {
    int stored = 0;
    for (const InboxInsert& r : results[round]) stored += r.duplicate ? 0 : 1;
    CHECK_MESSAGE(stored == 1, "round " << round);
    CHECK(std::all_of(results[round].begin(), results[round].end(),
                      [&](const InboxInsert& r) { return r.seq == results[round][0].seq; }));
  }
  CHECK(stores[0]->inbox_counts().value().received == kRounds * (1 + kThreads / 2));
}

TEST_CASE_TEMPLATE("store: group commits of the same deliveries in opposite orders neither fail nor duplicate", B,
                   ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto stores = open_stores(backend, 2);
  constexpr int kBatch = 10;
  constexpr int kRounds = 10;
  ThreadErrors errors;
  std::barrier start_round(2);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        for (int round = 0; round < kRounds; ++round) {
          std::vector<NewDelivery> batch;
          for (int i = 0; i < kBatch; ++i) {
            const std::string id = "g" + std::to_string(round) + "-" + std::to_string(i);
            batch.push_back(delivery(Source::kPlane, id, "h-" + id, kMonday9am));
          }
          if (t == 1) std::reverse(batch.begin(), batch.end());  // the other order: a lock cycle if locks were taken
          start_round.arrive_and_wait();                         // in batch order
          auto in = stores[t]->insert_deliveries(batch, std::vector<bool>(kBatch, true));
          if (!in.ok()) errors.add("insert_deliveries", in.status());
        }
      });
    }
  }
  CHECK_MESSAGE(!errors.any(), errors.summary());
  CHECK(stores[0]->inbox_counts().value().received == kBatch * kRounds);
}

TEST_CASE_TEMPLATE(
    "store: a job's follow-up step is recorded, retried from the queue without a new attempt, and "
    "failed with its error",
    B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  TaskId id = make_task(*store, "1", clock.now());
  JobRow job = enqueue(*store, id, 1, 1, clock.now(), clock.now());
  CHECK(job.step.empty());
  CHECK(job.step_attempts == 0);
  CHECK(job.step_error.empty());
  CHECK(store->begin_job_step(job.id, "push", clock.now()).code == Code::kConflict);  // queued, not running
  REQUIRE(store->claim_job("100/1", clock.now()).value()->id == job.id);

  clock.advance(5s);
  REQUIRE(store->begin_job_step(job.id, "open_pr", clock.now()).ok());
  JobRow at = store->find_job(job.id).value().value();
  CHECK(at.status == JobStatus::kRunning);
  CHECK(at.step == "open_pr");
  CHECK(at.heartbeat_at == clock.now());  // a step's start shows life to the sweeper

  REQUIRE(store->fail_job_step(job.id, "HTTP 500", clock.now() + 30s, clock.now()).ok());
  JobRow waiting = store->find_job(job.id).value().value();
  CHECK(waiting.status == JobStatus::kQueued);
  CHECK(waiting.attempt == 1);
  CHECK(waiting.step == "open_pr");
  CHECK(waiting.step_attempts == 1);
  CHECK(waiting.step_error == "HTTP 500");
  CHECK(waiting.worker.empty());
  CHECK(waiting.run_after == clock.now() + 30s);
  CHECK(store->fail_job_step(job.id, "again", std::nullopt, clock.now()).code == Code::kConflict);
  CHECK_FALSE(store->claim_job("100/1", clock.now()).value().has_value());  // backing off
  // A step waiting for its retry has run its agent: the queued-TTL rule leaves it alone.
  CHECK(store->fail_expired_queued(clock.now() + 1s, 10, "queued too long", clock.now()).value().empty());

  clock.advance(30s);
  auto again = store->claim_job("100/2", clock.now()).value();
  REQUIRE(again);
  CHECK(again->id == job.id);
  CHECK(again->step == "open_pr");
  CHECK(again->step_attempts == 1);
  REQUIRE(store->fail_job_step(job.id, "HTTP 502", std::nullopt, clock.now()).ok());
  JobRow failed = store->find_job(job.id).value().value();
  CHECK(failed.status == JobStatus::kFailed);
  CHECK(failed.error == "HTTP 502");
  CHECK(failed.step == "open_pr");
  CHECK(failed.step_attempts == 2);
  CHECK(failed.step_error == "HTTP 502");
  CHECK(failed.finished_at == clock.now());
  CHECK(store->fail_job_step(424242, "x", std::nullopt, clock.now()).code == Code::kNotFound);

  SUBCASE("a new step starts with no failed tries and no error") {
    JobRow next = enqueue(*store, id, 1, 2, clock.now(), clock.now());
    REQUIRE(store->claim_job("100/1", clock.now()).value()->id == next.id);
    REQUIRE(store->begin_job_step(next.id, "push", clock.now()).ok());
    REQUIRE(store->fail_job_step(next.id, "push refused", clock.now(), clock.now()).ok());
    REQUIRE(store->claim_job("100/1", clock.now()).value()->id == next.id);
    REQUIRE(store->begin_job_step(next.id, "gate", clock.now()).ok());
    JobRow gate = store->find_job(next.id).value().value();
    CHECK(gate.step == "gate");
    CHECK(gate.step_attempts == 0);
    CHECK(gate.step_error.empty());
    REQUIRE(store->finish_job(next.id, JobStatus::kSucceeded, "", clock.now()).ok());
    CHECK(store->find_job(next.id).value()->step == "gate");
  }
}

TEST_CASE_TEMPLATE(
    "store: usage adds up per job, task, agent, stage and project, and a held task's jobs are neither claimed nor "
    "expired "
    "until it is resumed, with an audit row each",
    B, ORCH_CONTRACT_BACKENDS) {
  B backend;
  auto store = backend.open();
  ManualClock clock;
  const JobRow a = queued_job(*store, "shop", "1", "analyst", clock.now());
  const JobRow other = queued_job(*store, "shop", "2", "analyst", clock.now());
  const JobRow elsewhere = queued_job(*store, "mill", "1", "analyst", clock.now());
  REQUIRE(claim_under(*store, {}, clock.now()) != 0);
  REQUIRE(claim_under(*store, {}, clock.now()) != 0);
  REQUIRE(claim_under(*store, {}, clock.now()) != 0);

  auto first = store->record_usage(a.id, AgentUsage{1000, 200, "large", 500'000});
  REQUIRE_MESSAGE(first.ok(), first.status().message);
  CHECK(first.value().task == 500'000);
  CHECK(first.value().task_agent == 500'000);
  CHECK(first.value().project == 500'000);
  // A second run of the same job (after a restart) adds; an empty model keeps the last one.
  auto second = store->record_usage(a.id, AgentUsage{10, 2, "", 250'000}).value();
  CHECK(second.task == 750'000);
  REQUIRE(store->record_usage(other.id, AgentUsage{0, 0, "small", 125'000}).ok());
  REQUIRE(store->record_usage(elsewhere.id, AgentUsage{0, 0, "", 1'000'000}).ok());
  const JobRow job = *store->find_job(a.id).value();
  CHECK(job.tokens_in == 1010);
  CHECK(job.tokens_out == 202);
  CHECK(job.model == "large");
  CHECK(job.cost == 750'000);
  const Spend spend = store->spend_of(a.task_id, "analyst").value();
  CHECK(spend.task == 750'000);
  CHECK(spend.task_agent == 750'000);
  CHECK(spend.project == 875'000);  // shop's two tasks, not mill's
  CHECK(store->spend_of(a.task_id, "developer").value().task_agent == 0);
  CHECK(task_of(*store, a.task_id).spend == 750'000);
  const std::vector<StageSpend> stages = store->spend_by_stage().value();
  REQUIRE(stages.size() == 2);
  CHECK((stages[0].project == "mill" && stages[0].stage == "analysis" && stages[0].spend == 1'000'000));
  CHECK((stages[1].project == "shop" && stages[1].spend == 875'000));
  CHECK(store->record_usage(a.id, AgentUsage{-1, 0, "", 0}).status().code == Code::kInvalid);
  CHECK(store->record_usage(9999, AgentUsage{}).status().code == Code::kNotFound);
  CHECK(store->spend_of(9999, "analyst").status().code == Code::kNotFound);

  // The hold: a retry of the held task is not claimed (the other task's is), nor expired by the queued TTL.
  for (const JobRow& j : {a, other}) REQUIRE(store->finish_job(j.id, JobStatus::kFailed, "exit 1", clock.now()).ok());
  const JobRow retry = enqueue(*store, a.task_id, 1, 2, clock.now(), clock.now());
  const JobRow other_retry = enqueue(*store, other.task_id, 1, 2, clock.now(), clock.now());
  const std::vector<OutboxMessage> said = {{std::string(kChannelTelegram), "budget-held:1", "SHOP-shop-1 is held"}};
  auto held = store->hold_task(a.task_id, "spent 0.75 USD of 0.75", clock.now(), said);
  REQUIRE_MESSAGE(held.ok(), held.status().message);
  CHECK(held.value());
  CHECK_FALSE(store->hold_task(a.task_id, "again", clock.now(), said).value());  // held already: nothing written
  CHECK(store->hold_task(9999, "x", clock.now(), {}).status().code == Code::kNotFound);
  CHECK(store->hold_task(a.task_id, "", clock.now(), {}).status().code == Code::kInvalid);
  const TaskRow held_row = task_of(*store, a.task_id);
  CHECK(held_row.budget_hold == "spent 0.75 USD of 0.75");
  CHECK(held_row.budget_hold_at == clock.now());
  CHECK(store->all_notifications().value().size() == 1);
  CHECK(claim_under(*store, {}, clock.now()) == other_retry.id);
  CHECK(claim_under(*store, {}, clock.now()) == 0);  // only the held task's retry is left
  clock.advance(3h);
  CHECK(store->fail_expired_queued(clock.now() - 2h, 10, "queued too long", clock.now()).value().empty());

  // Resumed with a raise: claimable again, and its queued TTL counts from the resume.
  auto resumed =
      store->resume_task(a.task_id, 500'000, "budget raised by 0.50 USD and resumed by a person", clock.now());
  REQUIRE_MESSAGE(resumed.ok(), resumed.status().message);
  CHECK(resumed.value().budget_hold.empty());
  CHECK_FALSE(resumed.value().budget_hold_at.has_value());
  CHECK(resumed.value().budget_raise == 500'000);
  CHECK(store->fail_expired_queued(clock.now() - 2h, 10, "queued too long", clock.now()).value().empty());
  CHECK(claim_under(*store, {}, clock.now()) == retry.id);
  CHECK(store->resume_task(a.task_id, -1, "x", clock.now()).status().code == Code::kInvalid);
  CHECK(store->resume_task(9999, 0, "x", clock.now()).status().code == Code::kNotFound);
  // Both are in the audit log, the task staying in its stage.
  const std::vector<TransitionRow> audit = store->transitions_for_task(a.task_id).value();
  REQUIRE(audit.size() == 2);
  CHECK(audit[0].from == "created");
  CHECK(audit[0].to == "created");
  CHECK(audit[0].cause == Cause::kAgent);
  CHECK(audit[0].detail == "held: spent 0.75 USD of 0.75");
  CHECK(audit[1].cause == Cause::kManual);
  CHECK(audit[1].detail == "budget raised by 0.50 USD and resumed by a person");
  CHECK(task_of(*store, a.task_id).visit == 1);
}

}  // namespace
}  // namespace orch
