// bench/startup.cpp: benchmark 6, memory and start-up of the real `orch serve`. Start-up is spawn -> the first 200
// from /healthz (polled every 2 ms), which includes StageEngine::replay_non_terminal() publishing every
// non-terminal task through the bus. RSS is VmRSS from /proc one second after /healthz answered: with an empty
// database (idle), and with N non-terminal tasks (each with its stage's job already finished, as in steady state, so
// the replay finds every job and enqueues none). The reconciler is off (ORCH_RECONCILE_ENABLED=0) so that nothing
// but start-up runs; the N-task database is built once and copied fresh for every run.
//
//   bench_startup --orch build/release/orch --work DIR [--tasks 100000] [--runs 3] [--perf perf.data]
//       [--out results.jsonl]        (--perf: perf record of the start-up with N tasks, for the profile)
#include <SQLiteCpp/SQLiteCpp.h>

#include <filesystem>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "bench/support/bench_util.h"
#include "bench/support/seed.h"
#include "engine/store/sqlite_store.h"

namespace orch::bench {
namespace {

constexpr int kGeneratorVersion = 1;

void generate(const std::string& path, long long n) {
  const std::string tmp = path + ".tmp";
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(tmp + suffix);
  const TimePoint now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  {
    Seeder seed(tmp);
    const char* stages[] = {"analysis", "development", "review"};
    const char* agents[] = {"analyst", "developer", "reviewer"};
    for (long long i = 1; i <= n; ++i) {
      const int s = static_cast<int>(i % 3);
      SeedTask t;
      t.id = i;
      t.work_item_id = bench_uuid(8, static_cast<std::uint64_t>(i));
      t.work_item_key = "SHOP-" + std::to_string(i);
      t.stage = stages[s];
      t.visit = 2 + s;
      t.branch = bench_branch(i);
      t.head_sha = s > 0 ? bench_sha(i) : "";
      t.created_at = now - std::chrono::hours(24);
      t.entered_stage_at = t.updated_at = now - std::chrono::hours(2);
      seed.task(t);
      seed.job(SeedJob{i, t.visit, stages[s], agents[s], "succeeded", now - std::chrono::hours(2),
                       now - std::chrono::minutes(100)});
    }
    seed.commit();
    seed.db().exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(tmp + suffix);
  std::filesystem::rename(tmp, path);
}

struct Boot {
  double startup_ms = -1;
  long rss_kb = -1, hwm_kb = -1;
  bool replay_logged = false;
};

Boot boot(const std::string& orch, const std::string& dir, const std::string& template_db, long long expect_replayed,
          const std::string& perf_out = "") {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/data");
  if (!template_db.empty()) std::filesystem::copy_file(template_db, dir + "/data/orch.db");
  ServeConfig sc;
  sc.data_dir = dir + "/data";
  write_serve_config(dir + "/orch.toml", sc);
  const int port = free_port();
  const std::map<std::string, std::string> env = {
      {"PATH", "/usr/bin:/bin"},
      {"HOME", dir},
      {"ORCH_DATA_DIR", sc.data_dir},
      {"ORCH_LISTEN", "127.0.0.1:" + std::to_string(port)},
      {"ORCH_PLANE_WEBHOOK_SECRET", "plane_bench_secret"},
      {"ORCH_GITEA_WEBHOOK_SECRET", "gitea_bench_secret"},
      {"ORCH_RECONCILE_ENABLED", "0"},
      {"ORCH_LOG_FORMAT", "text"},
  };
  Boot b;
  const std::int64_t t0 = now_ns();
  const pid_t pid = spawn({orch, "serve", "--config", dir + "/orch.toml"}, env, dir + "/orch.log");
  pid_t perf = -1;  // --perf FILE: a profile of the start-up (perf attaches a few ms after the spawn)
  if (!perf_out.empty())
    perf = spawn({"/usr/bin/perf", "record", "-F", "2000", "--call-graph", "dwarf,16384", "-p", std::to_string(pid),
                  "-o", perf_out},
                 {{"PATH", "/usr/bin:/bin"}}, dir + "/../perf-startup.log");
  while (seconds_since(t0) < 60) {
    if (exited(pid)) break;
    if (http_get_status(port, "/healthz", std::chrono::milliseconds(50)) == 200) {
      b.startup_ms = seconds_since(t0) * 1000;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (perf > 0) {
    kill(perf, SIGINT);
    int st = 0;
    waitpid(perf, &st, 0);
  }
  if (b.startup_ms >= 0) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    b.rss_kb = proc_status_kb(pid, "VmRSS");
    b.hwm_kb = proc_status_kb(pid, "VmHWM");
  }
  stop_process(pid);
  std::stringstream log;
  log << std::ifstream(dir + "/orch.log").rdbuf();
  b.replay_logged =
      log.str().find("replayed " + std::to_string(expect_replayed) + " non-terminal") != std::string::npos;
  if (b.startup_ms < 0) std::cerr << "orch serve did not come up:\n" << log.str() << "\n";
  std::filesystem::remove_all(dir);
  return b;
}

}  // namespace
}  // namespace orch::bench

int main(int argc, char** argv) {
  using namespace orch;
  using namespace orch::bench;
  try {
    Flags f(argc, argv);
    const std::string orch = f.get("orch");
    if (orch.empty()) {
      std::cerr << "bench_startup needs --orch PATH\n";
      return 2;
    }
    const std::string work = f.get("work", "bench-work");
    std::filesystem::create_directories(work);
    const long long n = f.num("tasks", 100000);
    const int runs = static_cast<int>(f.num("runs", 3));
    const std::string db = work + "/startup-" + std::to_string(n) + "-s" + std::to_string(SqliteStore::kSchemaVersion) +
                           "-g" + std::to_string(kGeneratorVersion) + ".db";
    if (!std::filesystem::exists(db)) {
      const std::int64_t t0 = now_ns();
      generate(db, n);
      std::printf("startup: generated %lld non-terminal tasks in %.1f s\n", n, seconds_since(t0));
    }
    std::vector<double> empty_ms, full_ms, idle_rss, full_rss, full_hwm;
    bool ok = true;
    for (int r = 0; r < runs; ++r) {
      Boot e = boot(orch, work + "/startup-empty-" + std::to_string(getpid()), "", 0);
      Boot b = boot(orch, work + "/startup-full-" + std::to_string(getpid()), db, n, f.get("perf"));
      ok = ok && e.startup_ms >= 0 && b.startup_ms >= 0 && b.replay_logged;
      empty_ms.push_back(e.startup_ms);
      idle_rss.push_back(static_cast<double>(e.rss_kb));
      full_ms.push_back(b.startup_ms);
      full_rss.push_back(static_cast<double>(b.rss_kb));
      full_hwm.push_back(static_cast<double>(b.hwm_kb));
      std::printf(
          "startup run %d: empty %7.1f ms, RSS idle %6ld kB | %lld tasks: %7.1f ms, RSS %6ld kB (peak %ld "
          "kB)%s\n",
          r + 1, e.startup_ms, e.rss_kb, n, b.startup_ms, b.rss_kb, b.hwm_kb,
          b.replay_logged ? "" : "  (replay line missing from the log)");
    }
    emit_result(f.get("out"), "startup",
                {{"startup_empty_ms", median(empty_ms)},
                 {"rss_idle_kb", median(idle_rss)},
                 {"startup_with_tasks_ms", median(full_ms)},
                 {"rss_with_tasks_kb", median(full_rss)},
                 {"peak_rss_with_tasks_kb", median(full_hwm)}},
                {{"tasks", n}, {"runs", runs}, {"ok", ok}});
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "bench_startup: " << e.what() << "\n";
    return 1;
  }
}
