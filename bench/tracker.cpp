// bench/tracker.cpp: benchmark 5, the tracker-side pass. A fake Plane holds pages x per_page work items (a fifth
// In Progress, each with its task in sync; the rest Todo / Backlog / Done / Cancelled, which the client filters
// out); TrackerSide runs a full sweep through the real PlaneClient over loopback HTTP. The pass runs in a child
// process of its own per configuration, so its peak RSS (VmHWM, reset just before the pass) is the pass's alone and
// the fake Plane's tables are not in it: comparing 10 pages with 100 pages shows whether memory grows with pages.
// The fake Plane answers through a caching proxy (bench_util.h), filled by a first, unmeasured sweep: the fake's own
// cost per page grows with its item count, a real Plane's (an indexed, paginated query) hardly does.
//
//   bench_tracker --work DIR [--pages 10,100] [--per-page 100] [--out results.jsonl]
#include <spdlog/sinks/null_sink.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "bench/support/bench_util.h"
#include "bench/support/seed.h"
#include "engine/event_bus.h"
#include "engine/gates.h"
#include "engine/layout.h"
#include "engine/pipeline.h"
#include "engine/store/sqlite_store.h"
#include "engine/stage_engine.h"
#include "integrations/http_client.h"
#include "integrations/plane_client.h"
#include "reconciler/tracker_side.h"
#include "tests/fakes/fake_plane.h"
#include "tests/support/pipelines.h"
#include "tests/support/table_facts.h"
#include "webhooks/handlers/handlers.h"

namespace orch::bench {
namespace {

const std::string kApiKey = "plane_api_bench_key";
const std::string kProjectId = "4af0c6c4-5b8e-4d2a-9c61-0d3e7f2a91b5";

Config bench_config() {
  Config c = testing::default_config();
  c.projects.front().plane_project_id = kProjectId;
  c.projects.front().plane_workspace = "acme";
  return c;
}

// The child: one full sweep, measured from inside.
int child(const Flags& f) {
  auto opened = SqliteStore::open(f.get("db"));
  if (!opened.ok()) throw std::runtime_error(opened.status().to_string());
  std::unique_ptr<SqliteStore> store = std::move(opened).value();
  Config config = bench_config();
  spdlog::logger log("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
  SystemClock clock;
  RealSleeper sleeper;
  HttpClientOptions ho;
  ho.name = "plane";
  ho.base_url = f.get("plane-url");
  HttpClient http(ho, sleeper, clock, log);
  PlaneClient plane(http, Secret(kApiKey), PlaneClientOptions{.per_page = static_cast<int>(f.num("per-page", 100))});
  testing::TableCodeHost gitea;
  testing::TableRunner runner;
  Pipeline pipeline(config);
  DataLayout layout("/nonexistent");
  GateEvaluator gates(config, gitea, plane, runner, layout);
  EventBus bus(log);
  StageEngine engine(*store, pipeline, gates, bus, clock, log);
  Handlers handlers(*store, engine, plane, gitea, config, clock, log);
  auto grace = [](const std::string&) { return Seconds(std::chrono::minutes(15)); };
  TrackerSide side(config.projects, pipeline, plane, handlers, *store, clock, log, grace);

  const long rss_before = proc_status_kb(0, "VmRSS");
  const bool reset = reset_peak_rss();
  sqlite3_int64 sq_cur = 0, sq_hi = 0;
  sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &sq_cur, &sq_hi, 1);  // reset SQLite's own high-water mark
  const sqlite3_int64 sqlite_before = sq_cur;
  const std::int64_t t0 = now_ns();
  TrackerSideReport r = side.run_once(/*dry_run=*/false, /*full_sweep=*/true);
  const double ms = seconds_since(t0) * 1000;
  const long peak = proc_status_kb(0, "VmHWM"), rss_after = proc_status_kb(0, "VmRSS");
  sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &sq_cur, &sq_hi, 0);
  nlohmann::json out = {{"pass_ms", ms},
                        {"peak_rss_kb", peak},
                        {"rss_before_kb", rss_before},
                        {"rss_after_kb", rss_after},
                        {"peak_reset", reset},
                        // SQLite's own heap (page caches of the pooled connections, bounded by cache_size):
                        // what the pass adds to it is the store's cache warming, not pages held.
                        {"sqlite_heap_before_kb", sqlite_before / 1024},
                        {"sqlite_heap_peak_kb", sq_hi / 1024},
                        {"visited", r.visited},
                        {"in_sync", r.in_sync},
                        {"replayed", r.replayed},
                        {"failed", r.failed},
                        {"projects_failed", r.projects_failed},
                        {"pages", plane.work_item_pages_fetched()},
                        {"first_error", r.first_error}};
  std::ofstream(f.get("result")) << out.dump();
  return 0;
}

nlohmann::json run_config(const std::string& self, const std::string& work, int pages, int per_page) {
  testing::FakePlane plane;
  plane.set_api_key(kApiKey);
  // The fake limits a key to Plane's 60 requests a minute; this benchmark measures one pass over 100 pages (twice:
  // the fill and the measured pass), not the pacing, so the limit is out of its way.
  plane.set_rate_limit(1'000'000);
  set_nodelay_on_listener(plane.port());  // see bench_util.h
  plane.add_project("acme", kProjectId, "SHOP");
  plane.add_state(kProjectId, "Approved", "completed");
  plane.add_state(kProjectId, "Rejected", "cancelled");
  const std::string in_progress = plane.state_id(kProjectId, "In Progress");
  const std::string others[] = {plane.state_id(kProjectId, "Todo"), plane.state_id(kProjectId, "Backlog"),
                                plane.state_id(kProjectId, "Done"), plane.state_id(kProjectId, "Cancelled")};
  const std::string dir = work + "/tracker-" + std::to_string(pages) + "-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string db = dir + "/orch.db";
  const TimePoint now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  const int items = pages * per_page;
  {
    Seeder seed(db);
    for (int i = 0; i < items; ++i) {
      testing::PlaneWorkItemSeed s;
      s.id = bench_uuid(7, static_cast<std::uint64_t>(i));
      s.name = "Work item " + std::to_string(i);
      s.state_id = i % 5 == 0 ? in_progress : others[i % 5 - 1];
      s.description_html = "<p>Some description of work item " + std::to_string(i) + ".</p>";
      s.created_at = now - std::chrono::hours(3);
      s.updated_at = now - std::chrono::hours(2) + std::chrono::milliseconds(i);
      s.sequence_id = i + 1;
      plane.add_work_item(kProjectId, s);
      if (i % 5 != 0) continue;
      SeedTask t;
      t.id = i + 1;
      t.work_item_id = s.id;
      t.work_item_key = "SHOP-" + std::to_string(i + 1);
      t.branch = bench_branch(i + 1);
      t.tracker_state = in_progress;
      t.created_at = t.entered_stage_at = t.updated_at = now - std::chrono::hours(2);
      seed.task(t);
      seed.job(SeedJob{t.id, 3, "development", "developer", "succeeded", now - std::chrono::hours(2),
                       now - std::chrono::minutes(90)});
    }
  }
  // The fake Plane sorts every work item for each page it serves; through the caching proxy a page costs what a
  // page costs. The first child fills the cache (its numbers are kept as "uncached"), the second is measured.
  CachingProxy proxy(plane.base_url());
  auto run_child = [&](const std::string& tag) {
    const std::string result = dir + "/result-" + tag + ".json";
    const pid_t pid = spawn({self, "--child", "--plane-url", proxy.base_url(), "--db", db, "--per-page",
                             std::to_string(per_page), "--result", result},
                            {{"PATH", "/usr/bin:/bin"}}, dir + "/child.log");
    int status = 0;
    waitpid(pid, &status, 0);
    nlohmann::json r = nlohmann::json::parse(std::ifstream(result), nullptr, false);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || r.is_discarded()) {
      std::ifstream log(dir + "/child.log");
      std::cerr << "tracker child failed:\n" << log.rdbuf() << "\n";
      throw std::runtime_error("tracker child failed");
    }
    return r;
  };
  nlohmann::json uncached = run_child("fill");
  const std::size_t misses = proxy.misses();
  nlohmann::json r = run_child("measured");
  r["uncached_pass_ms"] = uncached["pass_ms"];
  r["served_from_cache"] = proxy.misses() == misses;
  r["items"] = items;
  r["expected_visits"] = (items + 4) / 5;
  std::filesystem::remove_all(dir);
  return r;
}

}  // namespace
}  // namespace orch::bench

int main(int argc, char** argv) {
  using namespace orch;
  using namespace orch::bench;
  try {
    Flags f(argc, argv);
    if (f.has("child")) return child(f);
    const std::string work = f.get("work", "bench-work");
    std::filesystem::create_directories(work);
    const auto pages = f.nums("pages", {10, 100});
    const int per_page = static_cast<int>(f.num("per-page", 100));
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    nlohmann::json metrics = nlohmann::json::object(), info = nlohmann::json::object();
    bool ok = true;
    long first_peak = -1, last_peak = -1, first_adj = -1, last_adj = -1;
    for (long long p : pages) {
      nlohmann::json r = run_config(self, work, static_cast<int>(p), per_page);
      const std::string k = "@" + std::to_string(p) + "p";
      metrics["pass_ms" + k] = r["pass_ms"];
      metrics["peak_rss_kb" + k] = r["peak_rss_kb"];
      metrics["pass_rss_growth_kb" + k] = r["peak_rss_kb"].get<long>() - r["rss_before_kb"].get<long>();
      metrics["sqlite_heap_peak_kb" + k] = r["sqlite_heap_peak_kb"];
      // Peak RSS less what SQLite's page caches grew by during the pass: the part that could grow with pages.
      metrics["peak_rss_less_sqlite_growth_kb" + k] =
          r["peak_rss_kb"].get<long>() -
          (r["sqlite_heap_peak_kb"].get<long>() - r["sqlite_heap_before_kb"].get<long>());
      info["run" + k] = r;
      const bool run_ok = r["visited"] == r["expected_visits"] && r["in_sync"] == r["expected_visits"] &&
                          r["failed"] == 0 && r["projects_failed"] == 0 && r["pages"] == p &&
                          r["served_from_cache"] == true;
      ok = ok && run_ok;
      if (first_peak < 0) first_peak = r["peak_rss_kb"].get<long>();
      last_peak = r["peak_rss_kb"].get<long>();
      const long adj = metrics["peak_rss_less_sqlite_growth_kb" + k].get<long>();
      if (first_adj < 0) first_adj = adj;
      last_adj = adj;
      std::printf(
          "tracker %4lld pages x %d: full sweep %8.1f ms, peak RSS %6ld kB (before the pass %ld kB; SQLite heap "
          "%ld -> peak %ld kB); %d items visited, %d in sync, %d replayed, %lld pages fetched%s\n",
          p, per_page, r["pass_ms"].get<double>(), r["peak_rss_kb"].get<long>(), r["rss_before_kb"].get<long>(),
          r["sqlite_heap_before_kb"].get<long>(), r["sqlite_heap_peak_kb"].get<long>(), r["visited"].get<int>(),
          r["in_sync"].get<int>(), r["replayed"].get<int>(), r["pages"].get<long long>(),
          run_ok ? "" : "  (UNEXPECTED COUNTS)");
    }
    metrics["peak_rss_growth_kb"] = last_peak - first_peak;
    metrics["peak_rss_less_sqlite_growth_kb"] = last_adj - first_adj;
    info["per_page"] = per_page;
    info["ok"] = ok;
    emit_result(f.get("out"), "tracker", metrics, info);
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "bench_tracker: " << e.what() << "\n";
    return 1;
  }
}
