// tests/support/pipelines.h: the default pipeline of docs/design.md as a Config built in code, so engine tests do
// not depend on the TOML loader (which has its own tests).
#pragma once

#include "engine/config.h"

namespace orch::testing {

inline Config default_config() {
  Config c;
  c.source_path = "test";
  ProjectSpec shop;
  shop.name = "shop";
  shop.gitea_repo = "acme/shop";
  shop.plane_workspace = "acme";
  shop.plane_project_id = "22b6fc9c-1849-45da-b103-52a3e3a6b4c1";
  c.projects.push_back(shop);
  for (const char* name : {"analyst", "developer", "reviewer"}) {
    AgentSpec a;
    a.name = name;
    a.argv = {std::string("/bin/true")};
    c.agents[name] = a;
  }
  StageSpec analysis;
  analysis.name = "analysis";
  analysis.agent = "analyst";
  analysis.gate = GateSpec{GateSpec::Type::kHumanApproval, {}, {}, {}};
  analysis.human = true;
  analysis.on_reject = "analysis";
  StageSpec development;
  development.name = "development";
  development.agent = "developer";
  development.open_pr = true;
  development.gate = GateSpec{GateSpec::Type::kCiGreen, {}, {}, {}};
  development.grace = std::chrono::minutes(30);
  StageSpec review;
  review.name = "review";
  review.agent = "reviewer";
  review.gate =
      GateSpec{GateSpec::Type::kAny,
               {},
               {},
               {GateSpec{GateSpec::Type::kPrApproved, {}, {}, {}}, GateSpec{GateSpec::Type::kPrMerged, {}, {}, {}}}};
  review.on_changes_requested = "development";
  c.stages = {analysis, development, review};
  c.reconciler.grace_default = std::chrono::minutes(15);
  return c;
}

}  // namespace orch::testing
