#include <doctest/doctest.h>

#include "tests/support/engine_fixture.h"

using namespace orch;
using namespace orch::testing;

TEST_CASE("advance_stage moves along the pipeline, writes a transition row and publishes the event") {
  EngineFixture f;
  auto claim = f.store->create_task_atomic({"shop", "wi-1", "SHOP-1", "t", "", "orch/shop-1"}, f.clock.now());
  TaskId id = claim.value().task.id;
  f.clock.advance(std::chrono::seconds(5));
  AdvanceRequest r;
  r.cause = Cause::kWebhook;
  auto moved = f.engine.advance_stage(id, r);
  REQUIRE(moved.ok());
  CHECK(moved.value().stage == "analysis");
  CHECK(moved.value().entered_stage_at == f.clock.now());
  auto rows = f.store->transitions_for_task(id).value();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].from == "created");
  CHECK(rows[0].to == "analysis");
  CHECK(rows[0].cause == Cause::kWebhook);
  REQUIRE(f.events.size() == 1);
  CHECK(f.events[0].to == "analysis");
  CHECK_FALSE(f.events[0].replay);
  CHECK(f.log.contains("transition: SHOP-1 created -> analysis (webhook)"));
}

TEST_CASE("advance_stage refuses undeclared edges, stale expectations, wrong agents and done tasks") {
  EngineFixture f;
  TaskRow t = f.task_in("analysis");
  AdvanceRequest skip;
  skip.to = "review";
  CHECK(f.engine.advance_stage(t.id, skip).status().code == Code::kInvalid);
  AdvanceRequest stale;
  stale.expected_from = "development";
  CHECK(f.engine.advance_stage(t.id, stale).status().code == Code::kConflict);
  AdvanceRequest wrong_agent;
  wrong_agent.finished_agent = "developer";
  CHECK(f.engine.advance_stage(t.id, wrong_agent).status().code == Code::kConflict);
  CHECK(f.engine.advance_stage(999, {}).status().code == Code::kNotFound);
  CHECK(f.reload(t.id).stage == "analysis");
  CHECK(f.events.empty());
  TaskRow done = f.task_in("done", "SHOP-2");
  CHECK(f.engine.advance_stage(done.id, {}).status().code == Code::kConflict);
}

TEST_CASE("rollback takes the declared edge and keeps the reason for the agent") {
  EngineFixture f;
  TaskRow t = f.task_in("analysis");
  auto back = f.engine.rollback(t.id, Rollback::kReject, Cause::kWebhook, "needs a plan for the migration");
  REQUIRE(back.ok());
  CHECK(back.value().stage == "analysis");
  CHECK(back.value().visit == t.visit + 1);
  CHECK(back.value().rejection_reason == "needs a plan for the migration");
  TaskRow r = f.task_in("review", "SHOP-2");
  auto changes = f.engine.rollback(r.id, Rollback::kChangesRequested, Cause::kWebhook, "rename it");
  REQUIRE(changes.ok());
  CHECK(changes.value().stage == "development");
  TaskRow d = f.task_in("development", "SHOP-3");
  CHECK(f.engine.rollback(d.id, Rollback::kReject, Cause::kWebhook, "x").status().code == Code::kInvalid);
}

TEST_CASE("advance_if_gate_passed advances on green, stays on red, and reports unreadable facts") {
  EngineFixture f;
  TaskRow t = f.task_in("development");
  auto red = f.engine.advance_if_gate_passed(t.id, Cause::kWebhook);
  REQUIRE(red.ok());
  CHECK_FALSE(red.value().advanced);
  CHECK(f.reload(t.id).stage == "development");
  f.gitea.set_branch(t.branch, "abc");
  f.gitea.fail_with(unavailable("gitea is down"));
  CHECK(f.engine.advance_if_gate_passed(t.id, Cause::kWebhook).status().code == Code::kUnavailable);
  f.gitea.fail_with(std::nullopt);
  f.gitea.set_status("abc", CiState::kSuccess);
  auto green = f.engine.advance_if_gate_passed(t.id, Cause::kAgent, std::string("developer"));
  REQUIRE(green.ok());
  CHECK(green.value().advanced);
  CHECK(green.value().task.stage == "review");
  auto rows = f.store->transitions_for_task(t.id).value();
  CHECK(rows.back().cause == Cause::kAgent);
  CHECK(rows.back().detail.find("ci success") != std::string::npos);
}

TEST_CASE("entering a stage enqueues its agent once — the start-up replay enqueues nothing new") {
  EngineFixture f;
  TaskRow t = f.task_in("development");
  auto jobs = f.store->jobs_for_task(t.id).value();
  REQUIRE(jobs.size() == 2);  // analyst for analysis, developer for development
  CHECK(jobs[1].agent == "developer");
  CHECK(jobs[1].visit == t.visit);
  auto replayed = f.engine.replay_non_terminal();
  REQUIRE(replayed.ok());
  CHECK(replayed.value() == 1);
  CHECK(f.store->jobs_for_task(t.id).value().size() == 2);
  CHECK(f.engine.replay_non_terminal().value() == 1);
  CHECK(f.store->jobs_for_task(t.id).value().size() == 2);
  CHECK(f.store->transitions_for_task(t.id).value().size() == 2);  // replays write no rows
  REQUIRE(f.events.size() == 2);
  CHECK(f.events[0].replay);
}

TEST_CASE("the start-up replay enqueues the missing job of a task whose job was never written") {
  EngineFixture f;
  // A task that reached development in a process that died before the scheduler ran: no developer job.
  auto claim = f.store->create_task_atomic({"shop", "wi-9", "SHOP-9", "t", "", "orch/shop-9"}, f.clock.now());
  TransitionRequest w{claim.value().task.id, "created", "development", Cause::kManual, "", std::nullopt, f.clock.now()};
  REQUIRE(f.store->apply_transition(w).ok());
  CHECK(f.store->jobs_for_task(claim.value().task.id).value().empty());
  REQUIRE(f.engine.replay_non_terminal().ok());
  auto jobs = f.store->jobs_for_task(claim.value().task.id).value();
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0].agent == "developer");
}

TEST_CASE("a rollback into the same stage is a new visit and gets a new job") {
  EngineFixture f;
  TaskRow t = f.task_in("analysis");
  CHECK(f.store->jobs_for_task(t.id).value().size() == 1);
  REQUIRE(f.engine.rollback(t.id, Rollback::kReject, Cause::kWebhook, "no").ok());
  auto jobs = f.store->jobs_for_task(t.id).value();
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[1].visit == jobs[0].visit + 1);
}

TEST_CASE("a failing subscriber is logged and the others still run") {
  EngineFixture f;
  f.bus.subscribe("broken", [](const TransitionFired&) -> Status { throw std::runtime_error("boom"); });
  int after = 0;
  f.bus.subscribe("after", [&](const TransitionFired&) {
    ++after;
    return Status{};
  });
  TaskRow t = f.task_in("analysis");
  AdvanceRequest r;
  r.to = "analysis";
  REQUIRE(f.engine.advance_stage(t.id, r).ok());
  CHECK(after >= 1);
  CHECK(f.log.contains("subscriber broken failed"));
}
