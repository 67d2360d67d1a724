// tests/support/reconciler_rig.h: the engine fixture plus the reconciler as app/wiring.cpp wires it: the handlers,
// the gate side, the tracker side, the sweeper with the real AttemptPolicy, and one ReconcilePass over them, with the
// grace read from real Settings. The reconciler's tests (gate side, tracker side, the pass) all use this one rig and
// add their own scenario helpers.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "app/settings.h"
#include "engine/attempt_policy.h"
#include "engine/leadership.h"
#include "engine/setting_keys.h"
#include "reconciler/reconciler.h"
#include "tests/support/engine_fixture.h"
#include "webhooks/handlers/handlers.h"

namespace orch::testing {

struct ReconcilerRigOptions {
  Config config = default_config();
  std::map<std::string, std::string> env{};  // ORCH_* variables for the Settings (grace overrides)
  GateSideOptions gate{};
  TrackerSideOptions tracker{};
  ReconcileDefaults defaults{};
  bool with_sweeper = false;               // the pass runs the sweeper too
  const Leadership* leadership = nullptr;  // default: the rig's SoleReplica, which always leads
  // What the tracker side reads through, made from the fixture's TableTracker; default: the table itself.
  std::function<std::unique_ptr<Tracker>(Tracker& table)> wrap_tracker{};
};

inline Settings settings_from_env(const Config& config, const std::map<std::string, std::string>& env) {
  auto s = make_settings(config, [env](const std::string& k) -> std::optional<std::string> {
    auto it = env.find(k);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
  if (!s.ok()) throw std::runtime_error(s.status().to_string());
  return std::move(s).value();
}

struct ReconcilerRig : EngineFixture {
  explicit ReconcilerRig(ReconcilerRigOptions o = {})
      : EngineFixture(o.config),
        settings(settings_from_env(config, o.env)),
        wrapped(o.wrap_tracker ? o.wrap_tracker(plane) : nullptr),
        handlers(*store, engine, plane, gitea, config, clock, log),
        gate_side(*store, engine, clock, log, grace(), o.gate),
        tracker_side(config.projects, pipeline, wrapped ? *wrapped : static_cast<Tracker&>(plane), handlers, *store,
                     clock, log, grace(), o.tracker),
        attempts(*store, pipeline, WriteBack::off(), clock, log),
        sweeper(*store, attempts, pipeline, config.jobs, clock, log),
        pass(ReconcileParts{.store = *store,
                            .gate = gate_side,
                            .tracker = &tracker_side,
                            .sweeper = o.with_sweeper ? &sweeper : nullptr,
                            .leadership = o.leadership ? *o.leadership : sole},
             clock, log, o.defaults) {}

  GraceFn grace() {
    return [this](const std::string& stage) { return settings.grace_for(stage); };
  }
  const ProjectSpec& shop() const { return config.projects[0]; }

  // What the worker pool would do: every claimable job runs and succeeds (its gate is checked elsewhere).
  int finish_all_jobs() {
    int n = 0;
    while (true) {
      auto job = store->claim_job("test/1", clock.now());
      if (!job.ok()) throw std::runtime_error(job.status().to_string());
      if (!job.value()) return n;
      auto s = store->finish_job(job.value()->id, JobStatus::kSucceeded, "", clock.now());
      if (!s.ok()) throw std::runtime_error(s.to_string());
      ++n;
    }
  }

  std::size_t transitions(TaskId id) { return store->transitions_for_task(id).value().size(); }
  std::size_t notifications() { return store->all_notifications().value().size(); }
  std::size_t info_lines() { return log.lines().size(); }
  int count_lines(const std::string& needle) {
    int n = 0;
    for (const auto& l : log.lines())
      if (l.find(needle) != std::string::npos) ++n;
    return n;
  }
  void set(const char* key, const std::string& value) {
    if (Status s = store->set_setting(key, value); !s.ok()) throw std::runtime_error(s.to_string());
  }
  bool has_snapshot() { return store->get_setting(kSettingReconcileSnapshot).value().has_value(); }
  nlohmann::json snapshot() {
    auto v = store->get_setting(kSettingReconcileSnapshot).value();
    return v ? nlohmann::json::parse(*v) : nlohmann::json();
  }

  Settings settings;
  std::unique_ptr<Tracker> wrapped;  // ReconcilerRigOptions::wrap_tracker's, if any
  Handlers handlers;
  GateSide gate_side;
  TrackerSide tracker_side;
  AttemptPolicy attempts;
  Sweeper sweeper;
  SoleReplica sole{"test"};
  ReconcilePass pass;
};

}  // namespace orch::testing
