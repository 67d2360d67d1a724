// Issue 11 end to end: three `orch serve` replicas on one PostgreSQL database behind a load balancer
// (tests/e2e/load_balancer.h), each with its own replica id, data directory and port. The start race of
// lifecycle_test.cpp spread over the replicas, and the convergence scenario of pipeline_run.h with the leader
// SIGKILLed mid-run: leadership moves within ORCH_LEADER_TAKEOVER_S, every acknowledged delivery is in the inbox once
// and handled, every item is done, nothing is doubled, and no job ever ran on two replicas (the job logs each
// replica keeps in its own data directory say who ran what).
#include <doctest/doctest.h>

#include <regex>
#include <set>

#include "tests/e2e/pipeline_run.h"

using namespace orch::testing;
using namespace orch::testing::e2e;
using namespace std::chrono_literals;

namespace {

WorldOptions three_replicas() {
  WorldOptions o;
  o.replicas = 3;
  o.postgres = true;
  return o;
}

// Job id -> the replicas (indexes) whose data directory holds a log of it, and how many runs each log records.
struct JobLogs {
  std::map<long long, std::vector<std::size_t>> where;
  std::map<std::pair<long long, std::size_t>, int> runs;
};

JobLogs job_logs(const World& w) {
  static const std::regex name(R"(job-([0-9]+)\.log)");
  JobLogs logs;
  for (std::size_t i = 0; i < w.replica_count(); ++i) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(w.data_dirs[i] + "/logs", ec)) {
      std::smatch m;
      const std::string file = e.path().filename().string();
      if (!std::regex_match(file, m, name)) continue;
      const long long id = std::stoll(m[1]);
      logs.where[id].push_back(i);
      std::ifstream in(e.path());
      std::string line;
      int headers = 0;
      const std::string header = "[orch] job " + std::to_string(id) + ": ";
      while (std::getline(in, line)) headers += line.rfind(header, 0) == 0 ? 1 : 0;
      logs.runs[{id, i}] = headers;
    }
  }
  return logs;
}

// Binary-level "two replicas' worker pools never run the same job": every job that started was claimed by a worker
// `<replica>/<pid>/<n>` of a replica of this world, its log is in that replica's data directory and nowhere else, and
// that log records one run.
void check_each_job_ran_on_one_replica(const World& w) {
  static const std::regex worker_re(R"((r[0-9]+)/[0-9]+/[0-9]+)");
  const JobLogs logs = job_logs(w);
  for (const auto& [id, where] : logs.where)
    CHECK_MESSAGE(where.size() == 1, "job " << id << " has a log in " << where.size() << " replicas' data dirs");
  for (const auto& [key, runs] : logs.runs)
    CHECK_MESSAGE(runs == 1, "job " << key.first << " ran " << runs << " times on " << w.replica_ids[key.second]);
  for (const auto& j : w.rows("SELECT id, worker, status FROM jobs WHERE started_at IS NOT NULL")) {
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_match(j[1], m, worker_re), "job " << j[0] << " has worker '" << j[1] << "'");
    const std::string replica = m[1];
    auto it = std::find(w.replica_ids.begin(), w.replica_ids.end(), replica);
    REQUIRE_MESSAGE(it != w.replica_ids.end(), "job " << j[0] << " claimed by unknown replica " << replica);
    const auto index = static_cast<std::size_t>(it - w.replica_ids.begin());
    auto found = logs.where.find(std::stoll(j[0]));
    if (found == logs.where.end()) {
      // A job claimed by a replica that was killed before its worker opened the log: never by a live one.
      CHECK_MESSAGE((j[2] != "succeeded" && !w.alive(index)),
                    "job " << j[0] << " (" << j[2] << ") on " << replica << " has no log");
      continue;
    }
    CHECK_MESSAGE(found->second == std::vector<std::size_t>{index},
                  "job " << j[0] << " claimed by " << replica << " but logged elsewhere");
  }
}

}  // namespace

TEST_CASE(
    "e2e pg replicas: 50 concurrent In Progress deliveries spread over three replicas make one task, one "
    "branch, one first job") {
  World w(three_replicas());
  REQUIRE_MESSAGE(w.start(), w.log_tails());
  constexpr int kCopies = 50;
  // One attempt each: the burst of 50 connects fits the load balancer's accept queue (tests/e2e/load_balancer.h
  // raises cpp-httplib's backlog of 5; before that, the connects it dropped came back as resets).
  const std::vector<DeliveryResult> results = deliver_start_race(w, kCopies);
  int accepted = 0;
  for (const auto& r : results) {
    accepted += r.status == 202 ? 1 : 0;
    CHECK_MESSAGE(r.status == 202, "a copy got " << r.status << " " << r.body << r.error);
  }
  CHECK(accepted == kCopies);
  // Round-robin: every replica stored a share of them.
  std::map<std::size_t, int> answered_by;
  for (const auto& f : w.lb().forwarded()) {
    REQUIRE(!f.tried.empty());
    CHECK_MESSAGE(f.tried.size() == 1, "delivery " << f.delivery_id << " needed a retry with every replica up");
    ++answered_by[f.tried.back()];
  }
  for (std::size_t i = 0; i < w.replica_count(); ++i)
    CHECK_MESSAGE(answered_by[i] >= kCopies / 3, w.replica_ids[i] << " stored " << answered_by[i]);

  std::optional<std::size_t> leader;
  REQUIRE_MESSAGE(eventually([&] { return (leader = w.leader()).has_value(); }, 30s), w.log_tails());
  auto status = check_one_start(w, kCopies);
  check_each_job_ran_on_one_replica(w);  // the one analyst job ran on one replica
  // The CLI runs no elector: it asks the database, and names the replica that leads (never itself).
  CHECK(status["reconciler"]["leader"] == w.replica_ids[*leader]);
  CHECK(status["reconciler"]["leading"] == false);
  for (std::size_t i = 0; i < w.replica_count(); ++i)
    CHECK_MESSAGE(w.replicas[i]->terminate() == std::optional<int>(0), w.log_tails());
}

TEST_CASE(
    "e2e pg replicas: the leader SIGKILLed mid-run — every acknowledged delivery handled once, leadership "
    "moves within the bound, every item done, nothing doubled") {
  const int n = item_count();
  static constexpr int kTakeoverS = 3;
  PipelineOptions run;
  run.world = three_replicas();
  run.world.leader_takeover_s = kTakeoverS;
  run.world.workers = 2;  // three pools of two on two cores
  // The killed replica's running jobs keep their `running` rows: the sweeper fails them once their heartbeat is
  // this old (the heartbeat comes every second at this setting).
  run.world.heartbeat_stale = "6s";

  // Written by the killer thread, read by the test once the world has joined it.
  std::optional<std::size_t> killed, successor;
  std::atomic<bool> kill_started{false};
  bool landed_in_flight = false, moved = false;
  std::chrono::milliseconds took{-1};

  run.on_round = [&](World& w, int done) {
    if (kill_started || done < std::max(1, n / 3)) return;
    const std::optional<std::size_t> leader = w.leader();
    if (!leader) return;  // (not expected with every replica up) look again next round
    kill_started = true;
    killed = leader;
    w.helper([&w, &successor, &landed_in_flight, &moved, &took, victim = *leader] {
      // Kill it while it handles a delivery the load balancer forwarded, so that the balancer has one to re-send.
      landed_in_flight = w.lb().wait_in_flight(victim, 5s);
      const auto t0 = std::chrono::steady_clock::now();
      w.kill_replica(victim);
      moved = eventually(
          [&] {
            successor = w.leader();
            return successor.has_value();
          },
          std::chrono::seconds(kTakeoverS) + 20s);
      took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    });
  };

  run.at_end = [&](World& w, const RunResult&) {
    w.join_helpers();
    REQUIRE_MESSAGE(killed.has_value(), "the leader was never killed");
    // ---- leadership: moved to a live replica within the bound, and every live replica agrees ----
    REQUIRE_MESSAGE(moved, "no replica took over from " << w.replica_ids[*killed] << "\n" << w.log_tails());
    REQUIRE(successor.has_value());
    CHECK(*successor != *killed);
    CHECK_MESSAGE(took <= std::chrono::seconds(kTakeoverS),
                  "takeover took " << took.count() << " ms, bound " << kTakeoverS << " s");
    MESSAGE("leader " << w.replica_ids[*killed] << " killed " << std::string(landed_in_flight ? "while" : "before")
                      << " it handled a delivery; " << w.replica_ids[*successor] << " led " << took.count()
                      << " ms later (bound " << kTakeoverS << " s)");
    const std::string leader_id = w.replica_ids[*successor];
    CHECK_MESSAGE(eventually(
                      [&] {
                        for (std::size_t i : w.live_replicas()) {
                          auto e = w.metrics(i);
                          if (!e) return false;
                          const double leading =
                              sum_samples(*e, "orch_leader", {"replica=\"" + w.replica_ids[i] + "\""});
                          if (leading != (i == *successor ? 1 : 0)) return false;
                          if (sum_samples(*e, "orch_leader_info") != 1 ||
                              sum_samples(*e, "orch_leader_info", {"leader=\"" + leader_id + "\""}) != 1)
                            return false;
                        }
                        return true;
                      },
                      10s),
                  "the live replicas' /metrics do not agree that " << leader_id << " leads");
    for (std::size_t i : w.live_replicas()) {
      httplib::Client c(w.replicas[i]->base_url());
      auto r = c.Get("/queue.json", {{"Authorization", "Bearer " + kAdminToken}});
      REQUIRE(r);
      REQUIRE(r->status == 200);
      auto doc = nlohmann::json::parse(r->body, nullptr, false);
      REQUIRE(doc.is_object());
      CHECK(doc["reconciler"]["leader"] == leader_id);
      CHECK(doc["reconciler"]["replica"] == w.replica_ids[i]);
      CHECK(doc["reconciler"]["leading"] == (i == *successor));
    }

    // ---- every acknowledged delivery is in the inbox once, and handled ----
    std::map<std::pair<std::string, std::string>, std::vector<std::string>> inbox;  // (source, id) -> statuses
    for (const auto& r : w.rows("SELECT source, delivery_id, status FROM deliveries"))
      inbox[{r[0], r[1]}].push_back(r[2]);
    int acked = 0, resent = 0, resent_duplicate = 0;
    for (const auto& f : w.lb().forwarded()) {
      if (f.tried.size() > 1) {
        ++resent;
        if (f.status == 200) ++resent_duplicate;
      }
      const auto it = inbox.find({f.source, f.delivery_id});
      if (f.status == 202) {
        ++acked;
        REQUIRE_MESSAGE(it != inbox.end(),
                        "acknowledged " << f.source << " delivery " << f.delivery_id << " is not in the inbox");
        CHECK(it->second.size() == 1);
        CHECK_MESSAGE((it->second[0] == "handled" || it->second[0] == "ignored"),
                      f.source << " delivery " << f.delivery_id << " is " << it->second[0]);
      } else if (it != inbox.end()) {  // a 200 duplicate: by delivery id (stored before) or by body digest
        CHECK_MESSAGE((it->second[0] == "handled" || it->second[0] == "ignored"),
                      f.source << " delivery " << f.delivery_id << " is " << it->second[0]);
      }
    }
    CHECK(w.count("SELECT COUNT(*) FROM deliveries WHERE status IN ('pending', 'failed')") == 0);
    MESSAGE(acked << " deliveries acknowledged with 202; " << resent << " re-sent by the load balancer after the kill ("
                  << resent_duplicate << " answered as duplicates: the killed replica had stored them)");

    // ---- two replicas' worker pools never ran the same job ----
    check_each_job_ran_on_one_replica(w);
    MESSAGE(w.count("SELECT COUNT(*) FROM jobs WHERE error LIKE 'orphaned%'")
            << " job(s) of the killed replica failed as orphaned and ran again elsewhere");
  };

  RunResult r = run_pipeline(n, Loss{.drop = 0.30, .twice = 0.10 / 0.70, .stale = 0.15}, std::move(run));
  CHECK(r.done == n);
  CHECK(r.unblock_messages <= r.reconciler_transitions);  // see the known gap in pipeline_run.h
}
