#include "app/commands.h"

#include <signal.h>

#include <fstream>
#include <functional>
#include <iostream>
#include <map>

#include "app/admin_actions.h"
#include "app/logging.h"
#include "app/queue_document.h"
#include "app/runner_agent.h"
#include "app/runner_registry.h"
#include "app/settings.h"
#include "app/wiring.h"
#include "engine/budget.h"
#include "engine/printable.h"

namespace orch {
namespace {

constexpr int kOk = 0;
constexpr int kFailed = 1;

int fail(const std::string& command, const Status& s) {
  std::cerr << "orch " << command << ": " << s.message << "\n";
  return kFailed;
}

Result<Settings> settings_for(const CommonOptions& common) { return load_settings(common.config, process_env()); }

// Blocks the shutdown signals in every thread (threads inherit the mask): the command takes them with sigwait.
sigset_t block_shutdown_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return signals;
}

// Starts a Runner, waits for SIGTERM/SIGINT (or a refused token), stops it: 0, or 1 when the token was refused.
int run_runner_command(RunnerSettings settings) {
  auto log = make_logger(false);
  sigset_t signals = block_shutdown_signals();
  ProcessRunner::become_child_subreaper();
  Runner runner(std::move(settings), *log);
  runner.start();
  // Wait for a signal, waking now and then to see whether the server refused the token.
  timespec tick{0, 200 * 1000 * 1000};
  int sig = -1;
  while (!runner.refused()) {
    sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) break;
  }
  if (sig == SIGTERM || sig == SIGINT)
    log->info("runner: received {}, handing running jobs back", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  runner.stop();
  return runner.refused() ? 1 : 0;
}

}  // namespace

int cmd_check_config(const std::string& file) {
  auto config = load_config(file);
  if (!config.ok()) {
    std::cerr << config.status().message << "\n";
    return kFailed;
  }
  // With an API key, the state names write-back moves items to are looked up in Plane too: a typo is an error naming
  // its line, an unreachable Plane only a warning (serve checks again at start-up).
  auto settings = make_settings(config.value(), process_env());
  if (settings.ok() && settings.value().plane_write_back && !settings.value().plane_api_key.empty() &&
      !plane_state_refs(config.value()).empty()) {
    SystemClock clock;
    RealSleeper sleeper;
    auto log = make_logger(false);
    HttpClientOptions o;
    o.name = "plane";
    o.base_url = settings.value().plane_base_url;
    o.max_attempts = 2;
    o.redact.push_back(settings.value().plane_api_key);
    HttpClient http(o, sleeper, clock, *log);
    PlaneClient plane(http, settings.value().plane_api_key);
    Status checked = check_plane_state_names(config.value(), plane);
    if (checked.code == Code::kInvalid) {
      std::cerr << checked.message << "\n";
      return kFailed;
    }
    if (!checked.ok()) std::cerr << "warning: " << checked.message << "\n";
  }
  std::cout << file << ": ok (" << config.value().projects.size() << " project(s), " << config.value().stages.size()
            << " stage(s), " << config.value().agents.size() << " agent(s))\n";
  return kOk;
}

int cmd_serve(const CommonOptions& common) {
  auto settings = settings_for(common);
  if (!settings.ok()) return fail("serve", settings.status());
  auto log = make_logger(settings.value().log_json);

  sigset_t signals = block_shutdown_signals();

  auto app = App::open(std::move(settings).value(), *log);
  if (!app.ok()) {
    log->error("cannot start: {}", app.status().message);
    return kFailed;
  }
  if (Status s = app.value()->start(); !s.ok()) {
    log->error("cannot start: {}", s.message);
    return kFailed;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  log->info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  app.value()->stop();
  return kOk;
}

int cmd_migrate(const CommonOptions& common) {
  auto settings = settings_for(common);
  if (!settings.ok()) return fail("migrate", settings.status());
  auto store = open_store(settings.value());
  if (!store.ok()) return fail("migrate", store.status());
  const OpenedStore& opened = store.value();
  std::cout << opened.description << " is at schema version " << opened.schema_version;
  if (opened.version_at_open != opened.schema_version) std::cout << " (migrated from " << opened.version_at_open << ")";
  std::cout << "\n";
  return kOk;
}

int cmd_status(const CommonOptions& common, bool json) {
  auto settings = settings_for(common);
  if (!settings.ok()) return fail("status", settings.status());
  auto store = open_store(settings.value());
  if (!store.ok()) return fail("status", store.status());
  SystemClock clock;
  // A shared store's elector is not started here (the CLI never leads): ask the database who leads instead.
  std::unique_ptr<Leadership> observed;
  if (store.value().shared) {
    auto leader = read_pg_leader(settings.value().database_url);
    if (!leader.ok()) std::cerr << "orch status: " << leader.status().message << "\n";
    observed = std::make_unique<ObservedLeadership>(settings.value().replica_id, leader.ok() ? leader.value() : "");
  }
  SoleReplica sole(settings.value().replica_id);
  const Pipeline pipeline(settings.value().config);
  auto doc = queue_document(*store.value().store, clock.now(), queue_defaults(settings.value()),
                            waiting_rules(settings.value(), pipeline), observed ? observed.get() : &sole);
  if (!doc.ok()) return fail("status", doc.status());
  const auto& d = doc.value();
  if (json) {
    std::cout << d.dump(2) << "\n";
    return kOk;
  }
  std::map<std::string, int> by_stage;
  for (const auto& t : d["tasks"]) by_stage[t["stage"].get<std::string>()]++;
  std::cout << "tasks by stage:";
  if (by_stage.empty()) std::cout << " none";
  for (const auto& [stage, n] : by_stage) std::cout << " " << stage << "=" << n;
  std::cout << "\n";
  for (const auto& t : d["tasks"])
    if (t["blocked"].get<bool>())
      std::cout << "  blocked: " << t["work_item_key"].get<std::string>() << " in " << t["stage"].get<std::string>()
                << ": " << printable(t["blocked_reason"].get<std::string>()) << "\n";
  for (const auto& t : d["tasks"])
    if (!t["blocked"].get<bool>() && t["waiting"].is_object())
      std::cout << "  waiting: " << t["work_item_key"].get<std::string>() << " in " << t["stage"].get<std::string>()
                << " (" << t["waiting"]["reason"].get<std::string>()
                << "): " << printable(t["waiting"]["text"].get<std::string>()) << "\n";
  std::map<std::string, int> by_status;
  for (const auto& j : d["jobs"]) by_status[j["status"].get<std::string>()]++;
  std::cout << "jobs:";
  if (by_status.empty()) std::cout << " none";
  for (const auto& [status, n] : by_status) std::cout << " " << status << "=" << n;
  std::cout << "\n";
  const auto& r = d["reconciler"];
  std::cout << "reconciler: " << (r["enabled"].get<bool>() ? "enabled" : "DISABLED") << ", tracker side "
            << (r["plane_enabled"].get<bool>() ? "enabled" : "DISABLED") << ", unblocked "
            << r["unblocked_total"].dump() << "\n";
  const auto& inbox = d["inbox"];
  std::cout << "inbox: received " << inbox["received"] << ", pending " << inbox["pending"] << ", failed "
            << inbox["failed"] << "\n";
  std::cout << "notifications: pending " << d["notifications"]["pending"] << ", sent " << d["notifications"]["sent"]
            << ", failed " << d["notifications"]["failed"] << "\n";
  return kOk;
}

namespace {

// `orch explain`'s document: the task, why it waits, its transitions, its jobs, the deliveries about it and the
// gate side's last look.
constexpr int kExplainDeliveries = 20;  // the last ones about the task

Result<nlohmann::json> explain_document(Store& store, const Settings& settings, const std::string& key, TimePoint now) {
  auto found = store.find_task_by_key(key);
  if (!found.ok()) return found.status();
  if (!found.value()) return not_found("no task " + key + " (orch knows work items by their key, e.g. SHOP-42)");
  const TaskRow* task = &*found.value();
  const Pipeline pipeline(settings.config);
  auto doc = queue_document(store, now, queue_defaults(settings), waiting_rules(settings, pipeline));
  if (!doc.ok()) return doc.status();
  nlohmann::json out;
  out["task"] = queue_task_json(*task);  // a task done for more than a day is not in the document
  out["task"]["waiting"] = nullptr;
  for (const auto& t : doc.value()["tasks"])
    if (t["id"] == task->id) out["task"] = t;
  auto transitions = store.transitions_for_task(task->id);
  if (!transitions.ok()) return transitions.status();
  out["transitions"] = nlohmann::json::array();
  for (const TransitionRow& tr : transitions.value()) out["transitions"].push_back(queue_transition_json(tr));
  auto jobs = store.jobs_for_task(task->id);
  if (!jobs.ok()) return jobs.status();
  out["jobs"] = nlohmann::json::array();
  for (const JobRow& j : jobs.value()) out["jobs"].push_back(queue_job_json(j));
  auto deliveries = store.delivery_ledger(kExplainDeliveries, task->id);
  if (!deliveries.ok()) return deliveries.status();
  out["deliveries"] = nlohmann::json::array();
  for (const LedgerEntry& e : deliveries.value()) out["deliveries"].push_back(queue_ledger_json(e));
  auto evaluations = store.current_gate_evaluations();
  if (!evaluations.ok()) return evaluations.status();
  out["gate"] = nullptr;
  for (const GateEvaluation& e : evaluations.value())
    if (e.task_id == task->id)
      out["gate"] = {{"stage", e.stage}, {"green", e.green}, {"why", e.why}, {"since", format_rfc3339(e.since)}};
  return out;
}

}  // namespace

int cmd_explain(const CommonOptions& common, const std::string& key, bool json) {
  auto settings = settings_for(common);
  if (!settings.ok()) return fail("explain", settings.status());
  auto store = open_store(settings.value());
  if (!store.ok()) return fail("explain", store.status());
  SystemClock clock;
  auto doc = explain_document(*store.value().store, settings.value(), key, clock.now());
  if (!doc.ok()) return fail("explain", doc.status());
  const auto& d = doc.value();
  if (json) {
    std::cout << d.dump(2) << "\n";
    return kOk;
  }
  const auto& t = d["task"];
  std::cout << key << ": " << printable(t["title"].get<std::string>()) << "\n";
  std::cout << "stage: " << t["stage"].get<std::string>() << " (since " << t["entered_stage_at"].get<std::string>()
            << ")\n";
  if (t["waiting"].is_object())
    std::cout << "waiting: " << t["waiting"]["reason"].get<std::string>() << ": "
              << printable(t["waiting"]["text"].get<std::string>()) << " (since "
              << t["waiting"]["since"].get<std::string>() << ")\n";
  else
    std::cout << "waiting: nothing (done)\n";
  std::cout << "spend: " << format_usd(*usd_to_micros(t["spend_usd"].get<double>())) << " USD"
            << (t["budget_raise_usd"].get<double>() > 0
                    ? " (budget raised by " + format_usd(*usd_to_micros(t["budget_raise_usd"].get<double>())) + " USD)"
                    : "")
            << "\n";
  if (d["gate"].is_object())
    std::cout << "gate: " << (d["gate"]["green"].get<bool>() ? "green" : "red") << ": "
              << printable(d["gate"]["why"].get<std::string>()) << " (since " << d["gate"]["since"].get<std::string>()
              << ")\n";
  std::cout << "transitions:\n";
  for (const auto& tr : d["transitions"])
    std::cout << "  " << tr["at"].get<std::string>() << " " << tr["from"].get<std::string>() << " -> "
              << tr["to"].get<std::string>() << " (" << tr["cause"].get<std::string>() << ")"
              << (tr["detail"].get<std::string>().empty() ? "" : ": " + printable(tr["detail"].get<std::string>()))
              << "\n";
  std::cout << "jobs:\n";
  for (const auto& j : d["jobs"])
    std::cout << "  #" << j["id"] << " " << j["stage"].get<std::string>() << " " << j["agent"].get<std::string>()
              << " attempt " << j["attempt"] << ": " << j["status"].get<std::string>()
              << (j["error"].is_string() ? ": " + printable(j["error"].get<std::string>()) : "")
              << (j["cost_usd"].get<double>() > 0
                      ? " (" + format_usd(*usd_to_micros(j["cost_usd"].get<double>())) + " USD, " +
                            std::to_string(j["tokens_in"].get<std::int64_t>()) + " tokens in, " +
                            std::to_string(j["tokens_out"].get<std::int64_t>()) + " out" +
                            (j["model"].get<std::string>().empty() ? ""
                                                                   : ", " + printable(j["model"].get<std::string>())) +
                            ")"
                      : "")
              << "\n";
  std::cout << "deliveries (newest first):\n";
  for (const auto& e : d["deliveries"]) {
    const std::string outcome = e["outcome"].get<std::string>();
    const std::string why =
        outcome == "duplicate" ? "of " + e["duplicate_of"].get<std::string>() : e["detail"].get<std::string>();
    std::cout << "  " << e["received_at"].get<std::string>() << " " << e["source"].get<std::string>() << " "
              << printable(e["event"].get<std::string>()) << " " << printable(e["delivery_id"].get<std::string>())
              << ": " << outcome << (why.empty() ? "" : ": " + printable(why)) << "\n";
  }
  return kOk;
}

int cmd_reconcile_switch(const CommonOptions& common, bool enable, bool plane_only) {
  auto settings = settings_for(common);
  if (!settings.ok()) return fail("reconcile", settings.status());
  auto store = open_store(settings.value());
  if (!store.ok()) return fail("reconcile", store.status());
  if (Status s = set_reconcile_switch(*store.value().store, enable, plane_only); !s.ok()) return fail("reconcile", s);
  std::cout << "reconciler" << (plane_only ? " tracker side" : "") << (enable ? " enabled" : " disabled")
            << " (a running server applies it on its next pass)\n";
  return kOk;
}

// The one-shot commands build the same App as `orch serve` (same handlers, same engine) without starting it.
namespace {
Result<std::unique_ptr<App>> quiet_app(const CommonOptions& common, std::shared_ptr<spdlog::logger>& log) {
  auto settings = settings_for(common);
  if (!settings.ok()) return settings.status();
  log = make_logger(settings.value().log_json, spdlog::level::warn);
  return App::open(std::move(settings).value(), *log);
}
}  // namespace

int cmd_replay(const CommonOptions& common, const std::string& delivery_id) {
  std::shared_ptr<spdlog::logger> log;
  auto app = quiet_app(common, log);
  if (!app.ok()) return fail("replay", app.status());
  auto result = app.value()->inbox().replay(delivery_id);
  if (!result.ok()) return fail("replay", result.status());
  std::cout << "delivery " << delivery_id << ": " << delivery_status_name(result.value().status);
  if (!result.value().detail.empty()) std::cout << " (" << result.value().detail << ")";
  std::cout << "\n";
  return result.value().status == DeliveryStatus::kFailed ? kFailed : kOk;
}

int cmd_reconcile_once(const CommonOptions& common, bool dry_run) {
  std::shared_ptr<spdlog::logger> log;
  auto app = quiet_app(common, log);
  if (!app.ok()) return fail("reconcile", app.status());
  PassReport report = app.value()->reconcile_pass().run_once(PassOptions{.dry_run = dry_run, .full_sweep = true});
  if (!report.ran) {
    std::cout << (report.error.empty() ? "reconciler is disabled; nothing done" : "reconciler did not run") << "\n";
    return report.error.empty() ? kOk : fail("reconcile", internal(report.error));
  }
  for (const std::string& line : report.lines(dry_run)) std::cout << line << "\n";
  if (report.unblocked.empty()) std::cout << (dry_run ? "nothing would change" : "nothing to do") << "\n";
  if (!report.error.empty()) return fail("reconcile", unavailable(report.error));
  return kOk;
}

namespace {

// An `orch task VERB KEY` action on the newest task of KEY, in the app the CLI opens: its answer printed by `say`,
// its refusal (or an unknown key) on stderr with exit 1.
int on_task(const CommonOptions& common, const char* verb, const std::string& key,
            const std::function<Result<TaskRow>(App&, TaskId)>& act, const std::function<void(const TaskRow&)>& say) {
  std::shared_ptr<spdlog::logger> log;
  auto app = quiet_app(common, log);
  if (!app.ok()) return fail(verb, app.status());
  auto found = app.value()->store().find_task_by_key(key);
  if (!found.ok()) return fail(verb, found.status());
  if (!found.value()) return fail(verb, not_found("no task " + key));
  auto task = act(*app.value(), found.value()->id);
  if (!task.ok()) return fail(verb, task.status());
  say(task.value());
  return kOk;
}

}  // namespace

int cmd_task_rerun(const CommonOptions& common, const std::string& key, const std::optional<std::string>& stage) {
  return on_task(
      common, "task rerun", key,
      [&](App& app, TaskId id) { return rerun_stage(app.engine(), app.store(), app.pipeline(), id, stage); },
      [&](const TaskRow& t) {
        std::cout << key << " re-runs " << t.stage << " (visit " << t.visit
                  << "): its agent starts after any job of the task still running\n";
      });
}

int cmd_task_resume(const CommonOptions& common, const std::string& key, double raise_usd) {
  const std::optional<MicroUsd> raise = usd_to_micros(raise_usd);
  if (!raise) return fail("task resume", invalid("--raise-budget must be between 0 and 1000000000 US dollars"));
  return on_task(
      common, "task resume", key,
      [&](App& app, TaskId id) {
        return resume_held_task(app.store(), app.settings().config, id, *raise, SystemClock().now());
      },
      [&](const TaskRow& t) {
        std::cout << key << " resumed in " << t.stage << " (spent " << format_usd(t.spend) << " USD, budget raised by "
                  << format_usd(t.budget_raise) << " USD in all)\n";
      });
}

int cmd_sweep_once(const CommonOptions& common) {
  std::shared_ptr<spdlog::logger> log;
  auto app = quiet_app(common, log);
  if (!app.ok()) return fail("sweep", app.status());
  SweepReport r = app.value()->sweeper().run_once();
  std::cout << "sweep: " << r.orphaned << " orphaned, " << r.timed_out << " timed out, " << r.expired << " expired, "
            << r.requeued << " undispatched queued again\n";
  return r.errors > 0 ? kFailed : kOk;
}

int cmd_job_cancel(const CommonOptions& common, JobId id) {
  std::shared_ptr<spdlog::logger> log;
  auto app = quiet_app(common, log);
  if (!app.ok()) return fail("job cancel", app.status());
  SystemClock clock;
  auto job =
      cancel_job(app.value()->store(), app.value()->attempts(), id, "by a person (orch job cancel)", clock.now());
  if (!job.ok()) return fail("job cancel", job.status());
  if (job.value().status == JobStatus::kRunning)
    std::cout << "job " << id << ": cancel requested; its worker or runner stops the agent at its next heartbeat\n";
  else
    std::cout << "job " << id << " cancelled (it was queued); its task is blocked\n";
  return kOk;
}

int cmd_runner(const RunnerCommand& o) {
  if (o.server.empty()) {
    std::cerr << "orch runner: say --server URL, or register, list or revoke (see --help)\n";
    return 2;
  }
  const EnvLookup env = process_env();
  std::string token;
  if (o.token_file) {
    std::ifstream in(*o.token_file);
    if (!in) return fail("runner", invalid("cannot read the token file " + *o.token_file));
    std::getline(in, token);
  } else if (auto t = env("ORCH_RUNNER_TOKEN")) {
    token = *t;
  }
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) return fail("runner", invalid("no token: pass --token-file F or set ORCH_RUNNER_TOKEN"));
  auto labels = parse_runner_labels(o.labels);
  if (!labels.ok()) return fail("runner", labels.status());
  RunnerSettings s;
  s.server = o.server;
  s.token = Secret(token);
  s.labels = labels.value();
  s.capacity = o.capacity;
  s.work_dir = o.work_dir;
  if (auto t = env("ORCH_GITEA_TOKEN")) s.gitea_token = Secret(*t);
  return run_runner_command(std::move(s));
}

int cmd_runner_register(const CommonOptions& common, const RunnerCommand& o) {
  auto settings = settings_for(common);
  if (!settings.ok()) return fail("runner register", settings.status());
  auto labels = parse_runner_labels(o.register_labels);
  if (!labels.ok()) return fail("runner register", labels.status());
  auto store = open_store(settings.value());
  if (!store.ok()) return fail("runner register", store.status());
  SystemClock clock;
  auto token = register_runner(*store.value().store, o.name, labels.value(), clock.now());
  if (!token.ok()) return fail("runner register", token.status());
  std::cerr << "runner " << o.name << " registered; its token (shown only now) follows on stdout\n";
  std::cout << token.value() << "\n";
  return kOk;
}

int cmd_runner_list(const CommonOptions& common, bool as_json) {
  auto settings = settings_for(common);
  if (!settings.ok()) return fail("runner list", settings.status());
  auto store = open_store(settings.value());
  if (!store.ok()) return fail("runner list", store.status());
  Store& st = *store.value().store;
  auto runners = st.runners();
  if (!runners.ok()) return fail("runner list", runners.status());
  auto running = st.jobs_with_status(JobStatus::kRunning, 5000);
  if (!running.ok()) return fail("runner list", running.status());
  SystemClock clock;
  const nlohmann::json doc =
      queue_runners_json(runners.value(), running.value(), clock.now(), settings.value().config.jobs.heartbeat_stale);
  if (as_json) {
    std::cout << doc.dump(2) << "\n";
    return kOk;
  }
  if (doc.empty()) std::cout << "no runners registered\n";
  for (const auto& r : doc) {
    std::string labels;
    for (const auto& l : r["labels"]) labels += (labels.empty() ? "" : ",") + l.get<std::string>();
    std::cout << r["name"].get<std::string>() << "  " << r["state"].get<std::string>()
              << (r["revoked"].get<bool>() ? " (revoked)" : "") << "  labels=" << (labels.empty() ? "-" : labels)
              << "  last_heartbeat="
              << (r["last_heartbeat_at"].is_null() ? "never" : r["last_heartbeat_at"].get<std::string>())
              << "  job=" << (r["job_id"].is_null() ? "-" : std::to_string(r["job_id"].get<JobId>())) << "\n";
  }
  return kOk;
}

int cmd_runner_revoke(const CommonOptions& common, const std::string& name) {
  auto settings = settings_for(common);
  if (!settings.ok()) return fail("runner revoke", settings.status());
  auto store = open_store(settings.value());
  if (!store.ok()) return fail("runner revoke", store.status());
  if (Status s = store.value().store->revoke_runner(name); !s.ok()) return fail("runner revoke", s);
  std::cout << "runner " << name << " revoked\n";
  return kOk;
}

}  // namespace orch
