// bench/ingest.cpp: benchmark 1, webhook ingest. Signed ~1.5 KB Plane `issue` deliveries with unique delivery ids
// and ~10 % repeats of acknowledged ones, over loopback keep-alive connections, closed loop at each concurrency;
// requests/s and latency percentiles; afterwards every 202-acknowledged delivery must be in the inbox exactly once.
//
//   bench_ingest --serve --orch build/release/orch --work DIR [--concurrency 16,64] [--requests 60000]
//       starts a fake Plane (for the inbox processor's state lookups) and a fresh `orch serve` per concurrency level,
//       loads it, checks the inbox, stops it.
//   bench_ingest --target http://host:port/webhooks/plane [--target ...] --secret S --project-id ID
//       [--verify-db orch.db] [--acked-out FILE]
//       loads servers someone else started (several targets: round-robin, e.g. replicas sharing one inbox).
//   bench_ingest --pg-replicas 1,2,3 --orch build/release/orch --work DIR [--concurrency 64]
//       the same load against 1, 2, 3 `orch serve` replicas sharing one PostgreSQL database (a throwaway server),
//       round-robin over them; the exactly-once check on the shared inbox.
//   --server routes: a diagnostic; instead of `orch serve`, a process with only the webhook routes, their group
//       committer and the HTTP server (no inbox processor, reconciler or workers): what the rest costs ingest.
//   --idle-processor: a diagnostic; the inbox processor is kept from writing (its Plane is unreachable).
//   --no-gzip: no Accept-Encoding header (Plane sends one). --label NAME: results as NAME_c<level>.
//   --perf FILE: perf record of the server during each measured load (FILE.c16, FILE.c64).
// Common: --threads 2 --dup-every 10 --warmup 3000 --body-bytes 1536 --no-gzip --out results.jsonl
// (--no-gzip: no Accept-Encoding header; Plane sends "gzip, deflate", so by default the server may compress.)
// Exit code 0 only if every answer was right and the exactly-once check passed (when it ran).
#include <SQLiteCpp/SQLiteCpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <thread>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <unordered_map>

#include <spdlog/sinks/basic_file_sink.h>

#include "app/http_server.h"
#include "bench/support/bench_util.h"
#include "engine/store/sqlite_store.h"
#include "webhooks/webhook_routes.h"
#include "bench/support/load_generator.h"
#include "tests/support/exposition.h"
#include "tests/support/pg_server.h"
#include "tests/fakes/fake_plane.h"

namespace orch::bench {
namespace {

const std::string kSecret = "plane_wh_bench_5f0d1c2b3a4e5f60718293a4b5c6d7e8";
const std::string kApiKey = "plane_api_bench_key";
const std::string kProjectId = "4af0c6c4-5b8e-4d2a-9c61-0d3e7f2a91b5";

struct ExactlyOnce {
  bool ran = false;
  bool ok = false;
  std::uint64_t rows = 0, missing = 0, duplicated = 0, unacknowledged = 0;
};

// Every acknowledged delivery id is in the inbox exactly once; rows nobody acknowledged are counted too (there
// should be none unless a transport error hid an answer).
// The query both stores answer: how many inbox rows each Plane delivery id has.
constexpr const char* kInboxCountsSql =
    "SELECT delivery_id, COUNT(*) FROM deliveries WHERE source = 'plane' GROUP BY delivery_id";

ExactlyOnce check_counts(const std::unordered_map<std::string, int>& counts, const RequestSet& set,
                         const std::vector<std::uint32_t>& acked);

ExactlyOnce check_inbox(const std::string& db_path, const RequestSet& set, const std::vector<std::uint32_t>& acked) {
  SQLite::Database db(db_path, SQLite::OPEN_READONLY);
  db.setBusyTimeout(10000);
  std::unordered_map<std::string, int> counts;
  SQLite::Statement q(db, kInboxCountsSql);
  while (q.executeStep()) counts[q.getColumn(0).getString()] = q.getColumn(1).getInt();
  return check_counts(counts, set, acked);
}

ExactlyOnce check_pg_inbox(const std::string& url, const RequestSet& set, const std::vector<std::uint32_t>& acked) {
  testing::PgSql sql(url);
  std::unordered_map<std::string, int> counts;
  for (const auto& row : sql.rows(kInboxCountsSql)) counts[row[0]] = std::stoi(row[1]);
  return check_counts(counts, set, acked);
}

ExactlyOnce check_counts(const std::unordered_map<std::string, int>& counts, const RequestSet& set,
                         const std::vector<std::uint32_t>& acked) {
  ExactlyOnce r;
  r.ran = true;
  for (const auto& [id, n] : counts) r.rows += static_cast<std::uint64_t>(n);
  std::vector<bool> is_acked(set.requests.size(), false);
  for (std::uint32_t i : acked) is_acked[i] = true;
  for (std::size_t i = 0; i < set.requests.size(); ++i) {
    auto it = counts.find(set.requests[i].delivery_id);
    const int n = it == counts.end() ? 0 : it->second;
    if (is_acked[i]) {
      if (n == 0) ++r.missing;
      if (n > 1) ++r.duplicated;
    } else if (n > 0) {
      ++r.unacknowledged;
    }
  }
  r.ok = r.missing == 0 && r.duplicated == 0;
  return r;
}

nlohmann::json load_metrics(const LoadResult& r) {
  const auto& l = r.latencies_ms;
  return {
      {"rps", static_cast<double>(l.size()) / r.seconds},
      {"p50_ms", percentile_sorted(l, 0.50)},
      {"p99_ms", percentile_sorted(l, 0.99)},
      {"p999_ms", percentile_sorted(l, 0.999)},
      {"max_ms", l.empty() ? 0.0 : l.back()},
      {"seconds", r.seconds},
  };
}

nlohmann::json load_info(const LoadResult& r) {
  nlohmann::json statuses = nlohmann::json::object();
  for (auto [s, n] : r.statuses) statuses[std::to_string(s)] = n;
  return {{"sends", r.sends},
          {"acked", r.acked},
          {"repeats", r.repeats},
          {"duplicates_answered", r.dup_answered},
          {"wrong_answers", r.wrong_answers},
          {"transport_errors", r.transport_errors},
          {"reconnects", r.reconnects},
          {"gzip_answers", r.compressed},
          {"statuses", statuses},
          {"first_wrong_answer", r.first_wrong_answer}};
}

void print_summary(const std::string& label, const LoadResult& r) {
  const auto& l = r.latencies_ms;
  std::printf(
      "%-10s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  p99.9 %6.2f ms  max %7.2f ms  (%llu sends, %llu acked, "
      "%llu repeats answered duplicate, %llu wrong, %llu transport errors, %llu reconnects)\n",
      label.c_str(), static_cast<double>(l.size()) / r.seconds, percentile_sorted(l, 0.5), percentile_sorted(l, 0.99),
      percentile_sorted(l, 0.999), l.empty() ? 0.0 : l.back(), static_cast<unsigned long long>(r.sends),
      static_cast<unsigned long long>(r.acked), static_cast<unsigned long long>(r.dup_answered),
      static_cast<unsigned long long>(r.wrong_answers), static_cast<unsigned long long>(r.transport_errors),
      static_cast<unsigned long long>(r.reconnects));
  if (!r.first_wrong_answer.empty()) std::printf("           first wrong answer: %s\n", r.first_wrong_answer.c_str());
  std::fflush(stdout);
}

// Warm-up (answers checked, latencies dropped) then the measured load over the rest of the set.
struct Phases {
  LoadResult warm, measured;
  std::vector<std::uint32_t> acked;  // both phases, as indices into the full set
};

Phases load_in_phases(const LoadOptions& o, const RequestSet& all, std::size_t warmup) {
  Phases p;
  RequestSet warm, rest;
  warmup = std::min(warmup, all.requests.size());
  warm.requests.assign(all.requests.begin(), all.requests.begin() + static_cast<std::ptrdiff_t>(warmup));
  rest.requests.assign(all.requests.begin() + static_cast<std::ptrdiff_t>(warmup), all.requests.end());
  if (!warm.requests.empty()) p.warm = run_load(o, warm);
  p.measured = run_load(o, rest);
  p.acked = p.warm.acked_indices;
  for (std::uint32_t i : p.measured.acked_indices) p.acked.push_back(static_cast<std::uint32_t>(i + warmup));
  return p;
}

// --route-server (a diagnostic, spawned by --serve --server routes): only what answers a webhook, wired as
// app/wiring.cpp wires it (SqliteStore, WebhookRoutes with group commit, HttpServer with its default limits), and
// nothing else: no inbox processor, no reconciler, no workers. Runs until SIGTERM.
int route_server(const Flags& f) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread starts: they all inherit the mask
  const std::string data = f.get("data");
  auto opened = SqliteStore::open(data + "/orch.db");
  if (!opened.ok()) {
    std::cerr << opened.status().to_string() << "\n";
    return 1;
  }
  std::unique_ptr<SqliteStore> store = std::move(opened).value();
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(data + "/routes.log", true);
  spdlog::logger log("orch", sink);
  log.set_level(spdlog::level::info);
  log.flush_on(spdlog::level::info);
  SystemClock clock;
  WebhookRouteOptions options;
  const std::string project_id = f.get("project-id", kProjectId);
  options.lane_of = [project_id](Source source, const std::string& key) {
    return source == Source::kPlane && key == project_id ? std::string("project:shop")
                                                         : std::string(source_name(source)) + ":" + key;
  };
  WebhookRoutes routes(*store, clock, log, WebhookSecrets{Secret(f.get("secret", kSecret)), Secret(), false}, options);
  HttpServer http;
  routes.register_routes(http.routes());
  http.routes().Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  routes.start();
  if (Status s = http.start("127.0.0.1", static_cast<int>(f.num("port", 0))); !s.ok()) {
    std::cerr << s.to_string() << "\n";
    return 1;
  }
  int sig = 0;
  sigwait(&set, &sig);
  http.stop();
  routes.stop();
  return 0;
}

// The fake Plane the inbox processor asks for states, and the body spec of the deliveries: a state orch does not
// act on, so each handled delivery costs one state lookup and no transition.
// The directory of one `orch serve` under load: DIR/data, and DIR/orch.toml for the bench's project on `plane_url`.
ServeConfig prepare_serve_dir(const std::string& dir, const std::string& plane_url) {
  std::filesystem::create_directories(dir + "/data");
  ServeConfig sc;
  sc.data_dir = dir + "/data";
  sc.plane_base_url = plane_url;
  sc.project_id = kProjectId;
  write_serve_config(dir + "/orch.toml", sc);
  return sc;
}

PlaneBodySpec set_up_plane(testing::FakePlane& plane, const Flags& f) {
  plane.set_api_key(kApiKey);
  set_nodelay_on_listener(plane.port());  // see bench_util.h
  plane.add_project("acme", kProjectId, "SHOP");
  plane.add_state(kProjectId, "Approved", "started");
  plane.add_state(kProjectId, "Rejected", "started");
  PlaneBodySpec spec;
  spec.project_id = kProjectId;
  spec.state_id = plane.state_id(kProjectId, "Todo");
  spec.target_bytes = static_cast<std::size_t>(f.num("body-bytes", 1536));
  return spec;
}

// The group committer's totals from the server's /metrics (orch serve only; the route server has none).
struct CommitTotals {
  bool ok = false;
  double seconds = 0, commits = 0, deliveries = 0;
};
CommitTotals scrape_commits(int port) {
  CommitTotals t;
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(10, 0);
  auto res = c.Get("/metrics");
  if (!res || res->status != 200) return t;
  const testing::Exposition e = testing::parse_exposition(res->body);
  auto value = [&](const char* name, double& out) {
    auto it = e.samples.find(name);
    if (it == e.samples.end()) return false;
    out = it->second;
    return true;
  };
  t.ok = value("orch_inbox_commit_duration_seconds_sum", t.seconds) &&
         value("orch_inbox_commit_duration_seconds_count", t.commits) &&
         value("orch_inbox_commit_deliveries_sum", t.deliveries);
  return t;
}

// The environment of a benchmarked `orch serve` (secrets, listen address, data directory); `extra` overrides.
std::map<std::string, std::string> serve_env(const std::string& dir, const std::string& data_dir, int port,
                                             const std::string& plane_url,
                                             const std::map<std::string, std::string>& extra = {}) {
  std::map<std::string, std::string> env = {
      {"PATH", "/usr/bin:/bin"},
      {"HOME", dir},
      {"ORCH_DATA_DIR", data_dir},
      {"ORCH_LISTEN", "127.0.0.1:" + std::to_string(port)},
      {"ORCH_PLANE_WEBHOOK_SECRET", kSecret},
      {"ORCH_GITEA_WEBHOOK_SECRET", "gitea_bench_secret"},
      {"ORCH_PLANE_BASE_URL", plane_url},
      {"ORCH_PLANE_API_KEY", kApiKey},
      {"ORCH_LOG_FORMAT", "text"},
  };
  for (const auto& [k, v] : extra) env[k] = v;
  return env;
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

int serve_mode(const Flags& f) {
  const std::string orch = f.get("orch");
  const std::string work = f.get("work", "bench-work");
  const std::string out = f.get("out");
  const auto levels = f.nums("concurrency", {16, 64});
  const std::size_t requests = static_cast<std::size_t>(f.num("requests", 60000));
  const std::size_t warmup = static_cast<std::size_t>(f.num("warmup", 3000));
  if (orch.empty() && f.get("server", "orch") == "orch") {
    std::cerr << "bench_ingest --serve needs --orch PATH\n";
    return 2;
  }

  testing::FakePlane plane;
  const PlaneBodySpec spec = set_up_plane(plane, f);

  bool all_ok = true;
  int run = 0;
  for (long long c : levels) {
    const std::int64_t t0 = now_ns();
    // Fresh numbering per level: each server starts with an empty inbox anyway.
    RequestSet set = make_requests(spec, kSecret, static_cast<std::uint64_t>(run) * 10000000ULL, requests + warmup, 2);
    std::printf("ingest c=%lld: %zu signed requests of %zu-byte bodies prepared in %.1f s\n", c, set.requests.size(),
                set.body_bytes, seconds_since(t0));

    const std::string dir =
        work + "/ingest-c" + std::to_string(c) + "-" + std::to_string(getpid()) + "-" + std::to_string(run++);
    std::filesystem::remove_all(dir);
    const ServeConfig sc = prepare_serve_dir(dir, plane.base_url());
    const int port = free_port();
    // --idle-processor (a diagnostic): the processor's Plane is a closed port, so the head of the one lane waits in
    // retry backoff and the processor writes almost nothing while the load runs.
    const std::map<std::string, std::string> env = serve_env(
        dir, sc.data_dir, port, f.has("idle-processor") ? std::string("http://127.0.0.1:9") : plane.base_url());
    const bool routes_only = f.get("server", "orch") == "routes";
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    const pid_t pid = routes_only
                          ? spawn({self, "--route-server", "--data", sc.data_dir, "--port", std::to_string(port)}, env,
                                  dir + "/orch.log")
                          : spawn({orch, "serve", "--config", dir + "/orch.toml"}, env, dir + "/orch.log");
    if (!wait_healthy(pid, port)) {
      std::cerr << "orch serve did not come up; see " << dir << "/orch.log\n";
      stop_process(pid);
      return 1;
    }

    double server_cpu = 0, own_cpu = 0, committer_busy = -1, commit_batch = -1;
    LoadOptions o;
    o.targets = {Target{"127.0.0.1", port, "/webhooks/plane"}};
    o.concurrency = static_cast<int>(c);
    o.threads = static_cast<int>(f.num("threads", 2));
    o.dup_every = static_cast<int>(f.num("dup-every", 10));
    o.accept_gzip = !f.has("no-gzip");
    // Warm-up, then the measured load with the server's and our own CPU time around it (and, with --perf FILE,
    // a perf record of the server during the measured load).
    Phases p;
    {
      RequestSet warm, rest;
      const std::size_t w = std::min(warmup, set.requests.size());
      warm.requests.assign(set.requests.begin(), set.requests.begin() + static_cast<std::ptrdiff_t>(w));
      rest.requests.assign(set.requests.begin() + static_cast<std::ptrdiff_t>(w), set.requests.end());
      if (!warm.requests.empty()) p.warm = run_load(o, warm);
      pid_t perf = -1;
      if (f.has("perf"))
        perf = spawn({"/usr/bin/perf", "record", "-F", f.get("perf-freq", "997"), "--call-graph",
                      f.get("perf-callgraph", "dwarf,16384"), "-p", std::to_string(pid), "-o",
                      f.get("perf") + ".c" + std::to_string(c)},
                     {{"PATH", "/usr/bin:/bin"}}, dir + "/perf.log");
      if (perf > 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
      const CommitTotals commits0 = routes_only ? CommitTotals{} : scrape_commits(port);
      const double server_cpu0 = cpu_seconds(pid), own_cpu0 = cpu_seconds(0);
      p.measured = run_load(o, rest);
      server_cpu = cpu_seconds(pid) - server_cpu0;
      own_cpu = cpu_seconds(0) - own_cpu0;
      const CommitTotals commits1 = routes_only ? CommitTotals{} : scrape_commits(port);
      if (commits0.ok && commits1.ok && commits1.commits > commits0.commits) {
        committer_busy = (commits1.seconds - commits0.seconds) / p.measured.seconds;
        commit_batch = (commits1.deliveries - commits0.deliveries) / (commits1.commits - commits0.commits);
      }
      if (perf > 0) {
        kill(perf, SIGINT);
        int st = 0;
        waitpid(perf, &st, 0);
      }
      p.acked = p.warm.acked_indices;
      for (std::uint32_t i : p.measured.acked_indices) p.acked.push_back(static_cast<std::uint32_t>(i + w));
    }
    print_summary("c=" + std::to_string(c), p.measured);
    const double answered = static_cast<double>(p.measured.latencies_ms.size());
    std::printf(
        "           CPU: server %.2f s (%.0f us per request, %.0f %% of 2 cores), load generator %.2f s "
        "(%.0f us per request)\n",
        server_cpu, server_cpu * 1e6 / answered, server_cpu / p.measured.seconds / 2 * 100, own_cpu,
        own_cpu * 1e6 / answered);
    if (committer_busy >= 0)
      std::printf(
          "           group commit: %.1f deliveries per transaction, committer busy %.0f %% of the time "
          "(orch_inbox_commit_* on /metrics)\n",
          commit_batch, committer_busy * 100);

    const long rss_kb = proc_status_kb(pid, "VmRSS"), hwm_kb = proc_status_kb(pid, "VmHWM");
    ExactlyOnce once = check_inbox(sc.data_dir + "/orch.db", set, p.acked);
    long long pending = -1;
    {
      SQLite::Database db(sc.data_dir + "/orch.db", SQLite::OPEN_READONLY);
      db.setBusyTimeout(10000);
      pending = db.execAndGet("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").getInt64();
    }
    const int code = stop_process(pid);
    std::printf(
        "           inbox: %llu rows, exactly-once %s (missing %llu, duplicated %llu, unacknowledged %llu); "
        "%lld still pending for the processor; server RSS %ld kB (peak %ld kB); exit %d\n",
        static_cast<unsigned long long>(once.rows), once.ok ? "OK" : "FAILED",
        static_cast<unsigned long long>(once.missing), static_cast<unsigned long long>(once.duplicated),
        static_cast<unsigned long long>(once.unacknowledged), pending, rss_kb, hwm_kb, code);

    const bool ok = once.ok && p.measured.wrong_answers == 0 && p.warm.wrong_answers == 0 &&
                    p.measured.transport_errors == 0 && p.measured.acked > 0;
    all_ok = all_ok && ok;
    nlohmann::json metrics = load_metrics(p.measured);
    metrics["server_rss_kb"] = rss_kb;
    metrics["server_peak_rss_kb"] = hwm_kb;
    metrics["pending_after"] = pending;
    metrics["server_cpu_us_per_request"] = server_cpu * 1e6 / answered;
    metrics["loadgen_cpu_us_per_request"] = own_cpu * 1e6 / answered;
    if (committer_busy >= 0) {
      metrics["committer_busy_fraction"] = committer_busy;
      metrics["commit_batch_mean"] = commit_batch;
    }
    nlohmann::json info = load_info(p.measured);
    info.update({{"concurrency", c},
                 {"server", f.get("server", "orch")},
                 {"threads", o.threads},
                 {"idle_processor", f.has("idle-processor")},
                 {"accept_gzip", o.accept_gzip},
                 {"body_bytes", set.body_bytes},
                 {"warmup", warmup},
                 {"exactly_once", once.ok},
                 {"inbox_rows", once.rows},
                 {"missing", once.missing},
                 {"duplicated", once.duplicated},
                 {"unacknowledged_rows", once.unacknowledged},
                 {"ok", ok}});
    emit_result(out, f.get("label", "ingest") + "_c" + std::to_string(c), metrics, info);
    if (!f.has("keep")) std::filesystem::remove_all(dir);
  }
  return all_ok ? 0 : 1;
}

// --pg-replicas 1,2,3: for each count, a fresh database on a throwaway PostgreSQL server made durable as production
// runs it (fsync, synchronous_commit and full_page_writes on), that many `orch serve` replicas on it, and the load
// round-robin over them at each --concurrency; afterwards every acknowledged delivery must be in the shared inbox
// exactly once. Results as ingest_pg<N>_c<level>. The replicas and the server share this machine's cores.
int pg_replicas_mode(const Flags& f) {
  const std::string orch = f.get("orch");
  const std::string work = f.get("work", "bench-work");
  const std::string out = f.get("out");
  const auto counts = f.nums("pg-replicas", {1, 2, 3});
  const auto levels = f.nums("concurrency", {64});
  const std::size_t requests = static_cast<std::size_t>(f.num("requests", 60000));
  const std::size_t warmup = static_cast<std::size_t>(f.num("warmup", 3000));
  if (orch.empty()) {
    std::cerr << "bench_ingest --pg-replicas needs --orch PATH\n";
    return 2;
  }
  testing::FakePlane plane;
  const PlaneBodySpec spec = set_up_plane(plane, f);
  const std::int64_t t_server = now_ns();
  std::unique_ptr<testing::PgServer> server = testing::PgServer::start();
  {
    testing::PgSql admin(server->admin_url());
    for (const char* knob : {"fsync", "synchronous_commit", "full_page_writes"})
      admin.exec(std::string("ALTER SYSTEM SET ") + knob + " = on");
    admin.exec("SELECT pg_reload_conf()");
  }
  std::printf("ingest pg: PostgreSQL server up in %.1f s (%s)\n", seconds_since(t_server),
              server->socket_dir().c_str());

  bool all_ok = true;
  int run = 0;
  for (long long n : counts)
    for (long long c : levels) {
      RequestSet set =
          make_requests(spec, kSecret, static_cast<std::uint64_t>(run) * 10000000ULL, requests + warmup, 2);
      const std::string url = server->fresh_database();
      const std::string dir = work + "/ingest-pg" + std::to_string(n) + "-c" + std::to_string(c) + "-" +
                              std::to_string(getpid()) + "-" + std::to_string(run++);
      std::filesystem::remove_all(dir);
      struct Replica {
        pid_t pid = -1;
        int port = 0;
      };
      std::vector<Replica> replicas;
      LoadOptions o;
      bool up = true;
      for (long long i = 0; i < n && up; ++i) {
        const std::string rdir = dir + "/r" + std::to_string(i);
        const ServeConfig sc = prepare_serve_dir(rdir, plane.base_url());
        Replica r;
        r.port = free_port();
        r.pid = spawn({orch, "serve", "--config", rdir + "/orch.toml"},
                      serve_env(rdir, sc.data_dir, r.port, plane.base_url(),
                                {{"ORCH_DATABASE_URL", url}, {"ORCH_REPLICA_ID", "r" + std::to_string(i)}}),
                      rdir + "/orch.log");
        replicas.push_back(r);
        up = wait_healthy(r.pid, r.port);  // one by one: the first migrates the fresh database
        if (!up) std::cerr << "orch serve replica " << i << " did not come up; see " << rdir << "/orch.log\n";
        o.targets.push_back(Target{"127.0.0.1", r.port, "/webhooks/plane"});
      }
      if (!up) {
        for (const Replica& r : replicas) stop_process(r.pid);
        return 1;
      }
      o.concurrency = static_cast<int>(c);
      o.threads = static_cast<int>(f.num("threads", 2));
      o.dup_every = static_cast<int>(f.num("dup-every", 10));
      o.accept_gzip = !f.has("no-gzip");
      Phases p = load_in_phases(o, set, warmup);
      print_summary("pg x" + std::to_string(n) + " c=" + std::to_string(c), p.measured);
      ExactlyOnce once = check_pg_inbox(url, set, p.acked);
      int exits = 0;
      for (const Replica& r : replicas) exits |= stop_process(r.pid);
      std::printf(
          "           shared inbox: %llu rows, exactly-once %s (missing %llu, duplicated %llu, unacknowledged "
          "%llu); replicas exit %d\n",
          static_cast<unsigned long long>(once.rows), once.ok ? "OK" : "FAILED",
          static_cast<unsigned long long>(once.missing), static_cast<unsigned long long>(once.duplicated),
          static_cast<unsigned long long>(once.unacknowledged), exits);
      // A replica that needs SIGKILL (stop_process's grace) with a backlog in the inbox is a failed check too.
      const bool ok = once.ok && exits == 0 && p.measured.wrong_answers == 0 && p.warm.wrong_answers == 0 &&
                      p.measured.transport_errors == 0 && p.measured.acked > 0;
      all_ok = all_ok && ok;
      nlohmann::json info = load_info(p.measured);
      info.update({{"concurrency", c},
                   {"replicas", n},
                   {"store", "postgresql"},
                   {"exactly_once", once.ok},
                   {"replicas_exit", exits},
                   {"inbox_rows", once.rows},
                   {"missing", once.missing},
                   {"duplicated", once.duplicated},
                   {"unacknowledged_rows", once.unacknowledged},
                   {"ok", ok}});
      emit_result(out, "ingest_pg" + std::to_string(n) + "_c" + std::to_string(c), load_metrics(p.measured), info);
      if (!f.has("keep")) std::filesystem::remove_all(dir);
    }
  return all_ok ? 0 : 1;
}

int target_mode(const Flags& f) {
  LoadOptions o;
  for (const std::string& t : f.all("target")) o.targets.push_back(parse_target(t));
  o.concurrency = static_cast<int>(f.num("concurrency", 16));
  o.threads = static_cast<int>(f.num("threads", 2));
  o.dup_every = static_cast<int>(f.num("dup-every", 10));
  o.accept_gzip = !f.has("no-gzip");
  PlaneBodySpec spec;
  spec.project_id = f.get("project-id", kProjectId);
  if (f.has("state-id")) spec.state_id = f.get("state-id");
  spec.target_bytes = static_cast<std::size_t>(f.num("body-bytes", 1536));
  const std::size_t requests = static_cast<std::size_t>(f.num("requests", 60000));
  const std::size_t warmup = static_cast<std::size_t>(f.num("warmup", 3000));
  // A fresh range of numbers per invocation unless told: a second run against the same inbox must not collide.
  const std::uint64_t first = static_cast<std::uint64_t>(f.num("first", static_cast<long long>(time(nullptr)) * 1000));
  RequestSet set = make_requests(spec, f.get("secret", kSecret), first, requests + warmup, 2);
  Phases p = load_in_phases(o, set, warmup);
  print_summary("c=" + std::to_string(o.concurrency), p.measured);
  if (f.has("acked-out")) {
    std::ofstream a(f.get("acked-out"));
    for (std::uint32_t i : p.acked) a << set.requests[i].delivery_id << "\n";
  }
  ExactlyOnce once;
  if (f.has("verify-db")) {
    once = check_inbox(f.get("verify-db"), set, p.acked);
    std::printf("           inbox: exactly-once %s (missing %llu, duplicated %llu, unacknowledged %llu)\n",
                once.ok ? "OK" : "FAILED", static_cast<unsigned long long>(once.missing),
                static_cast<unsigned long long>(once.duplicated), static_cast<unsigned long long>(once.unacknowledged));
  }
  nlohmann::json info = load_info(p.measured);
  info["concurrency"] = o.concurrency;
  info["targets"] = f.all("target");
  if (once.ran) info["exactly_once"] = once.ok;
  emit_result(f.get("out"), f.get("label", "ingest_c" + std::to_string(o.concurrency)), load_metrics(p.measured), info);
  const bool ok = p.measured.wrong_answers == 0 && p.warm.wrong_answers == 0 && (!once.ran || once.ok);
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace orch::bench

int main(int argc, char** argv) {
  try {
    orch::bench::Flags f(argc, argv);
    if (f.has("route-server")) return orch::bench::route_server(f);
    if (f.has("serve")) return orch::bench::serve_mode(f);
    if (f.has("pg-replicas")) return orch::bench::pg_replicas_mode(f);
    if (f.has("target")) return orch::bench::target_mode(f);
    std::cerr << "usage: bench_ingest --serve --orch PATH --work DIR | --target URL [--target URL ...] (see the top "
                 "of bench/ingest.cpp)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "bench_ingest: " << e.what() << "\n";
    return 1;
  }
}
