// tests/e2e/e2e_world.h: what the end-to-end tests share: a fake Plane, Gitea and Telegram, a local bare git
// repository as the project's remote (its post-receive hook tells the fake Gitea about every pushed branch head,
// synchronously, as a real Gitea learns them), a config file with script agents, and the real `orch serve` as a
// child process. The database is read directly (read-only) for what /queue.json does not list (succeeded jobs,
// every transition).
//
// By default one replica on the embedded SQLite file. With WorldOptions::postgres (implied by replicas > 1) every
// replica shares one fresh database on the tests' PostgreSQL server (tests/support/pg_server.h), each with its own
// ORCH_REPLICA_ID (r0, r1, ...), data directory, log file and fixed port, and webhooks go through a LoadBalancer
// (tests/e2e/load_balancer.h) that spreads them round-robin over the replicas not killed. rows() and count() read
// either database; their SQL is written once for both: parameters as $1, $2 ... and body_contains() for the one
// expression the two dialects spell differently.
#pragma once

#include <doctest/doctest.h>
#include <httplib.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/load_balancer.h"
#include "tests/fakes/fake_gitea.h"
#include "tests/fakes/fake_plane.h"
#include "tests/fakes/fake_telegram.h"
#include "tests/support/exposition.h"
#include "tests/support/orch_process.h"
#include "tests/support/pg_server.h"
#include "tests/support/temp_dir.h"

namespace orch::testing::e2e {

inline const std::string kWorkspace = "acme";
inline const std::string kProjectId = "4af0c6c4-5b8e-4d2a-9c61-0d3e7f2a91b5";
inline const std::string kRepo = "acme/shop";
inline const std::string kPlaneSecret = "plane_wh_e2e_5f0d1c2b3a4e5f60718293a4b5c6d7e8";
inline const std::string kGiteaSecret = "gitea_wh_e2e_s3cr3t";
inline const std::string kPlaneKey = "plane_api_e2e_key";
inline const std::string kGiteaToken = "gitea_e2e_token";
inline const std::string kAdminToken = "admin_e2e_token";  // replicated worlds only

// `n` copies of one Plane issue webhook body, each with another harmless field (sort_order), so that neither the
// delivery-id nor the body-digest dedup hides a race between them: every copy reaches a handler.
inline std::vector<std::string> distinct_copies(const std::string& body, int n) {
  const auto base = nlohmann::ordered_json::parse(body);
  std::vector<std::string> copies;
  for (int i = 0; i < n; ++i) {
    auto b = base;
    b["data"]["sort_order"] = 65535.0 + i;
    copies.push_back(python_json_dumps(b));
  }
  return copies;
}

// Delivers every body as a Plane "issue" webhook to `url`, all at once: one thread each, released together by a
// latch, one attempt each. The results are in the order of `bodies`.
inline std::vector<DeliveryResult> deliver_at_once(FakePlane& plane, const std::string& url,
                                                   const std::vector<std::string>& bodies) {
  std::vector<DeliveryResult> results(bodies.size());
  std::latch go(static_cast<std::ptrdiff_t>(bodies.size()));
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < bodies.size(); ++i)
    threads.emplace_back([&, i] {
      go.arrive_and_wait();
      results[i] = plane.deliver(url, kPlaneSecret, "issue", bodies[i]);
    });
  for (auto& t : threads) t.join();
  return results;
}

inline std::string agent_script(const std::string& name) {
  return std::string(ORCH_SOURCE_DIR) + "/tests/e2e/agents/" + name;
}

// Runs a shell command line; returns its exit code and (trimmed) stdout.
inline int sh(const std::string& command, std::string* out = nullptr) {
  std::string o;
  int code = run_capture({"/bin/sh", "-c", command}, {}, &o);
  while (!o.empty() && (o.back() == '\n' || o.back() == '\r')) o.pop_back();
  if (out) *out = o;
  return code;
}

inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The fifo that gated agents wait on (agents/gated.sh reads $E2E_RELEASE_FIFO until a writer opens and closes it).
class AgentGate {
 public:
  explicit AgentGate(const TempDir& dir) : path_(dir.file("release")) { REQUIRE(::mkfifo(path_.c_str(), 0600) == 0); }
  const std::string& path() const { return path_; }
  // Lets every gated agent that reads the fifo now go on; false when none does (a writer can open a fifo only while
  // a reader has it open).
  bool release_waiting() const {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_NONBLOCK);
    if (fd < 0) return false;
    ::close(fd);
    return true;
  }
  // Waits until a gated agent reads the fifo, then lets it go on; false at the deadline.
  bool release(std::chrono::milliseconds deadline = std::chrono::seconds(30)) const {
    return eventually([this] { return release_waiting(); }, deadline);
  }

 private:
  std::string path_;
};

struct WorldOptions {
  int workers = 4;
  int interval_s = 1;
  int grace_s = 2;
  bool reconcile = true;
  std::string analyst = "analyst.sh";
  std::string developer = "developer.sh";
  std::string reviewer = "reviewer.sh";
  std::string analyst_timeout = "2m";
  std::map<std::string, std::string> analyst_env{};
  std::map<std::string, std::string> developer_env{};
  std::string heartbeat_stale = "150s";  // [jobs] heartbeat_stale: when the sweeper fails a job of a dead worker
  std::string dispatch_timeout = "5m";   // [jobs] dispatch_timeout: a runner's claim whose agent never started
  std::string clone_url;                 // the project's clone_url; "": the world's bare repository
  // Issue 11: `replicas` orch serve processes on one PostgreSQL database; more than one implies postgres.
  int replicas = 1;
  bool postgres = false;
  int leader_takeover_s = 3;  // ORCH_LEADER_TAKEOVER_S (PostgreSQL only)
  // Issue 20: orch writes back to the fakes (comments, the review stage's "In Review", done_state "Done"). Off by
  // default: the other worlds test other things, and the writes share Plane's budget with the reconciler.
  bool write_back = false;
  int project_max_running = 0;  // issue 25: the project's `max_running` (0: not written)
  // Issue 22: `runs_on` of every agent (e.g. "agents"): runners run them, never the server's pool. "": not written.
  std::string runs_on;
};

class World {
 public:
  explicit World(WorldOptions options = {})
      : replicas(static_cast<std::size_t>(std::max(1, options.replicas))),
        orch(replicas[0]),
        options_(std::move(options)),
        replicated_(options_.postgres || options_.replicas > 1),
        alive_(new std::atomic<bool>[replicas.size()]) {
    data_dir = tmp.file(replicated_ ? "data-r0" : "data");
    bare = tmp.file("shop.git");
    config_path = tmp.file("orch.toml");
    log_path = tmp.file(replicated_ ? "orch-r0.log" : "orch.log");
    if (replicated_) {
      database_url = fresh_pg_database();
      pg_ = std::make_unique<PgSql>(database_url);
    }
    setup_fakes();
    start_hook_sink();
    setup_repo();
    write_config();
    std::map<std::string, std::string> env = {
        {"ORCH_DATA_DIR", data_dir},
        {"ORCH_PLANE_WEBHOOK_SECRET", kPlaneSecret},
        {"ORCH_GITEA_WEBHOOK_SECRET", kGiteaSecret},
        {"ORCH_PLANE_BASE_URL", plane.base_url()},
        {"ORCH_PLANE_API_KEY", kPlaneKey},
        {"ORCH_GITEA_BASE_URL", gitea.base_url()},
        {"ORCH_GITEA_TOKEN", kGiteaToken},
        {"ORCH_TELEGRAM_API_BASE", telegram.base_url()},
        {"ORCH_TELEGRAM_BOT_TOKEN", telegram.token()},
        {"ORCH_TELEGRAM_CHAT_ID", telegram.chat_id()},
        {"ORCH_RECONCILE_ENABLED", options_.reconcile ? "1" : "0"},
        {"ORCH_PLANE_WRITE_BACK", options_.write_back ? "1" : "0"},
        {"ORCH_RECONCILE_INTERVAL_S", std::to_string(options_.interval_s)},
        {"ORCH_RECONCILE_GRACE_DEFAULT_S", std::to_string(options_.grace_s)},
        {"ORCH_LOG_FORMAT", "text"},
    };
    if (!replicated_) {
      orch = std::make_unique<OrchProcess>(config_path, env, log_path);
      alive_[0] = false;
      return;
    }
    env["ORCH_DATABASE_URL"] = database_url;
    env["ORCH_LEADER_TAKEOVER_S"] = std::to_string(options_.leader_takeover_s);
    env["ORCH_ADMIN_TOKEN"] = kAdminToken;
    std::vector<int> ports;
    for (std::size_t i = 0; i < replicas.size(); ++i) {
      const std::string id = "r" + std::to_string(i);
      replica_ids.push_back(id);
      data_dirs.push_back(tmp.file("data-" + id));
      log_paths.push_back(tmp.file("orch-" + id + ".log"));
      ports.push_back(free_loopback_port());
      auto e = env;
      e["ORCH_REPLICA_ID"] = id;
      e["ORCH_DATA_DIR"] = data_dirs.back();
      // A fixed port per replica: the load balancer's backend list, and the same address after a restart.
      e["ORCH_LISTEN"] = "127.0.0.1:" + std::to_string(ports.back());
      replicas[i] = std::make_unique<OrchProcess>(config_path, e, log_paths.back());
      alive_[i] = false;
    }
    lb_ = std::make_unique<LoadBalancer>(ports);
    for (std::size_t i = 0; i < replicas.size(); ++i) lb_->set_down(i, true);
  }

  ~World() {
    join_helpers();
    for (auto& r : replicas) r.reset();  // SIGKILL if still running, before the fakes go
    lb_.reset();
    sink_.stop();
    if (sink_thread_.joinable()) sink_thread_.join();
  }

  bool replicated() const { return replicated_; }
  bool write_back() const { return options_.write_back; }
  bool on_postgres() const { return !database_url.empty(); }
  std::size_t replica_count() const { return replicas.size(); }

  // Starts every replica (each awaits its /healthz); the load balancer sends to each one once it is up.
  bool start() {
    for (std::size_t i = 0; i < replicas.size(); ++i)
      if (!start_replica(i)) return false;
    return true;
  }
  bool start_replica(std::size_t i) {
    if (!replicas[i]->start()) return false;
    alive_[i] = true;
    if (lb_) lb_->set_down(i, false);
    return true;
  }
  // SIGKILL, as a host dies: the load balancer stops choosing it first (its health check failed), then the process
  // goes; requests already forwarded to it get no answer and are re-sent to a live replica.
  void kill_replica(std::size_t i) {
    if (lb_) lb_->set_down(i, true);
    alive_[i] = false;
    replicas[i]->kill_hard();
  }
  bool alive(std::size_t i) const { return alive_[i].load(); }
  std::vector<std::size_t> live_replicas() const {
    std::vector<std::size_t> v;
    for (std::size_t i = 0; i < replicas.size(); ++i)
      if (alive(i)) v.push_back(i);
    return v;
  }
  // A replica that is running (the first one), for `orch status`, /queue.json and the like.
  // `orch ARGS... --config <the world's>` against replica 0's environment; its stdout in *out.
  int cli(std::vector<std::string> args, std::string* out = nullptr) const {
    args.insert(args.begin(), ORCH_BINARY);
    args.push_back("--config");
    args.push_back(config_path);
    return run_capture(args, orch->env(), out);
  }
  OrchProcess& live() {
    for (std::size_t i = 0; i < replicas.size(); ++i)
      if (alive(i)) return *replicas[i];
    return *orch;
  }
  LoadBalancer& lb() { return *lb_; }

  // A thread of the test that acts on the world while the test goes on (e.g. kills a replica at a chosen moment).
  // The world joins it before it goes, so it never outlives what it uses; it must end within its own deadlines.
  void helper(std::function<void()> fn) { helpers_.emplace_back(std::move(fn)); }
  void join_helpers() {
    for (auto& t : helpers_)
      if (t.joinable()) t.join();
    helpers_.clear();
  }

  // Every replica's log tail, each under a header naming it (the one log tail of a single replica as it is).
  std::string log_tails(std::size_t max_bytes = 8000) const {
    if (!replicated_) return orch->log_tail(max_bytes);
    std::string out;
    for (std::size_t i = 0; i < replicas.size(); ++i)
      out += "\n---- " + replica_ids[i] + (alive(i) ? "" : " (killed)") + " " + log_paths[i] + "\n" +
             replicas[i]->log_tail(max_bytes / replicas.size());
    return out;
  }

  // /metrics of replica i, parsed; nullopt when it does not answer.
  std::optional<Exposition> metrics(std::size_t i) const {
    httplib::Client c(replicas[i]->base_url());
    c.set_connection_timeout(std::chrono::seconds(2));
    c.set_read_timeout(std::chrono::seconds(5));
    auto r = c.Get("/metrics");
    if (!r || r->status != 200) return std::nullopt;
    return parse_exposition(r->body);
  }
  // The replica whose /metrics says orch_leader 1 (among the live ones), or nullopt when none says so.
  std::optional<std::size_t> leader() const {
    for (std::size_t i = 0; i < replicas.size(); ++i) {
      if (!alive(i)) continue;
      auto e = metrics(i);
      if (e && sum_samples(*e, "orch_leader", {"replica=\"" + replica_ids[i] + "\""}) == 1) return i;
    }
    return std::nullopt;
  }

  // Where the senders post: the one replica, or the load balancer in front of the replicas.
  std::string plane_url() const { return lb_ ? lb_->url("/webhooks/plane") : orch->url("/webhooks/plane"); }
  std::string gitea_url() const { return lb_ ? lb_->url("/webhooks/gitea") : orch->url("/webhooks/gitea"); }

  // A new Plane work item in Todo; returns its id.
  std::string add_item(const std::string& name) {
    PlaneWorkItemSeed seed;
    seed.name = name;
    seed.state_id = plane.state_id(kProjectId, "Todo");
    return plane.add_work_item(kProjectId, seed);
  }

  std::string bare_head(const std::string& branch) const {
    std::string out;
    if (sh("git -C " + quote(bare) + " rev-parse --verify -q refs/heads/" + quote(branch), &out) != 0) return "";
    return out;
  }

  std::vector<std::string> bare_branches() const {
    std::string out;
    sh("git -C " + quote(bare) + " for-each-ref --format='%(refname:short)' refs/heads/", &out);
    std::vector<std::string> v;
    size_t pos = 0;
    while (pos < out.size()) {
      size_t nl = out.find('\n', pos);
      if (nl == std::string::npos) nl = out.size();
      if (nl > pos) v.push_back(out.substr(pos, nl - pos));
      pos = nl + 1;
    }
    return v;
  }

  std::string database_path() const {
    // The layout decides the file name; find the one SQLite database in the data directory.
    for (const auto& e : std::filesystem::directory_iterator(data_dir))
      if (e.path().extension() == ".db" || e.path().extension() == ".sqlite") return e.path().string();
    return data_dir + "/orch.db";
  }

  std::unique_ptr<SQLite::Database> open_db() const {
    auto d = std::make_unique<SQLite::Database>(database_path(), SQLite::OPEN_READONLY);
    d->setBusyTimeout(5000);
    return d;
  }

  // Every row of a query, every column as text ("" for NULL), against whichever database the world runs on.
  // Parameters are $1, $2 ... (on SQLite they become ?1, ?2 ...), bound as text; on SQLite a text parameter
  // compared with an integer column takes the column's affinity, so "WHERE at >= $1" works on both.
  std::vector<std::vector<std::string>> rows(const std::string& sql,
                                             const std::vector<std::string>& params = {}) const {
    std::vector<std::vector<std::string>> out;
    if (pg_) {
      std::lock_guard lock(pg_mu_);
      return pg_->rows(sql, params);
    }
    static const std::regex dollar(R"(\$([0-9]+))");
    auto d = open_db();
    SQLite::Statement q(*d, std::regex_replace(sql, dollar, "?$1"));
    for (std::size_t i = 0; i < params.size(); ++i) q.bind(static_cast<int>(i + 1), params[i]);
    while (q.executeStep()) {
      std::vector<std::string> row;
      for (int c = 0; c < q.getColumnCount(); ++c)
        row.push_back(q.getColumn(c).isNull() ? std::string() : q.getColumn(c).getString());
      out.push_back(std::move(row));
    }
    return out;
  }

  long long count(const std::string& sql, const std::vector<std::string>& params = {}) const {
    if (!pg_ && params.empty()) {
      auto d = open_db();
      return d->execAndGet(sql).getInt64();
    }
    auto r = rows(sql, params);
    return r.empty() || r[0].empty() || r[0][0].empty() ? 0 : std::stoll(r[0][0]);
  }

  // SQL that is true when the deliveries row's body holds the text of parameter `param` (e.g. "$2").
  std::string body_contains(const std::string& param) const {
    return pg_ ? "strpos(convert_from(body, 'UTF8'), " + param + ") > 0"
               : "instr(CAST(body AS TEXT), " + param + ") > 0";
  }

  int pushes_seen() const { return pushes_.load(); }

  TempDir tmp;
  FakePlane plane;
  FakeGitea gitea;
  FakeTelegram telegram;
  std::string data_dir, bare, config_path, log_path, main_sha;  // data_dir and log_path: replica 0's
  std::string database_url;                                     // "" on SQLite
  std::vector<std::string> replica_ids, data_dirs, log_paths;   // replicated worlds: one each per replica
  std::vector<std::unique_ptr<OrchProcess>> replicas;
  std::unique_ptr<OrchProcess>& orch;  // replicas[0]: the one replica of a SQLite world

 private:
  void setup_fakes() {
    plane.set_api_key(kPlaneKey);
    // A service token's limit (300 a minute, plane.md section 3): these worlds test convergence, not pacing, and
    // under the default 60 a minute their busiest runs would spend a minute waiting for the window.
    // With write-back on, a run of 50 items writes some 400 comments and state moves: at 300 a minute they would
    // add more than a minute to the test. Pacing under Plane's limit is tested on a manual clock instead
    // (tests/integrations/write_back_test.cpp); here the allowance only has to be finite.
    plane.set_rate_limit(options_.write_back ? 1500 : 300);
    plane.add_project(kWorkspace, kProjectId, "SHOP");
    plane.add_state(kProjectId, "Approved", "started");
    plane.add_state(kProjectId, "Rejected", "started");
    plane.add_state(kProjectId, "In Review", "started");
    gitea.set_token(kGiteaToken);
    gitea.add_repo(kRepo);
  }

  void start_hook_sink() {
    sink_.Post("/push", [this](const httplib::Request& req, httplib::Response& res) {
      std::string ref = req.get_param_value("ref");
      std::string sha = req.get_param_value("new");
      const std::string prefix = "refs/heads/";
      if (ref.rfind(prefix, 0) == 0) {
        std::string branch = ref.substr(prefix.size());
        if (sha.find_first_not_of('0') == std::string::npos)
          gitea.delete_branch(kRepo, branch);
        else
          gitea.set_branch(kRepo, branch, sha);
        ++pushes_;
      }
      res.set_content("ok", "text/plain");
    });
    sink_port_ = sink_.bind_to_any_port("127.0.0.1");
    sink_thread_ = std::thread([this] { sink_.listen_after_bind(); });
  }

  void setup_repo() {
    const std::string seed = tmp.file("seed");
    REQUIRE(sh("git init -q --bare -b main " + quote(bare)) == 0);
    REQUIRE(sh("git init -q -b main " + quote(seed) + " && cd " + quote(seed) +
               " && echo '# shop' > README.md && git add README.md && git -c user.name=seed "
               "-c user.email=seed@example.com -c commit.gpgsign=false commit -q -m 'initial' && git push -q " +
               quote(bare) + " main") == 0);
    main_sha = bare_head("main");
    REQUIRE(main_sha.size() == 40);
    gitea.set_branch(kRepo, "main", main_sha);
    // Gitea learns a pushed branch before the push returns: so does the fake, through this hook.
    const std::string hook = bare + "/hooks/post-receive";
    std::ofstream(hook) << "#!/bin/sh\nwhile read old new ref; do\n  /usr/bin/curl -s -o /dev/null --max-time 10 -d '' "
                           "\"http://127.0.0.1:"
                        << sink_port_ << "/push?ref=$ref&old=$old&new=$new\"\ndone\n";
    std::filesystem::permissions(hook, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                           std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                           std::filesystem::perms::others_exec);
  }

  std::string agent_block(const std::string& name, const std::string& script, const std::string& timeout,
                          const std::map<std::string, std::string>& env) const {
    std::string s = "[agents." + name + "]\nargv = [\"/bin/sh\", \"" + agent_script(script) + "\"]\ntimeout = \"" +
                    timeout + "\"\nmax_attempts = 3\n";
    if (!options_.runs_on.empty()) s += "runs_on = [\"" + options_.runs_on + "\"]\n";
    if (!env.empty()) {
      s += "env = {";
      bool first = true;
      for (const auto& [k, v] : env) {
        s += std::string(first ? " " : ", ") + k + " = \"" + v + "\"";
        first = false;
      }
      s += " }\n";
    }
    return s + "\n";
  }

  void write_config() {
    std::ofstream f(config_path);
    f << "[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"" << data_dir << "\"\nmax_body_bytes = 1048576\n\n"
      << "[plane]\nbase_url = \"" << plane.base_url() << "\"\n"
      << (options_.write_back ? "done_state = \"Done\"\n" : "") << "[gitea]\nbase_url = \"" << gitea.base_url()
      << "\"\n[telegram]\napi_base = \"" << telegram.base_url() << "\"\n\n"
      << "[reconciler]\nenabled = true\nplane_enabled = true\ninterval = \"60s\"\ngrace_default = \"15m\"\n"
      << "notify_unblock = true\nmax_candidates_per_pass = 500\n\n"
      << "[jobs]\nworkers = " << options_.workers << "\nheartbeat_stale = \"" << options_.heartbeat_stale
      << "\"\ndispatch_timeout = \"" << options_.dispatch_timeout << "\"\nqueued_ttl = \"2h\"\nsweep_batch = 500\n\n"
      << "[[projects]]\nname = \"shop\"\ngitea_repo = \"" << kRepo << "\"\nclone_url = \""
      << (options_.clone_url.empty() ? bare : options_.clone_url)
      << "\"\ndefault_branch = \"main\"\nplane_workspace = \"" << kWorkspace << "\"\nplane_project_id = \""
      << kProjectId
      << "\"\nplane_states = { in_progress = \"In Progress\", approved = \"Approved\", rejected = \"Rejected\" }\n"
      << (options_.project_max_running > 0 ? "max_running = " + std::to_string(options_.project_max_running) + "\n"
                                           : std::string())
      << "\n"
      << agent_block("analyst", options_.analyst, options_.analyst_timeout, options_.analyst_env)
      << agent_block("developer", options_.developer, "2m", options_.developer_env)
      << agent_block("reviewer", options_.reviewer, "2m", {})
      << "[[stages]]\nname = \"analysis\"\nagent = \"analyst\"\ngate = { type = \"human_approval\" }\nhuman = true\n"
         "on_reject = \"analysis\"\n\n"
      << "[[stages]]\nname = \"development\"\nagent = \"developer\"\nopen_pr = true\ngate = { type = \"ci_green\" }\n\n"
      << "[[stages]]\nname = \"review\"\nagent = \"reviewer\"\ngate = { type = \"any\", of = [{ type = "
         "\"pr_approved\" }, { type = \"pr_merged\" }] }\non_changes_requested = \"development\"\n"
      << (options_.write_back ? "plane_state = \"In Review\"\n" : "");
  }

  WorldOptions options_;
  const bool replicated_;
  std::unique_ptr<std::atomic<bool>[]> alive_;  // per replica: started and not killed
  std::unique_ptr<LoadBalancer> lb_;            // replicated worlds only
  std::unique_ptr<PgSql> pg_;                   // PostgreSQL worlds: the test's own connection
  mutable std::mutex pg_mu_;                    // PgSql is one connection: one query at a time
  std::vector<std::thread> helpers_;            // the test's own threads: joined first
  httplib::Server sink_;
  int sink_port_ = 0;
  std::thread sink_thread_;
  std::atomic<int> pushes_{0};
};

// A start race on a started world: one new work item moved to In Progress, and `copies` distinct deliveries of that
// event (distinct_copies) sent all at once (deliver_at_once), so that every copy reaches a handler, on whichever
// replica. The results are in the order of the copies.
inline std::vector<DeliveryResult> deliver_start_race(World& w, int copies) {
  const std::string item = w.add_item("Race me");
  w.plane.set_work_item_state(item, w.plane.state_id(kProjectId, "In Progress"));
  return deliver_at_once(w.plane, w.plane_url(), distinct_copies(w.plane.issue_webhook_body(item), copies));
}

// The outcome of a start race (deliver_start_race), on one node or on replicas: `copies` distinct deliveries of one In
// Progress event, all acknowledged, are stored and handled without a failure, and made one task, one branch, one first
// job; that job succeeds and pushes exactly one task branch, and the CLI's status document says so. Returns that
// document.
inline nlohmann::json check_one_start(World& w, int copies) {
  REQUIRE_MESSAGE(eventually([&] { return w.count("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'") == 0; },
                             std::chrono::seconds(30)),
                  w.log_tails());
  CHECK(w.count("SELECT COUNT(*) FROM deliveries") == copies);
  CHECK(w.count("SELECT COUNT(*) FROM deliveries WHERE status = 'failed'") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM tasks") == 1);
  CHECK(w.count("SELECT COUNT(DISTINCT branch) FROM tasks") == 1);
  CHECK(w.count("SELECT COUNT(*) FROM jobs") == 1);
  CHECK(w.count("SELECT COUNT(*) FROM transitions WHERE to_stage = 'analysis'") == 1);

  // The one analyst job runs, and its push leaves exactly one task branch on the remote.
  REQUIRE_MESSAGE(eventually([&] { return w.count("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'") == 1; },
                             std::chrono::seconds(60)),
                  w.log_tails());
  std::vector<std::string> task_branches;
  for (const auto& b : w.bare_branches())
    if (b != "main") task_branches.push_back(b);
  CHECK(task_branches == std::vector<std::string>{"orch/shop-1"});
  CHECK(w.count("SELECT COUNT(*) FROM jobs") == 1);
  auto status = w.live().status_json();
  REQUIRE(status.is_object());
  REQUIRE(status["tasks"].size() == 1);
  CHECK(status["tasks"][0]["stage"] == "analysis");
  CHECK(status["tasks"][0]["branch"] == "orch/shop-1");
  CHECK(status["inbox"]["received"] == copies);
  return status;
}

}  // namespace orch::testing::e2e
