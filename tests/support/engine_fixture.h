// tests/support/engine_fixture.h: the real engine (SqliteStore on a fresh file, Pipeline, GateEvaluator,
// EventBus, StageEngine, JobScheduler) over table-backed seams and a manual clock. Used by engine, webhook
// and reconciler tests alike so each test builds the same thing in one line.
#pragma once

#include <memory>
#include <vector>

#include "engine/event_bus.h"
#include "engine/gates.h"
#include "engine/job_scheduler.h"
#include "engine/pipeline.h"
#include "engine/store/sqlite_store.h"
#include "engine/stage_engine.h"
#include "tests/support/manual_clock.h"
#include "tests/support/pipelines.h"
#include "tests/support/table_facts.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_log.h"

namespace orch::testing {

struct EngineFixture {
  explicit EngineFixture(Config c = default_config())
      : config(std::move(c)),
        store(open_store(dir)),
        pipeline(config),
        layout(dir.path() / "data"),
        gates(config, gitea, plane, runner, layout),
        bus(log),
        engine(*store, pipeline, gates, bus, clock, log),
        scheduler(*store, pipeline, clock, log) {
    bus.subscribe("test recorder", [this](const TransitionFired& e) {
      events.push_back(e);
      return Status{};
    });
    subscribe_audit_log(bus, log);
    scheduler.subscribe_to(bus);
  }

  static std::unique_ptr<SqliteStore> open_store(const TempDir& dir) {
    auto s = SqliteStore::open(dir.file("orch.db"));
    if (!s.ok()) throw std::runtime_error(s.status().to_string());
    return std::move(s).value();
  }

  // A task claimed and moved to `stage` through the real engine path.
  TaskRow task_in(const std::string& stage, const std::string& key = "SHOP-1") {
    NewTask t{"shop", "wi-" + key, key, "Title of " + key, "", "orch/" + sanitize_component(key)};
    auto claim = store->create_task_atomic(t, clock.now());
    if (!claim.ok()) throw std::runtime_error(claim.status().to_string());
    TaskRow row = claim.value().task;
    std::string current = row.stage;
    while (current != stage) {
      auto next = pipeline.next(current);
      if (!next) throw std::runtime_error("no path to " + stage);
      AdvanceRequest r;
      r.cause = Cause::kManual;
      r.to = *next;
      auto moved = engine.advance_stage(row.id, r);
      if (!moved.ok()) throw std::runtime_error(moved.status().to_string());
      row = moved.value();
      current = row.stage;
    }
    events.clear();
    return row;
  }

  TaskRow reload(TaskId id) { return *store->find_task(id).value(); }

  TempDir dir;
  ManualClock clock;
  TestLog log;
  Config config;
  std::unique_ptr<SqliteStore> store;
  Pipeline pipeline;
  DataLayout layout;
  TableCodeHost gitea;
  TableTracker plane;
  TableRunner runner;
  GateEvaluator gates;
  EventBus bus;
  StageEngine engine;
  JobScheduler scheduler;
  std::vector<TransitionFired> events;
};

}  // namespace orch::testing
