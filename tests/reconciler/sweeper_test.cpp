#include <doctest/doctest.h>

#include "reconciler/sweeper.h"
#include "tests/support/engine_fixture.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

// A job claimed (running) for each of `n` tasks in analysis; the analyst has the default 30 min timeout.
std::vector<JobRow> running_jobs(EngineFixture& f, int n) {
  std::vector<JobRow> out;
  for (int i = 1; i <= n; ++i) f.task_in("analysis", "SHOP-" + std::to_string(i));
  for (int i = 0; i < n; ++i) {
    auto claimed = f.store->claim_job("1234/0", f.clock.now());
    REQUIRE(claimed.ok());
    REQUIRE(claimed.value());
    out.push_back(*claimed.value());
  }
  return out;
}

JobRow job(EngineFixture& f, JobId id) { return *f.store->find_job(id).value(); }

// How often the sweeper told its waker that a job is queued again.
struct CountingWaker final : JobWaker {
  int wakes = 0;
  void jobs_enqueued() override { ++wakes; }
};

int sweeper_lines(const TestLog& log) {
  int n = 0;
  for (const auto& l : log.lines())
    if (l.find("sweeper:") != std::string::npos) ++n;
  return n;
}

}  // namespace

TEST_CASE(
    "a running job whose heartbeat stopped is failed as orphaned, once, with one log line, and its retry wakes the "
    "claimers") {
  EngineFixture f;
  JobsSpec spec;  // heartbeat_stale 150 s
  AttemptPolicy attempts(*f.store, f.pipeline, WriteBack::off(), f.clock, f.log);
  CountingWaker waker;
  Sweeper sweeper(*f.store, attempts, f.pipeline, spec, f.clock, f.log, waker);
  JobRow j = running_jobs(f, 1)[0];

  f.clock.advance(149s);
  SweepReport quiet = sweeper.run_once();
  CHECK(quiet.changed() == 0);
  CHECK(job(f, j.id).status == JobStatus::kRunning);
  CHECK(sweeper_lines(f.log) == 0);  // silence when nothing changed

  CHECK(f.store->heartbeat_job(j.id, f.clock.now()).ok());  // a live worker keeps it
  f.clock.advance(149s);
  CHECK(sweeper.run_once().changed() == 0);

  f.clock.advance(2s);
  SweepReport r = sweeper.run_once();
  CHECK(r.orphaned == 1);
  CHECK(r.timed_out == 0);
  CHECK(r.expired == 0);
  JobRow after = job(f, j.id);
  CHECK(after.status == JobStatus::kFailed);
  CHECK(after.error.find("orphaned") != std::string::npos);
  CHECK(f.log.contains("sweeper: failed 1 orphaned, 0 timed out, 0 expired job(s)"));
  CHECK(sweeper_lines(f.log) == 1);
  // Its next attempt is queued: the waker (the server's runners and pool) is told once, not at every pass.
  CHECK(r.retried == 1);
  CHECK(waker.wakes == 1);

  CHECK(sweeper.run_once().changed() == 0);
  CHECK(sweeper_lines(f.log) == 1);
  CHECK(waker.wakes == 1);
}

TEST_CASE("a running job past its agent's timeout plus the buffer is failed as timed out, even with heartbeats") {
  EngineFixture f;
  f.config.agents["analyst"].timeout = 10min;  // Pipeline copied the agents at construction: use a fresh pipeline
  Pipeline pipeline(f.config);
  JobsSpec spec;
  spec.dispatch_timeout = 5min;  // the buffer
  AttemptPolicy attempts(*f.store, pipeline, WriteBack::off(), f.clock, f.log);
  Sweeper sweeper(*f.store, attempts, pipeline, spec, f.clock, f.log);
  JobRow j = running_jobs(f, 1)[0];

  for (int i = 0; i < 15; ++i) {  // 15 min = timeout + buffer, heartbeating every minute
    f.clock.advance(1min);
    CHECK(f.store->heartbeat_job(j.id, f.clock.now()).ok());
    CHECK(sweeper.run_once().changed() == 0);
  }
  f.clock.advance(1s);
  CHECK(f.store->heartbeat_job(j.id, f.clock.now()).ok());
  SweepReport r = sweeper.run_once();
  CHECK(r.timed_out == 1);
  CHECK(r.orphaned == 0);
  JobRow after = job(f, j.id);
  CHECK(after.status == JobStatus::kFailed);
  CHECK(after.error.find("timed out") != std::string::npos);
  CHECK(f.log.contains("sweeper: failed 0 orphaned, 1 timed out, 0 expired job(s)"));
  CHECK(sweeper.run_once().changed() == 0);
}

TEST_CASE("queued jobs older than the queued TTL are failed as expired, and younger ones stay") {
  EngineFixture f;
  JobsSpec spec;
  spec.queued_ttl = 2h;
  AttemptPolicy attempts(*f.store, f.pipeline, WriteBack::off(), f.clock, f.log);
  Sweeper sweeper(*f.store, attempts, f.pipeline, spec, f.clock, f.log);
  TaskRow old_task = f.task_in("analysis", "SHOP-1");
  f.clock.advance(1h);
  TaskRow young_task = f.task_in("analysis", "SHOP-2");
  f.clock.advance(1h);
  CHECK(sweeper.run_once().changed() == 0);  // exactly the TTL is not older than it
  f.clock.advance(1s);
  SweepReport r = sweeper.run_once();
  CHECK(r.expired == 1);
  auto old_jobs = f.store->jobs_for_task(old_task.id).value();
  auto young_jobs = f.store->jobs_for_task(young_task.id).value();
  REQUIRE(old_jobs.size() == 1);
  REQUIRE(young_jobs.size() == 1);
  CHECK(old_jobs[0].status == JobStatus::kFailed);
  CHECK(old_jobs[0].error.find("expired") != std::string::npos);
  CHECK(young_jobs[0].status == JobStatus::kQueued);
  CHECK(f.log.contains("sweeper: failed 0 orphaned, 0 timed out, 1 expired job(s)"));
}

TEST_CASE("each rule fails at most sweep_batch jobs per pass, and later passes take the rest") {
  SUBCASE("orphaned") {
    EngineFixture f;
    JobsSpec spec;
    spec.sweep_batch = 2;
    AttemptPolicy attempts(*f.store, f.pipeline, WriteBack::off(), f.clock, f.log);
    Sweeper sweeper(*f.store, attempts, f.pipeline, spec, f.clock, f.log);
    running_jobs(f, 5);
    f.clock.advance(151s);
    CHECK(sweeper.run_once().orphaned == 2);
    CHECK(sweeper.run_once().orphaned == 2);
    CHECK(sweeper.run_once().orphaned == 1);
    CHECK(sweeper.run_once().changed() == 0);
    CHECK(f.store->jobs_with_status(JobStatus::kFailed, 100).value().size() == 5);
  }
  SUBCASE("timed out") {
    EngineFixture f;
    JobsSpec spec;
    spec.sweep_batch = 2;
    spec.heartbeat_stale = 24h;  // only the timeout rule can fire
    AttemptPolicy attempts(*f.store, f.pipeline, WriteBack::off(), f.clock, f.log);
    Sweeper sweeper(*f.store, attempts, f.pipeline, spec, f.clock, f.log);
    running_jobs(f, 5);
    f.clock.advance(30min + spec.dispatch_timeout + 1s);
    CHECK(sweeper.run_once().timed_out == 2);
    CHECK(sweeper.run_once().timed_out == 2);
    CHECK(sweeper.run_once().timed_out == 1);
    CHECK(sweeper.run_once().changed() == 0);
  }
  SUBCASE("expired") {
    EngineFixture f;
    JobsSpec spec;
    spec.sweep_batch = 2;
    AttemptPolicy attempts(*f.store, f.pipeline, WriteBack::off(), f.clock, f.log);
    Sweeper sweeper(*f.store, attempts, f.pipeline, spec, f.clock, f.log);
    for (int i = 1; i <= 5; ++i) f.task_in("analysis", "SHOP-" + std::to_string(i));
    f.clock.advance(spec.queued_ttl + 1s);
    SweepReport first = sweeper.run_once();
    CHECK(first.expired == 2);
    CHECK(f.log.contains("sweeper: failed 0 orphaned, 0 timed out, 2 expired job(s)"));
    CHECK(sweeper.run_once().expired == 2);
    CHECK(sweeper.run_once().expired == 1);
    CHECK(sweeper.run_once().changed() == 0);
    CHECK(f.store->jobs_with_status(JobStatus::kQueued, 100).value().empty());
  }
}

TEST_CASE("a job its worker already finished is never swept, however old") {
  EngineFixture f;
  JobsSpec spec;
  spec.heartbeat_stale = 24h;
  AttemptPolicy attempts(*f.store, f.pipeline, WriteBack::off(), f.clock, f.log);
  Sweeper sweeper(*f.store, attempts, f.pipeline, spec, f.clock, f.log);
  JobRow j = running_jobs(f, 1)[0];
  CHECK(f.store->finish_job(j.id, JobStatus::kSucceeded, "", f.clock.now()).ok());
  f.clock.advance(36min);
  CHECK(sweeper.run_once().changed() == 0);
  CHECK(job(f, j.id).status == JobStatus::kSucceeded);
}

TEST_CASE(
    "a runner's claim whose agent never started is queued again after dispatch_timeout, not failed, and the claimers "
    "are woken") {
  EngineFixture f;
  JobsSpec spec;
  spec.dispatch_timeout = 5min;
  spec.heartbeat_stale = 1h;  // the runner heartbeats (it is stuck in git, not dead): only the dispatch rule applies
  AttemptPolicy attempts(*f.store, f.pipeline, WriteBack::off(), f.clock, f.log);
  CountingWaker waker;
  Sweeper sweeper(*f.store, attempts, f.pipeline, spec, f.clock, f.log, waker);
  f.task_in("analysis", "SHOP-1");
  f.task_in("analysis", "SHOP-2");
  f.task_in("analysis", "SHOP-3");
  const JobId stuck = f.store->claim_job("runner:a/1", f.clock.now()).value()->id;
  const JobId working = f.store->claim_job("runner:a/2", f.clock.now()).value()->id;
  const JobId local = f.store->claim_job("1234/0", f.clock.now()).value()->id;
  REQUIRE(f.store->launched_claim(working, "runner:a/2", f.clock.now()).ok());

  f.clock.advance(5min);
  REQUIRE(f.store->heartbeat_claim(stuck, "runner:a/1", f.clock.now()).ok());
  CHECK(sweeper.run_once().changed() == 0);  // not past the bound yet
  CHECK(waker.wakes == 0);
  f.clock.advance(1s);
  SweepReport r = sweeper.run_once();
  CHECK(r.requeued == 1);
  CHECK(waker.wakes == 1);  // another runner's long poll, or the pool, may take it now
  CHECK(r.orphaned + r.timed_out + r.expired + r.retried + r.blocked == 0);
  JobRow back = job(f, stuck);
  CHECK(back.status == JobStatus::kQueued);
  CHECK(back.attempt == 1);  // not an attempt: the agent never ran
  CHECK(back.error.empty());
  CHECK(f.log.contains("was claimed by a runner that did not start its agent within 300s: queued again"));
  CHECK(f.log.contains("1 undispatched queued again"));
  // The runner that held it is fenced out; the others run on.
  CHECK(f.store->heartbeat_claim(stuck, "runner:a/1", f.clock.now()).code == Code::kConflict);
  CHECK(job(f, working).status == JobStatus::kRunning);
  CHECK(job(f, local).status == JobStatus::kRunning);
  CHECK(f.store->jobs_for_task(back.task_id).value().size() == 1);
  CHECK(sweeper.run_once().changed() == 0);
}
