// Issue 22 on the PostgreSQL replicas of issue 11, end to end against the real binaries: three `orch serve` replicas
// on one database, and two `orch runner` processes each polling a different replica (not the load balancer) run
// every agent of the example pipeline while the servers run none; "a runner may talk to any replica". The pipeline is
// the convergence scenario of pipeline_run.h (webhooks through the load balancer, no loss), which checks that every
// item reaches done with nothing doubled; this test adds where each agent ran.
#include <doctest/doctest.h>

#include <set>

#include "tests/e2e/pipeline_run.h"
#include "tests/e2e/runners_rig.h"

using namespace orch::testing;
using namespace orch::testing::e2e;
using namespace std::chrono_literals;

namespace {

nlohmann::json queue_json(const World& w, std::size_t replica) {
  httplib::Client c(w.replicas[replica]->base_url());
  c.set_read_timeout(10s);
  auto r = c.Get("/queue.json", {{"Authorization", "Bearer " + kAdminToken}});
  if (!r || r->status != 200) return nullptr;
  return nlohmann::json::parse(r->body, nullptr, false);
}

}  // namespace

TEST_CASE(
    "e2e pg runners: two runners on two different replicas run the example pipeline to done / no agent runs "
    "on a server") {
  constexpr int kItems = 3;
  TempDir scratch;
  // The analyst waits on this fifo until both runners hold an analysis job at once: then each of them has run one,
  // whichever replica enqueued what (a runner's long poll is woken only by its own replica's enqueues).
  AgentGate gate(scratch);

  std::unique_ptr<Runners> runners;
  PipelineOptions run;
  run.world.replicas = 3;
  run.world.postgres = true;
  run.world.workers = 2;  // three pools of two on two cores: they run only the open_pr and gate steps
  run.world.runs_on = "agents";
  run.world.analyst = "gated.sh";
  run.world.analyst_env = {{"E2E_RELEASE_FIFO", gate.path()}};
  run.on_started = [&](World& w) {
    runners = std::make_unique<Runners>(Runners{w, {}, {}});
    runners->add("a", "agents", w.replicas[1]->base_url());
    runners->add("b", "agents", w.replicas[2]->base_url());
  };

  bool open = false, both_held = false;
  const auto gate_deadline = std::chrono::steady_clock::now() + 90s;
  std::set<std::string> on_server;  // fresh agent jobs seen running on something other than a runner's claim
  run.on_round = [&](World& w, int) {
    // A running job in its first step (`step` empty) is an agent's run: only a runner's claim may hold it, or a
    // replica handling that runner's finish report (`<replica>/<pid>/remote`, until it records the push step).
    for (const auto& j : w.rows("SELECT id, worker FROM jobs WHERE status = 'running' AND step = '' AND NOT "
                                "(worker LIKE 'runner:%' OR worker LIKE '%/remote')"))
      on_server.insert("job " + j[0] + " on " + j[1]);
    if (!open) {
      both_held = w.count(
                      "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND stage = 'analysis' AND "
                      "worker LIKE 'runner:a/%'") == 1 &&
                  w.count(
                      "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND stage = 'analysis' AND "
                      "worker LIKE 'runner:b/%'") == 1;
      // Past the deadline the gate opens anyway, so the run ends and the check below says what went wrong.
      open = both_held || std::chrono::steady_clock::now() > gate_deadline;
    }
    if (open) gate.release_waiting();
  };

  run.at_end = [&](World& w, const RunResult& r) {
    CHECK_MESSAGE(both_held, "the two runners never held an analysis job at once" << runners->logs());
    for (const std::string& job : on_server) FAIL_CHECK("an agent's job ran on a server: " << job);

    // Every succeeded job is a run one runner reported once, and no runner reported a success the store lacks.
    std::set<long long> succeeded;
    for (const auto& j : w.rows("SELECT id FROM jobs WHERE status = 'succeeded'")) succeeded.insert(std::stoll(j[0]));
    CHECK(succeeded.size() == 3u * static_cast<std::size_t>(r.items));
    std::map<long long, int> reports;
    for (const auto& [name, p] : runners->procs) {
      const auto mine = reported_successes(*p);
      CHECK_MESSAGE(!mine.empty(), "runner " << name << " ran no job");
      for (const auto& [id, n] : mine) reports[id] += n;
    }
    for (long long id : succeeded) CHECK_MESSAGE(reports[id] == 1, "job " << id << " reported " << reports[id]);
    for (const auto& [id, n] : reports)
      CHECK_MESSAGE(succeeded.count(id) == 1, "a runner reported a success of job " << id << ", not succeeded");

    // No replica made a worktree, and every replica lists both runners online, each idle.
    for (std::size_t i = 0; i < w.replica_count(); ++i) {
      CAPTURE(w.replica_ids[i]);
      check_no_server_worktree(w.data_dirs[i]);
      const nlohmann::json doc = queue_json(w, i);
      REQUIRE(doc.is_object());
      REQUIRE(doc["runners"].is_array());
      std::set<std::string> names;
      for (const auto& runner : doc["runners"]) {
        names.insert(runner["name"].get<std::string>());
        CHECK(runner["state"] == "online");
        CHECK(runner["labels"] == nlohmann::json::array({"agents"}));
        CHECK(runner["job_id"].is_null());
      }
      CHECK(names == std::set<std::string>{"a", "b"});
    }
    for (auto& [name, p] : runners->procs) CHECK(p->terminate() == std::optional<int>(0));
  };

  RunResult r = run_pipeline(kItems, Loss{}, std::move(run));
  CHECK(r.done == kItems);
}
