// Why a task waits (engine/waiting.h) as /queue.json says it, one scenario per reason on a manual clock: a real
// SQLite store, the real engine, scheduler and gate side; the reason of a red gate is the gate side's own.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "app/queue_document.h"
#include "engine/waiting.h"
#include "tests/support/reconciler_rig.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

struct Rig : ReconcilerRig {
  using ReconcilerRig::ReconcilerRig;

  nlohmann::json document() {
    auto doc = queue_document(*store, clock.now(), QueueDefaults{}, waiting_rules(settings, pipeline));
    REQUIRE_MESSAGE(doc.ok(), doc.status().message);
    return doc.value();
  }
  nlohmann::json waiting(TaskId id) {
    const nlohmann::json doc = document();
    for (const auto& t : doc["tasks"])
      if (t["id"] == id) return t["waiting"];
    FAIL("task " << id << " is not in /queue.json: " << doc.dump());
    return nullptr;
  }
  TaskRow move(TaskId id, const std::string& to) {
    AdvanceRequest r;
    r.cause = Cause::kManual;
    r.to = to;
    auto moved = engine.advance_stage(id, r);
    REQUIRE_MESSAGE(moved.ok(), moved.status().message);
    return moved.value();
  }
  // In development with its agent's job queued, and nothing else queued (the analysis job ran).
  TaskRow in_development(const std::string& key) {
    TaskRow t = task_in("analysis", key);
    finish_all_jobs();
    return move(t.id, "development");
  }
  JobRow claim(const std::string& worker) {
    auto job = store->claim_job(worker, clock.now(), job_limits(settings.config));
    REQUIRE_MESSAGE(job.ok(), job.status().message);
    REQUIRE(job.value().has_value());
    return *job.value();
  }
};

std::string text_of(const nlohmann::json& w) { return w["text"].get<std::string>(); }
bool has(const nlohmann::json& w, const std::string& needle) { return text_of(w).find(needle) != std::string::npos; }

Config limited_config() {
  Config c = default_config();
  c.projects[0].max_running = 1;
  return c;
}

}  // namespace

TEST_CASE("waiting: a queued job names its position and the limit that holds it, a running one its age and heartbeat") {
  Rig f(ReconcilerRigOptions{.config = limited_config()});
  TaskRow a = f.task_in("analysis", "SHOP-1");
  TaskRow b = f.task_in("analysis", "SHOP-2");
  f.finish_all_jobs();
  TaskRow one = f.move(a.id, "development");
  f.clock.advance(1s);
  TaskRow two = f.move(b.id, "development");
  f.clock.advance(1s);
  auto w = f.waiting(two.id);
  CHECK(w["reason"] == "job_queued");
  CHECK(has(w, "agent developer queued (attempt 1), 2 of 2 in project shop's queue, waiting for a free worker"));

  const JobRow running = f.claim("w/1");
  REQUIRE(running.task_id == one.id);
  f.clock.advance(3min + 5s);
  REQUIRE(f.store->heartbeat_job(running.id, f.clock.now()).ok());
  f.clock.advance(12s);
  w = f.waiting(one.id);
  CHECK(w["reason"] == "job_running");
  CHECK(text_of(w) == "agent developer running for 3m 17s (attempt 1), last heartbeat 12s ago");
  CHECK(w["since"] == format_rfc3339(*running.started_at));

  w = f.waiting(two.id);
  CHECK(w["reason"] == "job_queued");
  CHECK(has(w, "1 of 1 in project shop's queue, held by project shop's max_running = 1 (1 running)"));
  // The claim agrees: the limit holds the job.
  CHECK_FALSE(f.store->claim_job("w/2", f.clock.now(), job_limits(f.settings.config)).value().has_value());

  // The running job ends: the held one is the next claim, and says so no more.
  REQUIRE(f.store->finish_job(running.id, JobStatus::kSucceeded, "", f.clock.now()).ok());
  CHECK(has(f.waiting(two.id), "waiting for a free worker"));
  CHECK(f.claim("w/2").task_id == two.id);
  CHECK(f.waiting(two.id)["reason"] == "job_running");
}

TEST_CASE("waiting: a human stage waits for a person in Plane, since it entered the stage") {
  Rig f;
  TaskRow t = f.task_in("analysis", "SHOP-1");
  CHECK(f.waiting(t.id)["reason"] == "job_queued");  // the analyst first
  f.clock.advance(2min);
  f.finish_all_jobs();
  f.clock.advance(3h);  // a human stage has no grace: it waits for the person however long
  auto w = f.waiting(t.id);
  CHECK(w["reason"] == "awaiting_human");
  CHECK(text_of(w) == "waiting for a person to move SHOP-1 to Approved or Rejected in Plane, since " +
                          format_rfc3339(t.entered_stage_at));
  CHECK(w["since"] == format_rfc3339(t.entered_stage_at));
}

TEST_CASE(
    "waiting: inside its grace a task says when the reconciler looks again, and past it the gate side's red gate") {
  Rig f;  // development's grace: 30 min
  TaskRow t = f.in_development("SHOP-1");
  f.clock.advance(10min);
  f.finish_all_jobs();  // the developer is done at +10 min
  const TimePoint finished = f.clock.now();
  f.gitea.set_branch(t.branch, "abc1234");
  f.clock.advance(5min);
  auto w = f.waiting(t.id);
  CHECK(w["reason"] == "within_grace");
  CHECK(has(w, "grace of 30m 00s"));
  CHECK(has(w, "looks again after " + format_rfc3339(finished + 30min)));
  CHECK(w["since"] == format_rfc3339(finished));

  // Past the grace, before a pass: not yet looked at.
  f.clock.advance(26min);
  w = f.waiting(t.id);
  CHECK(w["reason"] == "within_grace");
  CHECK(has(w, "evaluates its gate on its next pass"));

  // The gate side finds CI pending: that, in its own words, is what the task waits for.
  const TimePoint first_look = f.clock.now();
  CHECK(f.gate_side.run_once().red == 1);
  w = f.waiting(t.id);
  CHECK(w["reason"] == "gate_red");
  CHECK(has(w, "gate red: "));
  CHECK(has(w, "abc1234"));
  CHECK(w["since"] == format_rfc3339(first_look));

  // The same reason again: since holds. Another reason (CI failed): since starts again.
  f.clock.advance(1h);
  REQUIRE(f.gate_side.run_once().red == 1);
  CHECK(f.waiting(t.id)["since"] == format_rfc3339(first_look));
  const std::string pending_text = text_of(f.waiting(t.id));
  f.gitea.set_status("abc1234", CiState::kFailure);
  f.clock.advance(1h);
  REQUIRE(f.gate_side.run_once().red == 1);
  w = f.waiting(t.id);
  CHECK(w["reason"] == "gate_red");
  CHECK(w["since"] == format_rfc3339(f.clock.now()));
  CHECK(text_of(w) != pending_text);

  // Green: the gate side advances it, and the old stage's verdict is not carried into the new one.
  f.gitea.set_status("abc1234", CiState::kSuccess);
  f.clock.advance(1h);
  REQUIRE(f.gate_side.run_once().unblocked.size() == 1);
  CHECK(f.reload(t.id).stage == "review");
  CHECK(f.waiting(t.id)["reason"] == "job_queued");
}

TEST_CASE("waiting: a dry run of the gate side records no verdict") {
  Rig f;
  TaskRow t = f.in_development("SHOP-1");
  f.finish_all_jobs();
  f.gitea.set_branch(t.branch, "abc1234");
  f.clock.advance(31min);
  CHECK(f.gate_side.run_once(/*dry_run=*/true).red == 1);
  CHECK(f.store->current_gate_evaluations().value().empty());
  CHECK(f.waiting(t.id)["reason"] == "within_grace");
}

TEST_CASE("waiting: a blocked task names its attempts and its last error, and a done task waits for nothing") {
  Rig f;
  TaskRow t = f.in_development("SHOP-1");
  auto job = f.store->claim_job("w/1", f.clock.now()).value();
  REQUIRE(job.has_value());
  REQUIRE(f.store->finish_job(job->id, JobStatus::kFailed, "exit 1", f.clock.now()).ok());
  NewJob retry{t.id, t.visit, "development", "developer", 2, f.clock.now()};
  REQUIRE(f.store->enqueue_job(retry, f.clock.now()).ok());
  job = f.store->claim_job("w/1", f.clock.now()).value();
  REQUIRE(job.has_value());
  REQUIRE(f.store->finish_job(job->id, JobStatus::kFailed, "exit 1", f.clock.now()).ok());
  f.clock.advance(1min);
  REQUIRE(f.store->block_task(t.id, "agent developer failed 2 times: exit 1", f.clock.now(), {}).ok());
  auto w = f.waiting(t.id);
  CHECK(w["reason"] == "blocked");
  CHECK(has(w, "blocked in development after 2 attempts: agent developer failed 2 times: exit 1"));
  CHECK(has(w, "POST /admin/tasks/" + std::to_string(t.id) + "/retry"));
  CHECK(w["since"] == format_rfc3339(f.clock.now()));

  TaskRow done = f.task_in("done", "SHOP-2");
  CHECK(f.waiting(done.id).is_null());
}

TEST_CASE("waiting: durations read as a person would say them") {
  CHECK(describe_duration(0s) == "0s");
  CHECK(describe_duration(59s) == "59s");
  CHECK(describe_duration(3min + 5s) == "3m 05s");
  CHECK(describe_duration(2h + 10min + 59s) == "2h 10m");
  CHECK(describe_duration(76h) == "3d 4h");
  CHECK(describe_duration(-5s) == "0s");
}

TEST_CASE(
    "waiting: a task held for its budget says so, since its hold, before its queued job, and /queue.json has the "
    "spend") {
  Rig f;
  TaskRow t = f.in_development("SHOP-8");
  const JobRow job = f.claim("w/1");
  REQUIRE(f.store->record_usage(job.id, AgentUsage{10, 20, "large", 1'250'000}).ok());
  REQUIRE(f.store->finish_job(job.id, JobStatus::kFailed, "exit 1", f.clock.now()).ok());
  REQUIRE(
      f.store->enqueue_job(NewJob{t.id, t.visit, "development", "developer", 2, f.clock.now()}, f.clock.now()).ok());
  f.clock.advance(5s);
  const TimePoint held_at = f.clock.now();
  REQUIRE(f.store->hold_task(t.id, "spent 1.25 USD of developer's budget per task (1.00 USD)", held_at, {}).ok());
  f.clock.advance(1min);
  auto w = f.waiting(t.id);
  CHECK(w["reason"] == "budget_exhausted");
  CHECK(w["since"] == format_rfc3339(held_at));
  CHECK(text_of(w) ==
        "held for its budget in development: spent 1.25 USD of developer's budget per task (1.00 USD); "
        "POST /admin/tasks/" +
            std::to_string(t.id) + "/resume lifts the hold");
  const nlohmann::json doc = f.document();
  for (const auto& row : doc["tasks"])
    if (row["id"] == t.id) {
      CHECK(row["spend_usd"] == 1.25);
      CHECK(row["budget_hold"] == "spent 1.25 USD of developer's budget per task (1.00 USD)");
      CHECK(row["budget_raise_usd"] == 0.0);
    }
  bool listed = false;
  for (const auto& j : doc["jobs"])
    if (j["id"] == job.id) {
      listed = true;
      CHECK(j["cost_usd"] == 1.25);
      CHECK(j["tokens_in"] == 10);
      CHECK(j["tokens_out"] == 20);
      CHECK(j["model"] == "large");
    }
  CHECK(listed);
  REQUIRE(doc["spend"]["stages"].size() == 1);
  CHECK(doc["spend"]["stages"][0]["stage"] == "development");
  CHECK(doc["spend"]["stages"][0]["spend_usd"] == 1.25);
  CHECK(doc["spend"]["projects"][0]["project"] == "shop");
  CHECK(doc["spend"]["projects"][0]["budget_usd"].is_null());
  REQUIRE(f.store->resume_task(t.id, 1'000'000, "budget raised", f.clock.now()).ok());
  CHECK(f.waiting(t.id)["reason"] == "job_queued");
}
