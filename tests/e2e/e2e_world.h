// tests/e2e/e2e_world.h: what the end-to-end tests share: a fake Plane, Gitea and Telegram, a local bare git
// repository as the project's remote (its post-receive hook tells the fake Gitea about every pushed branch head,
// synchronously, as a real Gitea learns them), a config file with script agents, and the real `orch serve` as a
// child process. The database is read directly (read-only) for what /queue.json does not list (succeeded jobs,
// every transition).
#pragma once

#include <doctest/doctest.h>
#include <httplib.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/fakes/fake_gitea.h"
#include "tests/fakes/fake_plane.h"
#include "tests/fakes/fake_telegram.h"
#include "tests/support/orch_process.h"
#include "tests/support/temp_dir.h"

namespace orch::testing::e2e {

inline const std::string kWorkspace = "acme";
inline const std::string kProjectId = "4af0c6c4-5b8e-4d2a-9c61-0d3e7f2a91b5";
inline const std::string kRepo = "acme/shop";
inline const std::string kPlaneSecret = "plane_wh_e2e_5f0d1c2b3a4e5f60718293a4b5c6d7e8";
inline const std::string kGiteaSecret = "gitea_wh_e2e_s3cr3t";
inline const std::string kPlaneKey = "plane_api_e2e_key";
inline const std::string kGiteaToken = "gitea_e2e_token";

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
};

class World {
 public:
  explicit World(WorldOptions options = {}) : options_(std::move(options)) {
    data_dir = tmp.file("data");
    bare = tmp.file("shop.git");
    config_path = tmp.file("orch.toml");
    log_path = tmp.file("orch.log");
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
        {"ORCH_RECONCILE_INTERVAL_S", std::to_string(options_.interval_s)},
        {"ORCH_RECONCILE_GRACE_DEFAULT_S", std::to_string(options_.grace_s)},
        {"ORCH_LOG_FORMAT", "text"},
    };
    orch = std::make_unique<OrchProcess>(config_path, env, log_path);
  }

  ~World() {
    orch.reset();  // SIGKILL if still running, before the fakes go
    sink_.stop();
    if (sink_thread_.joinable()) sink_thread_.join();
  }

  std::string plane_url() const { return orch->url("/webhooks/plane"); }
  std::string gitea_url() const { return orch->url("/webhooks/gitea"); }

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

  long long count(const std::string& sql) const {
    auto d = open_db();
    return d->execAndGet(sql).getInt64();
  }

  int pushes_seen() const { return pushes_.load(); }

  TempDir tmp;
  FakePlane plane;
  FakeGitea gitea;
  FakeTelegram telegram;
  std::string data_dir, bare, config_path, log_path, main_sha;
  std::unique_ptr<OrchProcess> orch;

 private:
  void setup_fakes() {
    plane.set_api_key(kPlaneKey);
    plane.add_project(kWorkspace, kProjectId, "SHOP");
    plane.add_state(kProjectId, "Approved", "started");
    plane.add_state(kProjectId, "Rejected", "started");
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
        if (sha.find_first_not_of('0') == std::string::npos) gitea.delete_branch(kRepo, branch);
        else gitea.set_branch(kRepo, branch, sha);
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
      << "[plane]\nbase_url = \"" << plane.base_url() << "\"\n[gitea]\nbase_url = \"" << gitea.base_url()
      << "\"\n[telegram]\napi_base = \"" << telegram.base_url() << "\"\n\n"
      << "[reconciler]\nenabled = true\nplane_enabled = true\ninterval = \"60s\"\ngrace_default = \"15m\"\n"
      << "notify_unblock = true\nmax_candidates_per_pass = 500\n\n"
      << "[jobs]\nworkers = " << options_.workers
      << "\nheartbeat_stale = \"150s\"\ndispatch_timeout = \"5m\"\nqueued_ttl = \"2h\"\nsweep_batch = 500\n\n"
      << "[[projects]]\nname = \"shop\"\ngitea_repo = \"" << kRepo << "\"\nclone_url = \"" << bare
      << "\"\ndefault_branch = \"main\"\nplane_workspace = \"" << kWorkspace << "\"\nplane_project_id = \""
      << kProjectId
      << "\"\nplane_states = { in_progress = \"In Progress\", approved = \"Approved\", rejected = \"Rejected\" }\n\n"
      << agent_block("analyst", options_.analyst, options_.analyst_timeout, options_.analyst_env)
      << agent_block("developer", options_.developer, "2m", {})
      << agent_block("reviewer", options_.reviewer, "2m", {})
      << "[[stages]]\nname = \"analysis\"\nagent = \"analyst\"\ngate = { type = \"human_approval\" }\nhuman = true\n"
         "on_reject = \"analysis\"\n\n"
      << "[[stages]]\nname = \"development\"\nagent = \"developer\"\nopen_pr = true\ngate = { type = \"ci_green\" }\n\n"
      << "[[stages]]\nname = \"review\"\nagent = \"reviewer\"\ngate = { type = \"any\", of = [{ type = "
         "\"pr_approved\" }, { type = \"pr_merged\" }] }\non_changes_requested = \"development\"\n";
  }

  WorldOptions options_;
  httplib::Server sink_;
  int sink_port_ = 0;
  std::thread sink_thread_;
  std::atomic<int> pushes_{0};
};

}  // namespace orch::testing::e2e
