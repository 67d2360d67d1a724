// bench/reconcile.cpp: benchmark 4, gate-side reconcile pass scaling. Databases of 1 k .. 1 M tasks (cached under the
// work directory, keyed by size and schema version): 1 % idle candidates (development, idle for two days, their
// job long finished, CI red), 1 % live tasks inside their grace (half with a running job), 98 % done (history).
// Per size: GateSide::run_once() over all candidates in one pass (max_candidates_per_pass above the candidate count)
// with the table-backed Gitea of tests/support (so the pass measures the store, not HTTP), rows read, and the idle
// scan's cost counters; then one pass as the server runs it (max_candidates_per_pass 500) against the fake Gitea
// over loopback HTTP through the real GiteaClient.
//
//   bench_reconcile --work DIR [--sizes 1000,10000,100000,1000000] [--passes 3] [--no-http] [--out results.jsonl]
#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/sinks/null_sink.h>
#include <sqlite3.h>

#include <filesystem>
#include <iostream>

#include "bench/support/bench_util.h"
#include "bench/support/seed.h"
#include "engine/event_bus.h"
#include "engine/gates.h"
#include "engine/layout.h"
#include "engine/pipeline.h"
#include "engine/store/sqlite_store.h"
#include "engine/stage_engine.h"
#include "integrations/gitea_client.h"
#include "integrations/http_client.h"
#include "reconciler/gate_side.h"
#include "tests/fakes/fake_gitea.h"
#include "tests/support/manual_clock.h"
#include "tests/support/pipelines.h"
#include "tests/support/table_facts.h"

namespace orch::bench {
namespace {

// Bump when the generated data changes, so cached databases are rebuilt.
constexpr int kGeneratorVersion = 1;
const TimePoint kT0 = testing::kMonday9am;
constexpr std::chrono::minutes kGrace{15};

enum class Kind { kCandidate, kLive, kDone };
Kind kind_of(std::int64_t i) { return i % 100 == 0 ? Kind::kCandidate : i % 100 == 1 ? Kind::kLive : Kind::kDone; }
std::int64_t candidates_in(std::int64_t n) { return n / 100; }

// The idle scan of engine/store/sqlite_store.cpp (ORCH_IDLE_TASKS_SQL), repeated here to read SQLite's cost counters
// for it on a connection of our own; main() checks that its query plan is the store's (idle_tasks_plan()).
const char* kIdleSql =
    "SELECT id, project, work_item_id, work_item_key, title, description, stage, visit, branch, blocked, "
    "blocked_reason, rejection_reason, pr_number, pr_state, review_state, head_sha, tracker_state, created_at, "
    "entered_stage_at, updated_at FROM tasks "
    "WHERE stage <> 'done' AND updated_at < ?1 AND (updated_at, id) > (?2, ?3) "
    "AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.task_id = tasks.id AND jobs.status IN ('queued', 'running')) "
    "ORDER BY updated_at, id LIMIT ?4";

std::string db_for(const std::string& work, std::int64_t n) {
  return work + "/reconcile-" + std::to_string(n) + "-s" + std::to_string(SqliteStore::kSchemaVersion) + "-g" +
         std::to_string(kGeneratorVersion) + ".db";
}

void generate(const std::string& path, std::int64_t n) {
  const std::string tmp = path + ".tmp";
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(tmp + suffix);
  const std::int64_t t0 = now_ns();
  {
    Seeder seed(tmp);
    for (std::int64_t i = 1; i <= n; ++i) {
      SeedTask t;
      t.id = i;
      t.work_item_id = bench_uuid(6, static_cast<std::uint64_t>(i));
      t.work_item_key = "SHOP-" + std::to_string(i);
      t.branch = bench_branch(i);
      t.head_sha = bench_sha(i);
      SeedJob j;
      j.task_id = i;
      switch (kind_of(i)) {
        case Kind::kCandidate:
          t.created_at = kT0 - std::chrono::hours(24 * 5);
          t.entered_stage_at = t.updated_at = kT0 - std::chrono::hours(48) + std::chrono::milliseconds(i);
          j.created_at = t.entered_stage_at;
          j.finished_at = t.entered_stage_at + std::chrono::minutes(20);
          break;
        case Kind::kLive:
          t.created_at = kT0 - std::chrono::hours(3);
          t.entered_stage_at = t.updated_at = kT0 - std::chrono::minutes(1) + std::chrono::milliseconds(i % 1000);
          j.created_at = t.updated_at;
          if (i % 200 == 1)
            j.status = "running";
          else
            j.finished_at = t.updated_at;
          break;
        case Kind::kDone:
          t.stage = "done";
          t.visit = 5;
          t.created_at = kT0 - std::chrono::hours(24 * 400) + std::chrono::seconds(i);
          t.entered_stage_at = t.updated_at = t.created_at + std::chrono::hours(30);
          j.visit = 4;
          j.stage = "review";
          j.agent = "reviewer";
          j.created_at = t.updated_at - std::chrono::hours(2);
          j.finished_at = t.updated_at - std::chrono::hours(1);
          break;
      }
      seed.task(t);
      seed.job(j);
    }
    seed.commit();
    seed.db().exec("ANALYZE");
    seed.db().exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(tmp + suffix);
  std::filesystem::rename(tmp, path);
  std::printf("reconcile: generated %lld tasks in %.1f s (%s, %.0f MB)\n", static_cast<long long>(n), seconds_since(t0),
              path.c_str(), static_cast<double>(std::filesystem::file_size(path)) / 1e6);
}

struct ScanCost {
  std::int64_t rows = 0, vm_steps = 0, fullscan_steps = 0, sorts = 0;
  std::string plan;
};

// Runs the idle scan to its end over pages of `limit` rows on a connection of our own, summing SQLite's counters.
ScanCost idle_scan_cost(const std::string& path, int limit) {
  SQLite::Database db(path, SQLite::OPEN_READONLY);
  ScanCost c;
  {
    SQLite::Statement plan(db, std::string("EXPLAIN QUERY PLAN ") + kIdleSql);
    while (plan.executeStep()) c.plan += plan.getColumn(3).getString() + "\n";
  }
  // The raw C API: SQLiteCpp does not expose a statement's handle, and sqlite3_stmt_status() needs it.
  sqlite3_stmt* q = nullptr;
  if (sqlite3_prepare_v2(db.getHandle(), kIdleSql, -1, &q, nullptr) != SQLITE_OK)
    throw std::runtime_error(std::string("prepare the idle scan: ") + sqlite3_errmsg(db.getHandle()));
  std::int64_t after_t = 0, after_id = 0;
  while (true) {
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, to_millis(kT0 - kGrace));
    sqlite3_bind_int64(q, 2, after_t);
    sqlite3_bind_int64(q, 3, after_id);
    sqlite3_bind_int(q, 4, limit);
    int got = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
      ++got;
      after_id = sqlite3_column_int64(q, 0);
      after_t = sqlite3_column_int64(q, 19);
    }
    c.rows += got;
    c.vm_steps += sqlite3_stmt_status(q, SQLITE_STMTSTATUS_VM_STEP, 1);
    c.fullscan_steps += sqlite3_stmt_status(q, SQLITE_STMTSTATUS_FULLSCAN_STEP, 1);
    c.sorts += sqlite3_stmt_status(q, SQLITE_STMTSTATUS_SORT, 1);
    if (got < limit) break;
  }
  sqlite3_finalize(q);
  return c;
}

struct Stack {
  explicit Stack(CodeHost& code_host)
      : config(testing::default_config()),
        pipeline(config),
        layout("/nonexistent"),
        gates(config, code_host, tracker, runner, layout),
        log("bench", std::make_shared<spdlog::sinks::null_sink_mt>()),
        bus(log) {}
  Config config;
  Pipeline pipeline;
  DataLayout layout;
  testing::TableTracker tracker;
  testing::TableRunner runner;
  GateEvaluator gates;
  spdlog::logger log;
  EventBus bus;
};

}  // namespace
}  // namespace orch::bench

int main(int argc, char** argv) {
  using namespace orch;
  using namespace orch::bench;
  try {
    Flags f(argc, argv);
    const std::string work = f.get("work", "bench-work");
    std::filesystem::create_directories(work);
    const auto sizes = f.nums("sizes", {1000, 10000, 100000, 1000000});
    const int passes = static_cast<int>(f.num("passes", 3));
    const bool http = !f.has("no-http");
    testing::ManualClock clock(kT0);
    auto grace = [](const std::string&) { return std::chrono::duration_cast<Seconds>(kGrace); };
    nlohmann::json metrics = nlohmann::json::object(), info = nlohmann::json::object();
    bool ok = true;

    for (long long n : sizes) {
      const std::string path = db_for(work, n);
      if (!std::filesystem::exists(path)) generate(path, n);
      const std::int64_t cand = candidates_in(n);
      auto opened = SqliteStore::open(path);
      if (!opened.ok()) throw std::runtime_error(opened.status().to_string());
      std::unique_ptr<SqliteStore> store = std::move(opened).value();

      // Red gates from tables: every candidate's branch exists and its CI failed.
      testing::TableCodeHost table;
      for (std::int64_t i = 100; i <= n; i += 100) {
        table.set_branch(bench_branch(i), bench_sha(i));
        table.set_status(bench_sha(i), CiState::kFailure);
      }
      Stack st(table);
      StageEngine engine(*store, st.pipeline, st.gates, st.bus, clock, st.log);

      std::vector<double> times;
      GateSideReport report;
      double first_ms = 0;
      for (int p = 0; p <= passes; ++p) {  // pass 0 warms SQLite's cache in this process
        GateSide side(*store, engine, clock, st.log, grace,
                      GateSideOptions{.max_candidates_per_pass = static_cast<int>(cand + 10)});
        const std::int64_t t0 = now_ns();
        report = side.run_once();
        const double ms = seconds_since(t0) * 1000;
        if (p == 0)
          first_ms = ms;
        else
          times.push_back(ms);
      }
      const double pass_ms = median(times);
      const ScanCost cost = idle_scan_cost(path, static_cast<int>(cand + 10));
      auto store_plan = store->idle_tasks_plan();
      const bool plan_matches = store_plan.ok() && store_plan.value() == cost.plan;
      const bool pass_ok = report.scanned == cand && report.red == cand && report.unblocked.empty() &&
                           report.failed == 0 && cost.fullscan_steps == 0 && plan_matches;
      ok = ok && pass_ok;
      const std::string k = "@" + std::to_string(n);
      metrics["pass_ms" + k] = pass_ms;
      metrics["first_pass_ms" + k] = first_ms;
      metrics["us_per_candidate" + k] = pass_ms * 1000 / static_cast<double>(std::max<std::int64_t>(1, cand));
      metrics["rows_read" + k] = report.scanned;
      metrics["scan_vm_steps" + k] = cost.vm_steps;
      metrics["scan_fullscan_steps" + k] = cost.fullscan_steps;
      std::printf(
          "reconcile %8lld tasks, %6lld candidates: pass %8.2f ms (first %8.2f ms, %6.1f us per candidate); "
          "rows read %d, evaluated %d, red %d; idle scan: %lld rows, %lld VM steps (%.1f per row), "
          "%lld full-scan steps, %lld sorts\n",
          n, static_cast<long long>(cand), pass_ms, first_ms,
          pass_ms * 1000 / static_cast<double>(std::max<std::int64_t>(1, cand)), report.scanned, report.evaluated,
          report.red, static_cast<long long>(cost.rows), static_cast<long long>(cost.vm_steps),
          static_cast<double>(cost.vm_steps) / static_cast<double>(std::max<std::int64_t>(1, cost.rows)),
          static_cast<long long>(cost.fullscan_steps), static_cast<long long>(cost.sorts));
      if (!plan_matches)
        std::printf("  the store's plan differs from the benchmark's copy of the idle scan:\n%s---\n%s",
                    store_plan.ok() ? store_plan.value().c_str() : store_plan.status().to_string().c_str(),
                    cost.plan.c_str());
      info["plan"] = cost.plan;
      info["ok" + k] = pass_ok;

      if (http) {  // as the server runs it: 500 evaluations per pass, each two requests to Gitea
        testing::FakeGitea gitea;
        const std::string repo = st.config.projects.front().gitea_repo;
        gitea.add_repo(repo);
        set_nodelay_on_listener(gitea.port());  // see bench_util.h
        for (std::int64_t i = 100; i <= n; i += 100) {
          gitea.set_branch(repo, bench_branch(i), bench_sha(i));
          gitea.add_status(repo, bench_sha(i), "ci/build", "failure");
        }
        SystemClock sys;
        RealSleeper sleeper;
        HttpClientOptions ho;
        ho.name = "gitea";
        // The fake Gitea scans all its statuses and branches for a sha given as a ref; through the caching proxy
        // (filled by a first pass) an answer costs what a real Gitea's indexed lookup costs, not O(candidates).
        CachingProxy proxy(gitea.base_url());
        ho.base_url = proxy.base_url();
        HttpClient client(ho, sleeper, sys, st.log);
        GiteaClient gitea_client(client, Secret("token"));
        Stack hst(gitea_client);
        StageEngine hengine(*store, hst.pipeline, hst.gates, hst.bus, clock, hst.log);
        double ms = 0;
        GateSideReport r;
        for (int pass = 0; pass < 2; ++pass) {  // pass 0 fills the proxy
          GateSide side(*store, hengine, clock, hst.log, grace, GateSideOptions{.max_candidates_per_pass = 500});
          const std::int64_t t0 = now_ns();
          r = side.run_once();
          ms = seconds_since(t0) * 1000;
        }
        metrics["http_cap500_pass_ms" + k] = ms;
        std::printf(
            "          server-shaped pass (cap 500, Gitea over loopback HTTP): %8.2f ms, %d evaluated, %d "
            "red, %zu requests (%zu answered from the proxy's cache)\n",
            ms, r.evaluated, r.red, gitea.request_count() + proxy.hits(), proxy.hits());
        ok = ok && r.failed == 0 && r.red == std::min<std::int64_t>(500, cand);
      }
    }
    info["candidate_share"] = 0.01;
    info["live_share"] = 0.01;
    info["done_share"] = 0.98;
    info["ok"] = ok;
    emit_result(f.get("out"), "reconcile", metrics, info);
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "bench_reconcile: " << e.what() << "\n";
    return 1;
  }
}
