// End to end against the real binary (issue 25): a task waits behind its project's max_running, /queue.json (through
// `orch status --json`) says so and names the limit, and it runs when the other finishes, never beside it; a person
// re-runs a stage while its agent runs: that agent finishes, the re-run follows, never beside it.
#include <doctest/doctest.h>

#include "tests/e2e/e2e_world.h"

using namespace orch::testing;
using namespace orch::testing::e2e;
using namespace std::chrono_literals;

namespace {

// The task of a Plane work item in /queue.json, or null.
nlohmann::json task_of(const nlohmann::json& doc, const std::string& item) {
  if (doc.is_object())
    for (const auto& t : doc["tasks"])
      if (t["work_item_id"] == item) return t;
  return nullptr;
}

bool waits(World& w, const std::string& item, const std::string& reason, const std::string& needle = "") {
  const nlohmann::json t = task_of(w.orch->status_json(), item);
  if (!t.is_object() || !t["waiting"].is_object() || t["waiting"]["reason"] != reason) return false;
  return t["waiting"]["text"].get<std::string>().find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("e2e project limit: a second task waits behind max_running = 1, /queue.json names the limit, then it runs") {
  TempDir scratch;
  AgentGate gate(scratch);
  WorldOptions options;
  options.analyst = "gated.sh";
  options.analyst_env = {{"E2E_RELEASE_FIFO", gate.path()}};
  options.project_max_running = 1;
  options.workers = 4;  // workers to spare: only the limit holds the second job
  World w(options);
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());

  const std::string first = w.add_item("First in line");
  const std::string second = w.add_item("Second in line");
  for (const std::string& item : {first, second}) {
    w.plane.set_work_item_state(item, w.plane.state_id(kProjectId, "In Progress"));
    REQUIRE(w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", w.plane.issue_webhook_body(item)).status == 202);
    if (item == first)
      REQUIRE_MESSAGE(eventually([&] { return waits(w, first, "job_running", "agent analyst running"); }, 30s),
                      w.orch->log_tail());
  }
  REQUIRE_MESSAGE(
      eventually([&] { return waits(w, second, "job_queued", "held by project shop's max_running = 1 (1 running)"); },
                 30s),
      w.orch->log_tail());
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE status = 'running'") == 1);

  REQUIRE(gate.release());
  REQUIRE_MESSAGE(
      eventually([&] { return waits(w, first, "awaiting_human", "to Approved or Rejected in Plane"); }, 30s),
      w.orch->log_tail());
  REQUIRE_MESSAGE(eventually([&] { return waits(w, second, "job_running", "agent analyst running"); }, 30s),
                  w.orch->log_tail());
  REQUIRE(gate.release());
  REQUIRE_MESSAGE(eventually([&] { return waits(w, second, "awaiting_human"); }, 30s), w.orch->log_tail());

  // Never side by side: the second analyst started after the first had finished.
  CHECK(w.count("SELECT COUNT(*) FROM jobs a JOIN jobs b ON a.id < b.id WHERE a.status = 'succeeded' AND "
                "b.status = 'succeeded' AND b.started_at >= a.finished_at") == 1);
  CHECK(w.count("SELECT COUNT(*) FROM jobs") == 2);
  CHECK(w.orch->terminate() == std::optional<int>(0));
}

TEST_CASE(
    "e2e rerun: orch task rerun while the developer runs: it finishes, the re-run follows, both in the audit log") {
  TempDir scratch;
  AgentGate gate(scratch);
  WorldOptions options;
  options.developer = "gated.sh";
  options.developer_env = {{"E2E_RELEASE_FIFO", gate.path()}, {"E2E_GATED_THEN", "developer.sh"}};
  World w(options);
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());

  const std::string item = w.add_item("Run me twice");
  w.plane.set_work_item_state(item, w.plane.state_id(kProjectId, "In Progress"));
  REQUIRE(w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", w.plane.issue_webhook_body(item)).status == 202);
  REQUIRE_MESSAGE(eventually([&] { return waits(w, item, "awaiting_human"); }, 60s), w.orch->log_tail());
  w.plane.set_work_item_state(item, w.plane.state_id(kProjectId, "Approved"));
  REQUIRE(w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", w.plane.issue_webhook_body(item)).status == 202);
  REQUIRE_MESSAGE(eventually([&] { return waits(w, item, "job_running", "agent developer running"); }, 60s),
                  w.orch->log_tail());
  const std::string key = task_of(w.orch->status_json(), item)["work_item_key"].get<std::string>();

  std::string out;
  REQUIRE(run_capture({ORCH_BINARY, "task", "rerun", "--config", w.config_path, key}, w.orch->env(), &out) == 0);
  CHECK(out.find(key + " re-runs development") == 0);
  // The re-run waits for the agent still running, and /queue.json says so.
  REQUIRE_MESSAGE(
      eventually([&] { return waits(w, item, "job_queued", "after the task's job of an earlier visit"); }, 30s),
      w.orch->log_tail());
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE stage = 'development' AND status = 'running'") == 1);

  REQUIRE(gate.release());  // the first developer finishes (not killed); its result no longer counts
  REQUIRE_MESSAGE(eventually([&] { return waits(w, item, "job_running", "agent developer running"); }, 60s),
                  w.orch->log_tail());
  REQUIRE(gate.release());  // the re-run's developer
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        return w.count(
                                   "SELECT COUNT(*) FROM jobs WHERE stage = 'development' AND status = "
                                   "'succeeded'") == 1;
                      },
                      60s),
                  w.orch->log_tail());

  CHECK(w.count("SELECT COUNT(*) FROM transitions WHERE from_stage = 'development' AND to_stage = 'development' AND "
                "cause = 'manual'") == 1);
  CHECK(w.count("SELECT COUNT(*) FROM jobs WHERE stage = 'development' AND status = 'failed' AND error LIKE "
                "'superseded%'") == 1);
  // Never side by side: the re-run's developer started after the first one had finished.
  CHECK(w.count("SELECT COUNT(*) FROM jobs a JOIN jobs b ON a.id < b.id WHERE a.stage = 'development' AND "
                "b.stage = 'development' AND b.started_at >= a.finished_at") == 1);
  CHECK(w.orch->log_tail().find("stopped: superseded") == std::string::npos);
  CHECK(w.orch->terminate() == std::optional<int>(0));
}
