// bench/runners.cpp: the runner benchmark of issue 22 (docs/adr/0023). One real `orch serve`, N registered runners
// (default 50) played by N client threads speaking the /runner/v1/ API over keep-alive loopback HTTP, as `orch runner`
// does (claim with {"wait_seconds": 25}, then at once finish with {"claim", "exit_code": 1}: no agent, no git). Every
// agent has runs_on = ["agents"] and max_attempts = 1, so only the runners take jobs and a failed run blocks its task
// instead of queueing a retry: each job is claimed once, and every claim is of a job the benchmark made. In order:
//   1. idle, 0 runners: the server's CPU per wall second over --seconds, as utime + stime of /proc/<pid>/stat (clock
//      ticks) and as the sum of its threads' /proc/<pid>/task/*/schedstat (ns; the ratio is taken from this one);
//   2. idle, N runners long-polling, no job anywhere: the same, over --seconds;
//   3. paced: --rate signed Plane `issue` webhooks a second (each a new work item moved to In Progress: a task and its
//      analyst job) for --seconds, while the N runners wait. Per job: enqueue -> claim answer (the job row's run_after,
//      written by the server when it queued the job, to the moment the runner's 200 arrived; one clock, one host, the
//      row's time is in whole ms), the server's part of it (run_after -> started_at, both the server's), and webhook
//      sent -> claim answer (the inbox, handling and dispatch together); and the server's CPU over the phase, per job;
//   4. drain: --backlog queued jobs written into the live database in one transaction from this process (as another
//      replica would enqueue them), then one webhook (its enqueue pokes the long polls): claims a second from the first
//      to the last backlog claim answer, jobs a second (claim + finish) over the same span, the latency of claim
//      requests sent once the backlog was committed (request -> 200: the claim statement under N contending runners),
//      and the server's CPU (utime + stime) from the commit to the last finish, per job.
// Then the server is stopped with the N long polls open (each must be answered 503 at once: the stop time is shown).
// Checks (exit 1 if one fails): every job the benchmark made was offered exactly once and finished (status failed),
// no claim answered anything but 200 / 204, no finish anything but 200, no long poll was answered 200 while idle.
//
//   bench_runners --orch build/release/orch --work DIR [--runners 50] [--seconds 10] [--rate 20] [--backlog 2000]
//       [--wait 25] [--out results.jsonl] [--keep]
#include <SQLiteCpp/SQLiteCpp.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "app/runner_registry.h"
#include "bench/support/bench_util.h"
#include "bench/support/seed.h"
#include "engine/store/sqlite_store.h"
#include "tests/fakes/fake_plane.h"

namespace orch::bench {
namespace {

using nlohmann::json;

const std::string kSecret = "plane_wh_bench_5f0d1c2b3a4e5f60718293a4b5c6d7e8";
const std::string kApiKey = "plane_api_bench_key";
const std::string kProjectId = "4af0c6c4-5b8e-4d2a-9c61-0d3e7f2a91b5";
constexpr std::int64_t kBacklogFirstTask = 1000000;  // far above the ids the webhooks' tasks get

double wall_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// One claim answered 200, and its finish.
struct Claimed {
  std::int64_t job_id = 0, task_id = 0;
  std::string work_item_id;
  std::int64_t request_ns = 0;  // steady clock, when the claim request was sent
  double answer_wall_ms = 0;    // system clock, when its 200 was read
  double claim_ms = 0;          // request -> 200
  double finish_ms = 0;         // finish request -> answer
  double finished_wall_ms = 0;
  int finish_status = 0;
  std::string finish_outcome;
};

// What the runner threads share with the phases. Guarded by mu.
struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Claimed> claimed;
  int started = 0;                  // threads that have sent their first claim
  std::map<int, long> claim_codes;  // claim answers by status (-1: no answer)
  std::map<int, long> finish_codes;
  long finished = 0;  // finishes answered, any status
  std::atomic<bool> stop{false};
};

void runner_thread(Shared& sh, int port, const std::string& token, int wait_s) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(wait_s + 15, 0);  // as `orch runner`: the long poll plus a margin
  cli.set_write_timeout(10, 0);
  cli.set_tcp_nodelay(true);
  const httplib::Headers auth = {{"Authorization", "Bearer " + token}};
  const std::string claim_body = json{{"wait_seconds", wait_s}, {"labels", {"agents"}}}.dump();
  bool first = true;
  while (!sh.stop.load()) {
    if (first) {
      std::lock_guard lock(sh.mu);
      ++sh.started;
      first = false;
      sh.cv.notify_all();
    }
    const std::int64_t t0 = now_ns();
    auto res = cli.Post("/runner/v1/claim", auth, claim_body, "application/json");
    const std::int64_t t1 = now_ns();
    const double t1_wall = wall_ms();
    const int code = res ? res->status : -1;
    if (code != 200) {
      {
        std::lock_guard lock(sh.mu);
        ++sh.claim_codes[code];
      }
      if (code == 204) continue;
      if (sh.stop.load()) break;
      // A refused or lost claim is counted (a failed check); the pause keeps a broken server from being hammered.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    Claimed c;
    c.request_ns = t0;
    c.answer_wall_ms = t1_wall;
    c.claim_ms = static_cast<double>(t1 - t0) / 1e6;
    const json offer = json::parse(res->body, nullptr, false);
    std::string claim;
    if (offer.is_object() && offer.contains("job") && offer["job"].is_object() && offer.contains("task") &&
        offer["task"].is_object()) {
      c.job_id = offer["job"].value("id", std::int64_t{0});
      c.task_id = offer["task"].value("id", std::int64_t{0});
      c.work_item_id = offer["task"].value("work_item_id", std::string());
      claim = offer.value("claim", std::string());
    }
    const std::int64_t f0 = now_ns();
    auto fin = cli.Post("/runner/v1/jobs/" + std::to_string(c.job_id) + "/finish", auth,
                        json{{"claim", claim}, {"exit_code", 1}}.dump(), "application/json");
    c.finish_ms = seconds_since(f0) * 1000;
    c.finished_wall_ms = wall_ms();
    c.finish_status = fin ? fin->status : -1;
    if (fin && fin->status == 200) {
      const json answer = json::parse(fin->body, nullptr, false);
      if (answer.is_object()) c.finish_outcome = answer.value("outcome", std::string());
    }
    std::lock_guard lock(sh.mu);
    ++sh.claim_codes[200];
    ++sh.finish_codes[c.finish_status];
    ++sh.finished;
    sh.claimed.push_back(std::move(c));
    sh.cv.notify_all();
  }
}

// The time the live threads of `pid` have been on a CPU, in seconds, from /proc/<pid>/task/*/schedstat (ns): finer
// than utime + stime (clock ticks, 10 ms), which an idle server may not reach in a window; a thread that exits in the
// window takes its time with it, so the two readings are printed side by side.
double schedstat_seconds(pid_t pid) {
  double total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "schedstat");
    long long on_cpu_ns = 0;
    if (in >> on_cpu_ns) total += static_cast<double>(on_cpu_ns) / 1e9;
  }
  return total;
}

// Polls /healthz until it answers 200 (true) or the process exits or 10 s pass (false).
bool wait_healthy(pid_t pid, int port) {
  for (int i = 0; i < 2000; ++i) {
    if (exited(pid)) return false;
    if (http_get_status(port, "/healthz") == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// The bench config's agents with runs_on and a single attempt (write_serve_config writes max_attempts = 3 for each).
bool write_runner_config(const std::string& path, const ServeConfig& sc) {
  write_serve_config(path, sc);
  std::stringstream in;
  in << std::ifstream(path).rdbuf();
  std::string text = in.str();
  const std::string from = "max_attempts = 3\n", to = "max_attempts = 1\nruns_on = [\"agents\"]\n";
  int replaced = 0;
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
    ++replaced;
  }
  std::ofstream(path, std::ios::trunc) << text;
  return replaced == 3;
}

struct Stats {
  double p50 = 0, p90 = 0, p99 = 0, max = 0;
  std::size_t n = 0;
};
Stats stats(std::vector<double> v) {
  Stats s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.p50 = percentile_sorted(v, 0.5);
  s.p90 = percentile_sorted(v, 0.9);
  s.p99 = percentile_sorted(v, 0.99);
  s.max = v.back();
  return s;
}
std::string show(const Stats& s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "p50 %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  max %7.2f ms  (n=%zu)", s.p50, s.p90, s.p99,
                s.max, s.n);
  return buf;
}

// The server's log lines at warning or above (the text format: "<time> <level> <message>"), less the ones this
// benchmark causes on purpose: each failed run blocks its task, and there is no Telegram to tell.
struct LogProblems {
  long expected = 0, unexpected = 0;
  std::vector<std::string> first;  // of the unexpected ones
};
LogProblems log_problems(const std::string& path) {
  LogProblems p;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string time, level;
    words >> time >> level;
    if (level != "warn" && level != "warning" && level != "error" && level != "critical") continue;
    if (line.find("blocked in analysis: analyst failed attempt 1 of 1: agent exited 1") != std::string::npos ||
        line.find("ORCH_TELEGRAM_BOT_TOKEN is not set") != std::string::npos) {
      ++p.expected;
    } else {
      ++p.unexpected;
      if (p.first.size() < 5) p.first.push_back(line);
    }
  }
  return p;
}

int run(const Flags& f) {
  const std::string orch = f.get("orch");
  if (orch.empty()) {
    std::cerr << "bench_runners needs --orch PATH\n";
    return 2;
  }
  const int runners = static_cast<int>(f.num("runners", 50));
  const double window_s = f.real("seconds", 10);
  const double rate = f.real("rate", 20);
  const long paced = std::max(1L, static_cast<long>(rate * window_s));
  const long backlog = f.num("backlog", 2000);
  const int wait_s = static_cast<int>(f.num("wait", 25));
  const std::string dir = f.get("work", "bench-work") + "/runners-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/data");
  const std::string db_path = dir + "/data/orch.db";

  testing::FakePlane plane;  // the inbox processor's state and project lookups
  plane.set_api_key(kApiKey);
  plane.set_rate_limit(1000000);
  set_nodelay_on_listener(plane.port());  // see bench_util.h
  plane.add_project("acme", kProjectId, "SHOP");
  plane.add_state(kProjectId, "Approved", "started");  // the config's plane_states must all exist
  plane.add_state(kProjectId, "Rejected", "started");
  PlaneBodySpec spec;
  spec.project_id = kProjectId;
  spec.state_id = plane.state_id(kProjectId, "In Progress");
  spec.state_name = "In Progress";
  spec.state_group = "started";

  ServeConfig sc;
  sc.data_dir = dir + "/data";
  sc.plane_base_url = plane.base_url();
  sc.project_id = kProjectId;
  if (!write_runner_config(dir + "/orch.toml", sc)) {
    std::cerr << "bench_runners: write_serve_config's agents changed shape; cannot add runs_on\n";
    return 1;
  }
  std::vector<std::string> tokens;
  {
    auto opened = SqliteStore::open(db_path);
    if (!opened.ok()) throw std::runtime_error(opened.status().to_string());
    const TimePoint now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    for (int i = 0; i < runners; ++i) {
      auto token = register_runner(*opened.value(), "r" + std::to_string(i), {"agents"}, now);
      if (!token.ok()) throw std::runtime_error(token.status().to_string());
      tokens.push_back(token.value());
    }
  }

  const int port = free_port();
  const std::map<std::string, std::string> env = {
      {"PATH", "/usr/bin:/bin"},
      {"HOME", dir},
      {"ORCH_DATA_DIR", sc.data_dir},
      {"ORCH_LISTEN", "127.0.0.1:" + std::to_string(port)},
      {"ORCH_PLANE_WEBHOOK_SECRET", kSecret},
      {"ORCH_GITEA_WEBHOOK_SECRET", "gitea_bench_secret"},
      {"ORCH_PLANE_BASE_URL", plane.base_url()},
      {"ORCH_PLANE_API_KEY", kApiKey},
      // Nothing but the runner path and the inbox should run: no reconcile passes, no comments back to Plane.
      {"ORCH_RECONCILE_ENABLED", "0"},
      {"ORCH_PLANE_WRITE_BACK", "0"},
      {"ORCH_LOG_FORMAT", "text"},
  };
  const pid_t pid = spawn({orch, "serve", "--config", dir + "/orch.toml"}, env, dir + "/orch.log");
  if (!wait_healthy(pid, port)) {
    std::cerr << "orch serve did not come up; see " << dir << "/orch.log\n";
    stop_process(pid);
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));  // past start-up's own work before the idle window

  struct Cpu {
    double stat = 0, sched = 0;  // CPU seconds per wall second: utime + stime, and the threads' schedstat
  };
  auto cpu_window = [&](double seconds) {
    const double c0 = cpu_seconds(pid), s0 = schedstat_seconds(pid);
    const std::int64_t t0 = now_ns();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    const double s1 = schedstat_seconds(pid), c1 = cpu_seconds(pid), wall = seconds_since(t0);
    return Cpu{(c1 - c0) / wall, (s1 - s0) / wall};
  };

  // 1. Idle, no runner.
  const Cpu idle0 = cpu_window(window_s);
  std::printf(
      "runners: idle, 0 runners:             server CPU %.2f ms per s (utime + stime, 10 ms ticks), "
      "%.3f ms per s (threads' schedstat)\n",
      idle0.stat * 1000, idle0.sched * 1000);
  std::fflush(stdout);

  // 2. Idle, N runners long-polling.
  Shared sh;
  std::vector<std::thread> threads;
  for (int i = 0; i < runners; ++i) threads.emplace_back(runner_thread, std::ref(sh), port, tokens[i], wait_s);
  {
    std::unique_lock lock(sh.mu);
    sh.cv.wait(lock, [&] { return sh.started == runners; });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the last requests reach their handler threads
  const Cpu idle_n = cpu_window(window_s);
  long idle_offers = 0;
  {
    std::lock_guard lock(sh.mu);
    idle_offers = static_cast<long>(sh.claimed.size());
  }
  const double idle_ratio = idle0.sched > 0 ? idle_n.sched / idle0.sched : 0.0;
  std::printf(
      "runners: idle, %d runners long-polling: server CPU %.2f ms per s (utime + stime), %.3f ms per s "
      "(schedstat): %.1fx the idle server's (schedstat)\n",
      runners, idle_n.stat * 1000, idle_n.sched * 1000, idle_ratio);
  std::fflush(stdout);

  // 3. Paced: one new task (and analyst job) per webhook, at `rate` a second.
  httplib::Client hooks("127.0.0.1", port);
  hooks.set_tcp_nodelay(true);
  hooks.set_read_timeout(10, 0);
  std::unordered_map<std::string, double> sent_wall_ms;  // work item id -> when its webhook was sent
  long hook_errors = 0;
  auto send_hook = [&](std::uint64_t n) {
    const TimePoint at = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    const std::string body = plane_issue_body(spec, n, at);
    const httplib::Headers h = {{"X-Plane-Signature", hmac_sha256_hex(kSecret, body)},
                                {"X-Plane-Delivery", bench_uuid(2, n)},
                                {"X-Plane-Event", "issue"}};
    sent_wall_ms[bench_uuid(1, n)] = wall_ms();
    auto res = hooks.Post("/webhooks/plane", h, body, "application/json");
    if (!res || res->status != 202) ++hook_errors;
  };
  const double paced_cpu0 = cpu_seconds(pid);
  {
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < paced; ++i) {
      std::this_thread::sleep_until(t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                             std::chrono::duration<double>(static_cast<double>(i) / rate)));
      send_hook(static_cast<std::uint64_t>(i + 1));
    }
  }
  bool paced_done = false;
  {
    std::unique_lock lock(sh.mu);
    paced_done = sh.cv.wait_for(lock, std::chrono::seconds(30),
                                [&] { return sh.finished >= idle_offers + paced - hook_errors; });
  }

  const double paced_cpu = cpu_seconds(pid) - paced_cpu0;

  // 4. Drain a backlog written into the live database, then poke the long polls with one more webhook.
  {
    const TimePoint now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    Seeder seed(db_path);
    seed.db().setBusyTimeout(10000);
    seed.db().exec("PRAGMA synchronous = FULL");  // the server's database: no shortcut on its durability
    for (long i = 0; i < backlog; ++i) {
      SeedTask t;
      t.id = kBacklogFirstTask + i;
      t.work_item_id = bench_uuid(9, static_cast<std::uint64_t>(i));
      t.work_item_key = "SHOP-" + std::to_string(t.id);
      t.stage = "analysis";
      t.visit = 2;  // created -> analysis
      t.branch = bench_branch(t.id);
      t.created_at = t.entered_stage_at = t.updated_at = now;
      seed.task(t);
      seed.job(SeedJob{t.id, 2, "analysis", "analyst", "queued", now, std::nullopt});
    }
    seed.commit();
  }
  const std::int64_t backlog_committed_ns = now_ns();
  const double drain_cpu0 = cpu_seconds(pid);
  const std::string poke_item = bench_uuid(1, static_cast<std::uint64_t>(paced + 1));
  send_hook(static_cast<std::uint64_t>(paced + 1));
  const long expected_total = paced + 1 + backlog - hook_errors;
  bool drained = false;
  {
    std::unique_lock lock(sh.mu);
    drained =
        sh.cv.wait_for(lock, std::chrono::seconds(60), [&] { return sh.finished >= idle_offers + expected_total; });
  }

  const double drain_cpu = cpu_seconds(pid) - drain_cpu0;
  // Stop the server with every long poll open; each must be answered 503 at once.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the runners are back in a long poll
  sh.stop.store(true);
  const std::int64_t stop0 = now_ns();
  const int exit_code = stop_process(pid);
  const double stop_ms = seconds_since(stop0) * 1000;
  for (auto& t : threads) t.join();
  const double joined_ms = seconds_since(stop0) * 1000;

  // What the database says about each job the runners were offered.
  struct Row {
    double run_after = 0, created_at = 0, started_at = 0;
    std::string status;
  };
  std::unordered_map<std::int64_t, Row> rows;
  long jobs_total = 0, jobs_not_failed = 0;
  {
    SQLite::Database db(db_path, SQLite::OPEN_READONLY);
    db.setBusyTimeout(10000);
    SQLite::Statement q(db, "SELECT id, run_after, created_at, COALESCE(started_at, 0), status FROM jobs");
    while (q.executeStep()) {
      Row r{q.getColumn(1).getDouble(), q.getColumn(2).getDouble(), q.getColumn(3).getDouble(),
            q.getColumn(4).getString()};
      ++jobs_total;
      if (r.status != "failed") ++jobs_not_failed;
      rows[q.getColumn(0).getInt64()] = r;
    }
  }

  std::unordered_map<std::int64_t, int> offers;
  std::vector<double> enqueue_to_answer, server_wait, hook_to_answer, drain_claim_ms, finish_ms;
  double first_backlog = 0, last_backlog = 0, last_backlog_finished = 0;
  long backlog_claims = 0, bad_outcome = 0;
  for (const Claimed& c : sh.claimed) {
    ++offers[c.job_id];
    finish_ms.push_back(c.finish_ms);
    if (c.finish_outcome != "blocked") ++bad_outcome;
    const auto row = rows.find(c.job_id);
    if (c.task_id >= kBacklogFirstTask) {
      ++backlog_claims;
      if (first_backlog == 0 || c.answer_wall_ms < first_backlog) first_backlog = c.answer_wall_ms;
      last_backlog = std::max(last_backlog, c.answer_wall_ms);
      last_backlog_finished = std::max(last_backlog_finished, c.finished_wall_ms);
      if (c.request_ns > backlog_committed_ns) drain_claim_ms.push_back(c.claim_ms);
      continue;
    }
    const auto sent = sent_wall_ms.find(c.work_item_id);
    if (sent == sent_wall_ms.end() || c.work_item_id == poke_item) continue;
    hook_to_answer.push_back(c.answer_wall_ms - sent->second);
    if (row != rows.end()) {
      enqueue_to_answer.push_back(c.answer_wall_ms - row->second.run_after);
      server_wait.push_back(row->second.started_at - row->second.run_after);
    }
  }
  long offered_twice = 0;
  for (const auto& [id, n] : offers)
    if (n > 1) ++offered_twice;

  const Stats e2a = stats(enqueue_to_answer), sw = stats(server_wait), h2a = stats(hook_to_answer),
              dcl = stats(drain_claim_ms), fin = stats(finish_ms);
  const double drain_s = (last_backlog - first_backlog) / 1000;
  const double claims_per_s = drain_s > 0 ? static_cast<double>(backlog_claims - 1) / drain_s : 0;
  const double cycle_s = (last_backlog_finished - first_backlog) / 1000;
  const double jobs_per_s = cycle_s > 0 ? static_cast<double>(backlog_claims) / cycle_s : 0;

  std::printf("runners: paced, %.0f new tasks/s for %.0f s (%ld webhooks, %ld refused), %d runners waiting:\n", rate,
              window_s, paced, hook_errors, runners);
  std::printf("         job enqueued (run_after) -> runner has the offer: %s\n", show(e2a).c_str());
  std::printf("         of which in the server (run_after -> started_at):  %s\n", show(sw).c_str());
  std::printf("         webhook sent -> runner has the offer:             %s\n", show(h2a).c_str());
  std::printf("         server CPU over the phase: %.2f s, %.2f ms per job (webhook, handling, claim and finish)\n",
              paced_cpu, paced_cpu * 1000 / static_cast<double>(paced));
  std::printf(
      "runners: drain of %ld queued jobs by %d runners: %.0f claims/s over %.2f s, %.0f jobs/s claimed and "
      "finished\n",
      backlog, runners, claims_per_s, drain_s, jobs_per_s);
  std::printf("         claim request -> 200, requests sent after the backlog was committed: %s\n", show(dcl).c_str());
  std::printf("         finish request -> 200 (every finish of the run):                  %s\n", show(fin).c_str());
  std::printf("         server CPU from the commit to the last finish: %.2f s, %.2f ms per job (claim and finish)\n",
              drain_cpu, backlog > 0 ? drain_cpu * 1000 / static_cast<double>(backlog + 1) : 0.0);
  std::printf(
      "runners: stop with %d long polls open: orch serve exited %d after %.0f ms; every runner thread back "
      "after %.0f ms\n",
      runners, exit_code, stop_ms, joined_ms);

  const LogProblems problems = log_problems(dir + "/orch.log");
  std::printf(
      "runners: server log: %ld lines at warning or above that this benchmark causes (a blocked task per job, "
      "no Telegram), %ld others\n",
      problems.expected, problems.unexpected);
  for (const std::string& l : problems.first) std::printf("         %s\n", l.c_str());

  long wrong_claims = 0, wrong_finishes = 0;
  std::ostringstream codes;
  for (const auto& [code, n] : sh.claim_codes) {
    codes << " claim " << code << ": " << n << ";";
    if (code != 200 && code != 204 && code != 503) wrong_claims += n;
    if (code == 503 && !sh.stop.load()) wrong_claims += n;
  }
  for (const auto& [code, n] : sh.finish_codes) {
    codes << " finish " << code << ": " << n << ";";
    if (code != 200) wrong_finishes += n;
  }
  const long offered = static_cast<long>(offers.size());
  const bool ok = paced_done && drained && idle_offers == 0 && hook_errors == 0 && offered_twice == 0 &&
                  offered == expected_total && jobs_total == expected_total && jobs_not_failed == 0 &&
                  wrong_claims == 0 && wrong_finishes == 0 && bad_outcome == 0 && exit_code == 0;
  std::printf(
      "runners: checks %s: %ld jobs in the database, %ld offered (%ld more than once), %ld not failed; "
      "idle offers %ld, finish outcome not blocked %ld;%s\n",
      ok ? "passed" : "FAILED", jobs_total, offered, offered_twice, jobs_not_failed, idle_offers, bad_outcome,
      codes.str().c_str());
  std::fflush(stdout);

  emit_result(f.get("out"), "runners",
              {{"idle_cpu_ms_per_s", idle0.stat * 1000},
               {"idle_polls_cpu_ms_per_s", idle_n.stat * 1000},
               {"idle_schedstat_cpu_ms_per_s", idle0.sched * 1000},
               {"idle_polls_schedstat_cpu_ms_per_s", idle_n.sched * 1000},
               {"idle_polls_cpu_ratio", idle_ratio},
               {"enqueue_to_offer_p50_ms", e2a.p50},
               {"enqueue_to_offer_p99_ms", e2a.p99},
               {"enqueue_to_claim_server_p50_ms", sw.p50},
               {"enqueue_to_claim_server_p99_ms", sw.p99},
               {"webhook_to_offer_p50_ms", h2a.p50},
               {"webhook_to_offer_p99_ms", h2a.p99},
               {"drain_claims_per_s", claims_per_s},
               {"drain_jobs_per_s", jobs_per_s},
               {"drain_claim_p50_ms", dcl.p50},
               {"drain_claim_p99_ms", dcl.p99},
               {"paced_cpu_ms_per_job", paced_cpu * 1000 / static_cast<double>(paced)},
               {"drain_cpu_ms_per_job", backlog > 0 ? drain_cpu * 1000 / static_cast<double>(backlog + 1) : 0.0},
               {"finish_p50_ms", fin.p50},
               {"finish_p99_ms", fin.p99},
               {"stop_ms", stop_ms}},
              {{"runners", runners},
               {"seconds", window_s},
               {"rate", rate},
               {"paced_jobs", paced},
               {"backlog", backlog},
               {"wait_seconds", wait_s},
               {"jobs", jobs_total},
               {"offered", offered},
               {"offered_twice", offered_twice},
               {"log_warnings_unexpected", problems.unexpected},
               {"exit_code", exit_code},
               {"ok", ok}});
  if (!f.has("keep")) std::filesystem::remove_all(dir);
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace orch::bench

int main(int argc, char** argv) {
  try {
    orch::bench::Flags f(argc, argv);
    return orch::bench::run(f);
  } catch (const std::exception& e) {
    std::cerr << "bench_runners: " << e.what() << "\n";
    return 1;
  }
}
