#include "app/wiring.h"

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

namespace orch {
namespace {

HttpClientOptions client_options(const std::string& name, const std::string& base_url, const Secret& secret,
                                 int max_attempts, Telemetry& telemetry) {
  HttpClientOptions o;
  o.telemetry = &telemetry;
  o.name = name;
  o.base_url = base_url;
  o.max_attempts = max_attempts;
  if (!secret.empty()) o.redact.push_back(secret);
  return o;
}

HttpClientOptions paced(HttpClientOptions o, RatePacer& pacer, int reserve = 0) {
  o.pacer = &pacer;
  o.pacer_reserve = reserve;
  return o;
}

const Secret& reviewer_token(const Settings& s) {
  return s.gitea_review_token.empty() ? s.gitea_token : s.gitea_review_token;
}

WriteBackOptions write_back_options(const Settings& s) {
  WriteBackOptions o;
  o.enabled = s.plane_write_back;
  o.public_url = s.public_url;
  o.gitea_base_url = s.gitea_base_url;
  return o;
}

OutboxOptions channel_options(std::string_view channel) {
  OutboxOptions o;
  o.channel = std::string(channel);
  return o;
}

GitOptions git_options(const Settings& s) {
  GitOptions o;
  o.gitea_base_url = s.gitea_base_url;
  return o;
}

WebhookRouteOptions route_options(const Settings& s, Telemetry& telemetry) {
  WebhookRouteOptions o;
  o.telemetry = &telemetry;
  o.max_body_bytes = s.config.server.max_body_bytes;
  // One lane per configured project, whichever source speaks of it: a task's Plane and Gitea events are handled one
  // at a time, in arrival order, even when several replicas share the inbox.
  std::map<std::string, std::string> lanes;
  for (const ProjectSpec& p : s.config.projects) {
    lanes["plane:" + match_key(p.plane_project_id)] = "project:" + p.name;
    lanes["gitea:" + match_key(p.gitea_repo)] = "project:" + p.name;
  }
  o.lane_of = [lanes = std::move(lanes)](Source source, const std::string& key) {
    std::string raw = std::string(source_name(source)) + ":" + match_key(key);
    auto it = lanes.find(raw);
    return it != lanes.end() ? it->second : raw;
  };
  return o;
}

WorkerOptions worker_options(const Settings& s, Telemetry& telemetry) {
  WorkerOptions o = worker_options_from(s.config.jobs);
  o.limits = job_limits(s.config);
  o.scope = server_claim_scope(s.config);
  o.telemetry = &telemetry;
  o.replica_id = s.replica_id;
  return o;
}

RunnerRoutesOptions runner_routes_options(const Settings& s, const WorkerOptions& workers) {
  RunnerRoutesOptions o;
  o.replica_id = s.replica_id;
  o.heartbeat_interval = workers.heartbeat_interval;
  o.log_cap_bytes = workers.log_cap_bytes;
  return o;
}

WorkerOptions with_write_back(WorkerOptions o, WriteBack& write_back, JobReporter& reporter) {
  o.write_back = &write_back;
  o.reporter = &reporter;
  return o;
}

InboxProcessorOptions inbox_options(const Settings& s, Telemetry& telemetry) {
  InboxProcessorOptions o;
  o.claimer = s.replica_id;
  o.claim_lease = s.inbox_claim_lease;
  o.telemetry = &telemetry;
  return o;
}

GraceFn grace_fn(const Settings& s) {
  return [&s](const std::string& stage) { return s.grace_for(stage); };
}

}  // namespace

bool is_postgres_url(const std::string& url) {
  return url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0;
}

Result<OpenedStore> open_store(const Settings& settings) {
  if (!settings.database_url.empty()) {
    if (!is_postgres_url(settings.database_url))
      return invalid("ORCH_DATABASE_URL (or [store] url) must be a postgresql:// URL, got '" +
                     PgStore::redact(settings.database_url) + "'; unset it for the embedded SQLite store");
    PgStoreOptions store_options;
    store_options.application_name = "orch:" + settings.replica_id;  // the elector's name too: see below
    store_options.claims_lapse_without_session = true;               // a dead replica frees its lane at once
    auto pg = PgStore::open(settings.database_url, store_options);
    if (!pg.ok()) return pg.status();
    OpenedStore opened;
    opened.version_at_open = pg.value()->version_at_open();
    opened.schema_version = PgStore::kSchemaVersion;
    opened.description = "PostgreSQL database " + pg.value()->redacted_url();
    opened.shared = true;
    opened.store = std::move(pg).value();
    return opened;
  }
  std::error_code ec;
  std::filesystem::create_directories(settings.data_dir, ec);
  if (ec) return invalid("cannot create data directory " + settings.data_dir + ": " + ec.message());
  const std::string path = DataLayout(settings.data_dir).database().string();
  auto sqlite = SqliteStore::open(path);
  if (!sqlite.ok()) return sqlite.status();
  OpenedStore opened;
  opened.version_at_open = sqlite.value()->version_at_open();
  opened.schema_version = SqliteStore::kSchemaVersion;
  opened.description = "SQLite file " + path;
  opened.checkpoints = [s = sqlite.value().get()] { return s->checkpoints(); };
  opened.store = std::move(sqlite).value();
  return opened;
}

std::unique_ptr<Leadership> make_leadership(const Settings& settings, bool shared,
                                            const std::shared_ptr<LeaderListener>& leader_changed) {
  if (!shared) return std::make_unique<SoleReplica>(settings.replica_id);
  PgLeaderOptions leader_options;
  leader_options.takeover_within = std::chrono::duration_cast<std::chrono::milliseconds>(settings.leader_takeover);
  leader_options.on_change = [leader_changed](bool leading) { leader_changed->notify(leading); };
  // The store's application_name is "orch:<replica id>" too: the elector names itself the same way.
  return std::make_unique<PgLeaderElector>(settings.database_url, settings.replica_id, std::move(leader_options));
}

Result<std::unique_ptr<App>> App::open(Settings settings, spdlog::logger& log) {
  auto store = open_store(settings);
  if (!store.ok()) return store.status();
  return std::unique_ptr<App>(new App(std::move(settings), log, std::move(store).value()));
}

App::App(Settings settings, spdlog::logger& log, OpenedStore store)
    : settings_(std::move(settings)),
      log_(log),
      store_(std::move(store.store)),
      leader_changed_(std::make_shared<LeaderListener>()),
      leadership_(make_leadership(settings_, store.shared, leader_changed_)),
      metrics_(*store_, *leadership_),
      pipeline_(settings_.config),
      layout_(settings_.data_dir),
      plane_http_(paced(client_options("plane", settings_.plane_base_url, settings_.plane_api_key, 4, metrics_),
                        plane_pacer_, kPlaneReadReserve),
                  sleeper_, clock_, log_),
      plane_write_http_(
          paced(client_options("plane", settings_.plane_base_url, settings_.plane_api_key, 4, metrics_), plane_pacer_),
          sleeper_, clock_, log_),
      gitea_http_(client_options("gitea", settings_.gitea_base_url, settings_.gitea_token, 4, metrics_), sleeper_,
                  clock_, log_),
      gitea_review_http_(client_options("gitea", settings_.gitea_base_url, reviewer_token(settings_), 4, metrics_),
                         sleeper_, clock_, log_),
      // The outbox, not the request, waits and retries Telegram: one attempt per send.
      telegram_http_(client_options("telegram", settings_.telegram_api_base, settings_.telegram_bot_token, 1, metrics_),
                     sleeper_, clock_, log_),
      plane_(plane_http_, settings_.plane_api_key),
      plane_writer_(plane_write_http_, settings_.plane_api_key),
      gitea_(gitea_http_, settings_.gitea_token,
             GiteaClientOptions{.official_reviews_only = settings_.config.gitea_official_reviews_only}),
      gitea_reviewer_(gitea_review_http_, reviewer_token(settings_),
                      GiteaClientOptions{.official_reviews_only = settings_.config.gitea_official_reviews_only}),
      write_back_plan_(settings_.config, pipeline_, write_back_options(settings_)),
      gates_(settings_.config, gitea_, plane_, processes_, layout_),
      bus_(log_),
      write_back_(*store_, write_back_plan_, clock_),
      reporter_(write_back_),
      engine_(*store_, pipeline_, gates_, bus_, clock_, log_, write_back_plan_),
      git_(layout_, processes_, settings_.gitea_token, log_, git_options(settings_)),
      lifecycle_(git_, settings_.config, pipeline_),
      attempts_(*store_, pipeline_, write_back_, clock_, log_, worker_options(settings_, metrics_).attempts),
      job_runner_(JobRunnerDeps{.store = *store_,
                                .engine = engine_,
                                .attempts = attempts_,
                                .git = git_,
                                .processes = processes_,
                                .code_host = gitea_,
                                .config = settings_.config,
                                .layout = layout_,
                                .clock = clock_,
                                .log = log_},
                  with_write_back(worker_options(settings_, metrics_), write_back_, reporter_)),
      pool_(job_runner_, *store_, clock_, log_, [this](const TaskRow& task) { return lifecycle_.remove(task); }),
      runner_dispatch_(pool_),
      scheduler_(*store_, pipeline_, clock_, log_, runner_dispatch_),
      handlers_(*store_, engine_, plane_, gitea_, settings_.config, clock_, log_, write_back_),
      dispatcher_(handlers_, settings_.config),
      inbox_(*store_, dispatcher_, clock_, log_, inbox_options(settings_, metrics_)),
      webhook_routes_(*store_, clock_, log_,
                      WebhookSecrets{settings_.plane_webhook_secret, settings_.gitea_webhook_secret,
                                     settings_.allow_unsigned_webhooks},
                      route_options(settings_, metrics_)),
      gate_side_(*store_, engine_, clock_, log_, grace_fn(settings_),
                 GateSideOptions{.max_candidates_per_pass = settings_.reconciler.max_candidates_per_pass}),
      tracker_side_(settings_.config.projects, pipeline_, plane_, handlers_, *store_, clock_, log_,
                    grace_fn(settings_)),
      sweeper_(*store_, attempts_, pipeline_, settings_.config.jobs, clock_, log_, runner_dispatch_),
      pass_(ReconcileParts{.store = *store_,
                           .gate = gate_side_,
                           .tracker = &tracker_side_,
                           .sweeper = &sweeper_,
                           .leadership = *leadership_,
                           .telemetry = metrics_},
            clock_, log_,
            ReconcileDefaults{settings_.reconciler.enabled, settings_.reconciler.plane_enabled,
                              settings_.reconciler.notify_unblock, settings_.reconciler.interval}),
      reconciler_(pass_, settings_.reconciler.interval, log_),
      sender_(settings_.telegram_bot_token.empty()
                  ? std::unique_ptr<NotificationSender>(std::make_unique<LogOnlySender>(log_))
                  : std::make_unique<TelegramSender>(telegram_http_, settings_.telegram_bot_token,
                                                     settings_.telegram_chat_id)),
      outbox_(*store_, *sender_, clock_, log_),
      outbox_thread_("outbox", std::chrono::seconds(5), [this] { outbox_.drain_once(); }),
      plane_sender_(
          plane_writer_, settings_.config,
          [this](const std::string& user_id) { dispatcher_.add_plane_echo_actor(user_id); }, log_),
      gitea_sender_(gitea_, gitea_reviewer_, log_),
      plane_outbox_(*store_, plane_sender_, clock_, log_, channel_options(kChannelPlane)),
      gitea_outbox_(*store_, gitea_sender_, clock_, log_, channel_options(kChannelGitea)),
      write_back_thread_("write-back", settings_.write_back_interval,
                         [this] {
                           plane_outbox_.drain_once();
                           gitea_outbox_.drain_once();
                         }),
      queue_page_(*store_, clock_, settings_.config, layout_, queue_defaults(settings_),
                  waiting_rules(settings_, pipeline_), QueueLinks{settings_.plane_base_url, settings_.gitea_base_url},
                  leadership_.get(), &webhook_routes_.refusals()),
      runner_routes_(RunnerRoutesDeps{.store = *store_,
                                      .runner = job_runner_,
                                      .dispatch = runner_dispatch_,
                                      .git = git_,
                                      .config = settings_.config,
                                      .clock = clock_,
                                      .log = log_},
                     runner_routes_options(settings_, job_runner_.options())) {
  // Independent of one another: the scheduler wakes the pool itself, and a worker removes a done task's worktree.
  subscribe_audit_log(bus_, log_);
  lifecycle_.subscribe_to(bus_, pool_);
  scheduler_.subscribe_to(bus_);
  metrics_.subscribe_to(bus_);
  if (store.checkpoints) metrics_.watch_checkpoints(std::move(store.checkpoints));
  metrics_.set_runner_stale(settings_.config.jobs.heartbeat_stale);
  webhook_routes_.set_on_stored([this] { inbox_.poke(); });
  register_routes();
}

App::~App() { stop(); }

void App::register_routes() {
  auto& r = http_.routes();
  webhook_routes_.register_routes(r);
  r.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  metrics_.instrument(r);
  metrics_.register_routes(r, settings_.metrics_token);
  queue_page_.register_routes(r, settings_.admin_token);
  runner_routes_.register_on(r);
  register_admin_routes(
      r, settings_.admin_token,
      AdminDeps{*store_, inbox_, reconciler_, pool_, attempts_, pipeline_, settings_.config, engine_, clock_, log_});
  register_readiness(r, serve_readiness_checks(ReadinessSources{.store = *store_,
                                                                .inbox = inbox_,
                                                                .pool = pool_,
                                                                .workers = job_runner_.options().workers,
                                                                .reconciler = reconciler_,
                                                                .outbox = outbox_thread_,
                                                                .write_back = write_back_thread_,
                                                                .clock = clock_}));
}

Status App::start() {
  if (started_) return {};
  for (const std::string& w : settings_.warnings) log_.warn("settings: {}", w);
  if (settings_.telegram_bot_token.empty())
    log_.warn("notifications: ORCH_TELEGRAM_BOT_TOKEN is not set; notifications are logged instead of sent");

  // Agents' orphaned grandchildren are re-parented to us and reaped, not to init.
  ProcessRunner::become_child_subreaper();
  RecoveryReport recovered = recover_interrupted_jobs(*store_, attempts_, settings_.replica_id, clock_, log_);
  if (recovered.requeued + recovered.blocked > 0)
    log_.info("start-up: {} interrupted job(s) requeued, {} task(s) blocked", recovered.requeued, recovered.blocked);
  auto replayed = engine_.replay_non_terminal();
  if (!replayed.ok()) return replayed.status();
  log_.info("start-up: replayed {} non-terminal task(s) through the bus", replayed.value());

  if (Status s = check_plane_states(); !s.ok()) return s;

  // Consumers first, then producers: nothing is accepted before what handles it runs.
  outbox_thread_.start();
  write_back_thread_.start();
  inbox_.start();
  pool_.start();
  // A replica that just took over runs its first pass now, not one interval later.
  leader_changed_->listen([this](bool leading) {
    log_.info("leadership: {} {}", settings_.replica_id, leading ? "now leads" : "no longer leads");
    if (leading) reconciler_.poke();
  });
  leadership_->start();  // before the reconciler, whose passes ask it
  reconciler_.start();
  webhook_routes_.start();
  if (Status s = http_.start(settings_.listen_host, settings_.listen_port); !s.ok()) {
    stop_threads();
    return s;
  }
  started_ = true;
  log_.info("orch serving on {}:{} (data in {})", settings_.listen_host, http_.port(), settings_.data_dir);
  return {};
}

void App::stop_threads() {
  webhook_routes_.stop();  // commits what was already accepted
  reconciler_.stop();      // before the pool: its passes move tasks and queue jobs, none of which may land mid-stop
  leadership_->stop();     // after the reconciler: a leader steps down only once its passes have ended
  leader_changed_->listen({});
  pool_.stop();  // stops running agents and requeues their jobs
  inbox_.stop();
  outbox_thread_.stop();
  write_back_thread_.stop();
}

// A state name orch would move items to must exist in each project: an unknown one is an error naming its line; an
// unreachable Plane is logged, and the writes wait in the outbox until it answers. orch's Plane user is learnt here
// too (the echo filter), and again before the first write if Plane could not be asked now.
Status check_plane_state_names(const Config& config, PlaneClient& plane) {
  const std::string file = std::filesystem::path(config.source_path).filename().string();
  for (const PlaneStateRef& ref : plane_state_refs(config)) {
    const ProjectSpec* project = config.find_project(ref.project);
    if (!project) continue;
    auto id = plane.state_id_by_name(*project, ref.state);
    if (id.ok()) continue;
    if (id.status().code == Code::kNotFound)
      return invalid(file + ":" + std::to_string(ref.line) + ": " + ref.key + ": Plane project " + ref.project +
                     " has no state '" + ref.state + "'");
    return unavailable("cannot check the Plane states of " + ref.project + " (" + ref.key +
                       "): " + id.status().message);
  }
  return {};
}

Status App::check_plane_states() {
  if (!settings_.plane_write_back) {
    log_.info("write-back: off ([plane] write_back / ORCH_PLANE_WRITE_BACK); nothing is written to Plane or Gitea");
    return {};
  }
  if (settings_.plane_api_key.empty()) return {};
  Status checked = check_plane_state_names(settings_.config, plane_writer_);
  if (checked.code == Code::kInvalid) return checked;
  if (!checked.ok()) log_.warn("write-back: {}; writes wait until Plane answers", checked.message);
  if (auto user = plane_sender_.learn_user(); !user.ok())
    log_.warn("write-back: cannot learn orch's Plane user yet: {}", user.status().message);
  return {};
}

void App::stop() {
  if (!started_) return;
  runner_dispatch_.close();  // the runners' long polls answer at once, so the HTTP server stops promptly
  http_.stop();              // nothing new arrives
  sleeper_.interrupt();      // outbound calls give up now (a Retry-After can be a minute): their work stays durable
  stop_threads();
  started_ = false;
  log_.info("orch stopped");
}

}  // namespace orch
