#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/engine_fixture.h"

using namespace orch;
using namespace orch::testing;

namespace {
GateSpec leaf(GateSpec::Type t) { return GateSpec{t, {}, {}, {}}; }
}  // namespace

TEST_CASE("human_approval is green only when the tracker says Approved") {
  EngineFixture f;
  TaskRow t = f.task_in("analysis");
  f.plane.set_item(WorkItem{t.work_item_id, "p", 1, "x", "", "In Progress", std::nullopt});
  CHECK_FALSE(f.gates.evaluate(leaf(GateSpec::Type::kHumanApproval), t).value().green);
  f.plane.set_state(t.work_item_id, "Approved");
  CHECK(f.gates.evaluate(leaf(GateSpec::Type::kHumanApproval), t).value().green);
  f.plane.set_state(t.work_item_id, "Rejected");
  CHECK_FALSE(f.gates.evaluate(leaf(GateSpec::Type::kHumanApproval), t).value().green);
}

TEST_CASE("ci_green reads the branch head and its combined status") {
  EngineFixture f;
  TaskRow t = f.task_in("development");
  auto gate = leaf(GateSpec::Type::kCiGreen);
  auto r = f.gates.evaluate(gate, t);
  REQUIRE(r.ok());
  CHECK_FALSE(r.value().green);
  CHECK(r.value().why.find("not on the remote") != std::string::npos);
  f.gitea.set_branch(t.branch, "abc1234def");
  CHECK_FALSE(f.gates.evaluate(gate, t).value().green);  // pending
  f.gitea.set_status("abc1234def", CiState::kFailure);
  CHECK_FALSE(f.gates.evaluate(gate, t).value().green);
  f.gitea.set_status("abc1234def", CiState::kSuccess);
  CHECK(f.gates.evaluate(gate, t).value().green);
}

TEST_CASE("pr_open, pr_approved and pr_merged read the branch's pull request") {
  EngineFixture f;
  TaskRow t = f.task_in("review");
  CHECK_FALSE(f.gates.evaluate(leaf(GateSpec::Type::kPrOpen), t).value().green);
  f.gitea.set_pr(t.branch, PullRequestInfo{12, true, false, t.branch, "abc", "main", ""});
  CHECK(f.gates.evaluate(leaf(GateSpec::Type::kPrOpen), t).value().green);
  CHECK_FALSE(f.gates.evaluate(leaf(GateSpec::Type::kPrApproved), t).value().green);
  f.gitea.set_approved(12, true);
  CHECK(f.gates.evaluate(leaf(GateSpec::Type::kPrApproved), t).value().green);
  CHECK_FALSE(f.gates.evaluate(leaf(GateSpec::Type::kPrMerged), t).value().green);
  f.gitea.set_pr(t.branch, PullRequestInfo{12, false, true, t.branch, "abc", "main", ""});
  CHECK(f.gates.evaluate(leaf(GateSpec::Type::kPrMerged), t).value().green);
  CHECK_FALSE(f.gates.evaluate(leaf(GateSpec::Type::kPrApproved), t).value().green);  // merged is not open
}

TEST_CASE("artifacts checks paths inside the worktree and refuses paths that leave it") {
  EngineFixture f;
  TaskRow t = f.task_in("analysis");
  GateSpec gate{GateSpec::Type::kArtifacts, {"ANALYSIS.md", "docs/plan.md"}, {}, {}};
  CHECK_FALSE(f.gates.evaluate(gate, t).value().green);
  auto wt = f.layout.worktree(t);
  std::filesystem::create_directories(wt / "docs");
  std::ofstream(wt / "ANALYSIS.md") << "x";
  CHECK_FALSE(f.gates.evaluate(gate, t).value().green);
  std::ofstream(wt / "docs" / "plan.md") << "x";
  CHECK(f.gates.evaluate(gate, t).value().green);
  GateSpec escape{GateSpec::Type::kArtifacts, {"../../../etc/passwd"}, {}, {}};
  CHECK(f.gates.evaluate(escape, t).status().code == Code::kInvalid);
}

TEST_CASE("command is green when its argv exits 0") {
  EngineFixture f;
  TaskRow t = f.task_in("development");
  GateSpec gate{GateSpec::Type::kCommand, {}, {"make", "check"}, {}};
  f.runner.set_exit(2);
  CHECK_FALSE(f.gates.evaluate(gate, t).value().green);
  f.runner.set_exit(0);
  CHECK(f.gates.evaluate(gate, t).value().green);
  REQUIRE(f.runner.runs().size() == 2);
  CHECK(f.runner.runs()[0] == std::vector<std::string>{"make", "check"});
}

TEST_CASE("all and any combine their children — an unreadable fact is an error, not red") {
  EngineFixture f;
  TaskRow t = f.task_in("review");
  GateSpec all{GateSpec::Type::kAll, {}, {}, {leaf(GateSpec::Type::kPrOpen), leaf(GateSpec::Type::kPrApproved)}};
  GateSpec any{GateSpec::Type::kAny, {}, {}, {leaf(GateSpec::Type::kPrApproved), leaf(GateSpec::Type::kPrMerged)}};
  f.gitea.set_pr(t.branch, PullRequestInfo{3, true, false, t.branch, "abc", "main", ""});
  CHECK_FALSE(f.gates.evaluate(all, t).value().green);
  CHECK_FALSE(f.gates.evaluate(any, t).value().green);
  f.gitea.set_approved(3, true);
  CHECK(f.gates.evaluate(all, t).value().green);
  CHECK(f.gates.evaluate(any, t).value().green);
  f.gitea.fail_with(unavailable("gitea down"));
  CHECK(f.gates.evaluate(all, t).status().code == Code::kUnavailable);
  CHECK(f.gates.evaluate(any, t).status().code == Code::kUnavailable);
}

TEST_CASE("evaluating a gate writes nothing") {
  EngineFixture f;
  TaskRow t = f.task_in("development");
  f.gitea.set_branch(t.branch, "abc");
  f.gitea.set_status("abc", CiState::kSuccess);
  for (int i = 0; i < 3; ++i) CHECK(f.engine.evaluate_gate(t).value().green);
  TaskRow after = f.reload(t.id);
  CHECK(after.stage == "development");
  CHECK(after.updated_at == t.updated_at);
  CHECK(f.store->transitions_for_task(t.id).value().size() == 2);  // created->analysis->development only
  CHECK(f.events.empty());
}
