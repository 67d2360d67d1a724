// bench/handling.cpp: benchmark 3, end-to-end handling. In process, the server's own pieces: SqliteStore, Dispatcher,
// Handlers, StageEngine with the real GateEvaluator, EventBus with the JobScheduler and the audit log, and the
// InboxProcessor; Gitea is the fake Gitea over loopback HTTP through the real GiteaClient (the CI gate reads the
// branch head and its combined status, two requests). N tasks wait in `development` with a recorded branch head and
// green CI; N Gitea `status` deliveries (one per task) are stored, then the processor drains them: deliveries per
// second from inbox to transition row (development -> review, plus the reviewer job it enqueues).
//
//   bench_handling --work DIR [--deliveries 2000] [--out results.jsonl]
#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/sinks/basic_file_sink.h>

#include <filesystem>
#include <unistd.h>
#include <iostream>

#include "bench/support/bench_util.h"
#include "bench/support/seed.h"
#include "engine/event_bus.h"
#include "engine/gates.h"
#include "engine/job_scheduler.h"
#include "engine/layout.h"
#include "engine/pipeline.h"
#include "engine/store/sqlite_store.h"
#include "engine/stage_engine.h"
#include "integrations/gitea_client.h"
#include "integrations/http_client.h"
#include "tests/fakes/fake_gitea.h"
#include "tests/support/pipelines.h"
#include "tests/support/table_facts.h"
#include "webhooks/handlers/dispatcher.h"
#include "webhooks/handlers/handlers.h"
#include "webhooks/inbox_processor.h"
#include "webhooks/signature.h"

int main(int argc, char** argv) {
  using namespace orch;
  using namespace orch::bench;
  try {
    Flags f(argc, argv);
    const std::string work = f.get("work", "bench-work") + "/handling-" + std::to_string(getpid());
    const int n = static_cast<int>(f.num("deliveries", 2000));
    std::filesystem::remove_all(work);
    std::filesystem::create_directories(work);
    const std::string db_path = work + "/orch.db";

    Config config = testing::default_config();
    const ProjectSpec& project = config.projects.front();
    testing::FakeGitea gitea;
    const std::string token = "gitea_bench_token";
    gitea.set_token(token);
    set_nodelay_on_listener(gitea.port());
    gitea.add_repo(project.gitea_repo);

    const TimePoint now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    {
      Seeder seed(db_path);
      for (int i = 1; i <= n; ++i) {
        SeedTask t;
        t.id = i;
        t.work_item_id = bench_uuid(4, static_cast<std::uint64_t>(i));
        t.work_item_key = "SHOP-" + std::to_string(i);
        t.branch = bench_branch(i);
        t.head_sha = bench_sha(i);
        t.created_at = t.entered_stage_at = t.updated_at = now - std::chrono::hours(1);
        seed.task(t);
        seed.job(SeedJob{i, 3, "development", "developer", "succeeded", now - std::chrono::hours(1),
                         now - std::chrono::minutes(50)});
        seed.branch_head(project.gitea_repo, t.branch, t.head_sha, now - std::chrono::minutes(50));
        gitea.set_branch(project.gitea_repo, t.branch, t.head_sha);
        gitea.add_status(project.gitea_repo, t.head_sha, "ci/build", "success");
      }
    }
    auto opened = SqliteStore::open(db_path);
    if (!opened.ok()) throw std::runtime_error(opened.status().to_string());
    std::unique_ptr<SqliteStore> store = std::move(opened).value();

    // Store the deliveries first (not timed): what the routes would have committed.
    {
      std::vector<NewDelivery> batch;
      for (int i = 1; i <= n; ++i) {
        NewDelivery d;
        d.source = Source::kGitea;
        d.delivery_id = bench_uuid(5, static_cast<std::uint64_t>(i));
        d.event = "status";
        d.body = testing::go_json_marshal_indent(
            testing::FakeGitea::status_payload(project.gitea_repo, bench_sha(i), "ci/build", "success"));
        d.body_digest = sha256_hex(d.body);
        d.received_at = now;
        d.lane = "project:" + project.name;
        batch.push_back(std::move(d));
        if (batch.size() == 500 || i == n) {
          auto r = store->insert_deliveries(batch, std::vector<bool>(batch.size(), false));
          if (!r.ok()) throw std::runtime_error(r.status().to_string());
          batch.clear();
        }
      }
    }

    // The server's logger shape: a file sink at info, flushed on every info line.
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(work + "/orch.log", true);
    spdlog::logger log("orch", sink);
    log.set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%-5l%$ %v", spdlog::pattern_time_type::utc);
    log.set_level(spdlog::level::info);
    log.flush_on(spdlog::level::info);

    SystemClock clock;
    RealSleeper sleeper;
    HttpClientOptions ho;
    ho.name = "gitea";
    ho.base_url = gitea.base_url();
    HttpClient http(ho, sleeper, clock, log);
    GiteaClient gitea_client(http, Secret(token));
    testing::TableTracker tracker;
    testing::TableRunner runner;
    Pipeline pipeline(config);
    DataLayout layout(work + "/data");
    GateEvaluator gates(config, gitea_client, tracker, runner, layout);
    EventBus bus(log);
    StageEngine engine(*store, pipeline, gates, bus, clock, log);
    JobScheduler scheduler(*store, pipeline, clock, log);
    subscribe_audit_log(bus, log);
    scheduler.subscribe_to(bus);
    Handlers handlers(*store, engine, tracker, gitea_client, config, clock, log);
    Dispatcher dispatcher(handlers, config);
    InboxProcessor inbox(*store, dispatcher, clock, log);

    const std::int64_t t0 = now_ns();
    InboxPass total;
    while (true) {
      InboxPass p = inbox.run_once();
      total.handled += p.handled;
      total.ignored += p.ignored;
      total.failed += p.failed;
      if (p.handled + p.ignored + p.failed == 0) break;
    }
    const double s = seconds_since(t0);

    SQLite::Database db(db_path, SQLite::OPEN_READONLY);
    const long long transitions =
        db.execAndGet("SELECT COUNT(*) FROM transitions WHERE from_stage = 'development' AND to_stage = 'review'")
            .getInt64();
    const long long review_jobs = db.execAndGet("SELECT COUNT(*) FROM jobs WHERE stage = 'review'").getInt64();
    const long long gitea_requests = static_cast<long long>(gitea.request_count());
    std::printf(
        "handling: %d status deliveries in %.2f s: %.0f deliveries/s; %d handled, %d ignored, %d failed; "
        "%lld transitions development -> review, %lld reviewer jobs queued, %lld Gitea requests\n",
        n, s, n / s, total.handled, total.ignored, total.failed, transitions, review_jobs, gitea_requests);
    const bool ok = transitions == n && total.failed == 0;
    emit_result(f.get("out"), "handling", {{"deliveries_per_s", n / s}, {"ms_per_delivery", s * 1000 / n}},
                {{"deliveries", n},
                 {"handled", total.handled},
                 {"ignored", total.ignored},
                 {"failed", total.failed},
                 {"transitions", transitions},
                 {"review_jobs", review_jobs},
                 {"gitea_requests", gitea_requests},
                 {"ok", ok}});
    if (!f.has("keep")) std::filesystem::remove_all(work);
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "bench_handling: " << e.what() << "\n";
    return 1;
  }
}
