// tests/engine/sqlite_store_test.cpp: SqliteStore on real files in a TempDir, time from a ManualClock.
// Races run real threads and real processes (fork) against one file; nothing sleeps.
#include "engine/sqlite_store.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <set>
#include <thread>
#include <vector>

#include "tests/support/manual_clock.h"
#include "tests/support/temp_dir.h"

namespace orch {
namespace {

using testing::kMonday9am;
using testing::ManualClock;
using testing::TempDir;
using namespace std::chrono_literals;

std::unique_ptr<SqliteStore> open_store(const std::string& path, SqliteStoreOptions options = {}) {
  auto store = SqliteStore::open(path, options);
  REQUIRE_MESSAGE(store.ok(), store.status().message);
  return std::move(store).value();
}

NewTask new_task(const std::string& id) {
  NewTask t;
  t.project = "shop";
  t.work_item_id = "wi-" + id;
  t.work_item_key = "SHOP-" + id;
  t.title = "title " + id;
  t.description = "description " + id;
  t.branch = "orch/shop-" + id;
  return t;
}

TaskId make_task(SqliteStore& store, const std::string& id, TimePoint now) {
  auto claim = store.create_task_atomic(new_task(id), now);
  REQUIRE_MESSAGE(claim.ok(), claim.status().message);
  REQUIRE(claim->created);
  return claim->task.id;
}

TaskRow task_of(SqliteStore& store, TaskId id) {
  auto row = store.find_task(id);
  REQUIRE(row.ok());
  REQUIRE(row->has_value());
  return *row.value();
}

JobRow enqueue(SqliteStore& store, TaskId task, int visit, int attempt, TimePoint now, TimePoint run_after) {
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

TEST_CASE("sqlite store: a fresh file is migrated to the current schema and reopening it changes nothing") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  CHECK(SqliteStore::schema_version(path).status().code == Code::kNotFound);
  {
    auto store = open_store(path);
    CHECK(store->version_at_open() == 0);
    make_task(*store, "1", kMonday9am);
  }
  auto version = SqliteStore::schema_version(path);
  REQUIRE(version.ok());
  CHECK(version.value() == SqliteStore::kSchemaVersion);
  {
    auto store = open_store(path);
    CHECK(store->version_at_open() == SqliteStore::kSchemaVersion);
    CHECK(store->count_tasks().value() == 1);
  }
  SQLite::Database db(path, SQLite::OPEN_READONLY);
  CHECK(db.execAndGet("PRAGMA journal_mode").getString() == "wal");  // persistent in the file
}

TEST_CASE("sqlite store: a database written by a newer orch is refused, naming both versions") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  open_store(path).reset();
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE);
    db.exec("PRAGMA user_version = 7");
  }
  auto store = SqliteStore::open(path);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code == Code::kInvalid);
  const std::string expected = "database schema version 7 is newer than this orch (" +
                               std::to_string(SqliteStore::kSchemaVersion) + "); upgrade orch";
  CHECK_MESSAGE(store.status().message.find(expected) != std::string::npos, store.status().message);
  CHECK(SqliteStore::schema_version(path).value() == 7);  // and nothing was downgraded
}

TEST_CASE("sqlite store: create_task_atomic creates a task once and returns the existing one afterwards") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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
  CHECK(second->task.title == "title 42");        // the loser writes nothing
  CHECK(second->task.updated_at == kMonday9am);
  CHECK(store->count_tasks().value() == 1);
  CHECK(store->find_task_by_work_item("wi-42").value()->id == t.id);
  CHECK_FALSE(store->find_task_by_work_item("wi-43").value().has_value());
  CHECK(store->create_task_atomic(new_task(""), clock.now()).ok());  // "wi-": a valid id
  NewTask empty;
  CHECK(store->create_task_atomic(empty, clock.now()).status().code == Code::kInvalid);
}

TEST_CASE("sqlite store: 16 threads racing for the same work items create each exactly once") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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

TEST_CASE("sqlite store: processes racing for the same work items create each exactly once") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  // The parent migrates, then closes: a child must not inherit an open SQLite connection across fork().
  open_store(path).reset();
  constexpr int kChildren = 8;
  constexpr int kItems = 25;  // each child exits with how many it created, so this must stay below 100
  int go[2];
  REQUIRE(pipe(go) == 0);
  std::vector<pid_t> children;
  for (int i = 0; i < kChildren; ++i) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // The child: never returns into doctest. Exit codes: 0..kItems created, >=100 an error.
      close(go[1]);
      char byte;
      if (read(go[0], &byte, 1) < 0) _exit(101);  // EOF once the parent closes its end: all start together
      int won = 0;
      {
        auto store = SqliteStore::open(path);
        if (!store.ok()) _exit(102);
        for (int item = 0; item < kItems; ++item) {
          auto claim = store.value()->create_task_atomic(new_task(std::to_string(item)), kMonday9am);
          if (!claim.ok()) _exit(103);
          won += claim.value().created ? 1 : 0;
        }
      }
      _exit(won);
    }
    children.push_back(pid);
  }
  close(go[0]);
  close(go[1]);
  int total = 0;
  for (pid_t pid : children) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    const int code = WEXITSTATUS(status);
    CHECK_MESSAGE(code < 100, "child failed with " << code);
    if (code < 100) total += code;
  }
  CHECK(total == kItems);  // one winner per item, across all processes
  auto store = open_store(path);
  CHECK(store->count_tasks().value() == kItems);
}

TEST_CASE("sqlite store: idle_tasks lists live tasks past the cutoff with no active job") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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

TEST_CASE("sqlite store: idle_tasks pages by (updated_at, id) strictly after the cursor") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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

TEST_CASE("sqlite store: the idle-task scan is a range over the partial index, not a table scan") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
  for (int i = 0; i < 50; ++i) make_task(*store, std::to_string(i), kMonday9am);
  auto plan = store->idle_tasks_plan();
  REQUIRE(plan.ok());
  INFO(plan.value());
  CHECK(plan->find("SEARCH tasks USING INDEX tasks_idle") != std::string::npos);
  CHECK(plan->find("SCAN tasks") == std::string::npos);
  CHECK(plan->find("SCAN jobs") == std::string::npos);
  CHECK(plan->find("USE TEMP B-TREE") == std::string::npos);  // the index order is the result order
}

TEST_CASE("sqlite store: apply_transition is a compare-and-set that writes the audit row") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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

TEST_CASE("sqlite store: record_facts overwrites only the facts it carries and bumps updated_at") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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

TEST_CASE("sqlite store: task listings for the queue, the replay and branch lookups") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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
}

TEST_CASE("sqlite store: enqueue_job is idempotent per (task, visit, attempt)") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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

TEST_CASE("sqlite store: claim_job takes the oldest due job, and a job finishes only from running") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
  ManualClock clock;
  TaskId id = make_task(*store, "1", clock.now());
  JobRow later = enqueue(*store, id, 1, 1, clock.now(), clock.now() + 10s);
  JobRow earlier = enqueue(*store, id, 1, 2, clock.now(), clock.now() - 1s);
  JobRow now = enqueue(*store, id, 1, 3, clock.now(), clock.now());

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

TEST_CASE("sqlite store: 8 threads claiming 200 jobs claim each exactly once") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
  constexpr int kJobs = 200;
  constexpr int kThreads = 8;
  std::set<JobId> all;
  for (int i = 0; i < 20; ++i) {
    TaskId task = make_task(*store, std::to_string(i), kMonday9am);
    for (int attempt = 1; attempt <= kJobs / 20; ++attempt)
      all.insert(enqueue(*store, task, 1, attempt, kMonday9am, kMonday9am).id);
  }
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

TEST_CASE("sqlite store: the sweeper rules fail only stale or expired jobs, in capped batches") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
  ManualClock clock;
  TaskId id = make_task(*store, "1", clock.now());
  std::vector<JobId> running;
  for (int attempt = 1; attempt <= 4; ++attempt) {
    enqueue(*store, id, 1, attempt, clock.now(), clock.now());
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

TEST_CASE("sqlite store: the inbox deduplicates by delivery id, and by body digest when asked") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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
  CHECK(store->insert_delivery(delivery(Source::kGitea, "", "h1", clock.now()), false).status().code ==
        Code::kInvalid);

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

TEST_CASE("sqlite store: a batch of deliveries is one transaction that sees its own duplicates") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
  ManualClock clock;
  REQUIRE(store->insert_delivery(delivery(Source::kGitea, "old", "h0", clock.now()), false).ok());
  std::vector<NewDelivery> batch{
      delivery(Source::kPlane, "p1", "h1", clock.now()),  // new
      delivery(Source::kPlane, "p1", "h2", clock.now()),  // same id as the first, in the same batch
      delivery(Source::kPlane, "p2", "h1", clock.now()),  // same digest as the first
      delivery(Source::kGitea, "old", "h3", clock.now()), // stored before the batch
      delivery(Source::kGitea, "g1", "h1", clock.now()),  // digest dedup off for Gitea
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

TEST_CASE("sqlite store: deliveries are processed in arrival order and a failed one can be replayed") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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
  REQUIRE(store->finish_delivery(seqs[0], DeliveryStatus::kHandled, "", clock.now()).ok());
  REQUIRE(store->finish_delivery(seqs[1], DeliveryStatus::kFailed, "first failure", clock.now()).ok());
  REQUIRE(store->finish_delivery(seqs[2], DeliveryStatus::kIgnored, "unknown project", clock.now()).ok());
  clock.advance(1s);
  REQUIRE(store->finish_delivery(seqs[3], DeliveryStatus::kFailed, "second failure", clock.now()).ok());
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
  CHECK(store->finish_delivery(9999, DeliveryStatus::kHandled, "", clock.now()).code == Code::kNotFound);
  REQUIRE(store->finish_delivery(seqs[1], DeliveryStatus::kHandled, "", clock.now()).ok());
  CHECK(store->find_delivery("d1").value()->attempts == 2);
}

TEST_CASE("sqlite store: the outbox deduplicates by key and schedules retries") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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

TEST_CASE("sqlite store: settings, projects and branch heads are upserts") {
  TempDir dir;
  auto store = open_store(dir.file("orch.db"));
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

TEST_CASE("sqlite store: a write lock held past the busy timeout is kUnavailable, and the store recovers") {
  TempDir dir;
  const std::string path = dir.file("orch.db");
  auto store = open_store(path, {.max_connections = 4, .busy_timeout = 20ms});
  REQUIRE(store->set_setting("k", "before").ok());
  SQLite::Database other(path, SQLite::OPEN_READWRITE);  // another process's connection, as far as SQLite knows
  other.exec("BEGIN IMMEDIATE");
  Status blocked = store->set_setting("k", "during");
  CHECK(blocked.code == Code::kUnavailable);
  CHECK(store->get_setting("k").value() == "before");  // WAL: readers are not blocked by the writer
  other.exec("ROLLBACK");
  REQUIRE(store->set_setting("k", "after").ok());
  CHECK(store->get_setting("k").value() == "after");
}

}  // namespace
}  // namespace orch
