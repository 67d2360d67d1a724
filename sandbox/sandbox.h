// sandbox/sandbox.h: the first-run sandbox (issue 21): a local Plane, Gitea and Telegram built from the tests'
// fakes (tests/fakes/), seeded to match examples/orch.toml, with a real bare git repository served through the
// fake Gitea's port, and the actions a person takes in those tools (move a work item, report CI, review, merge),
// each changing the tables and sending the signed webhook the real tool would. A "lose the next webhook" switch
// drops one delivery (the tables still change) so the reconciler has something to recover.
// Thread-safe: the control server, the fakes' threads and the webhook sender call in concurrently.
#pragma once

#include <spdlog/logger.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/status.h"
#include "sandbox/git_http.h"
#include "tests/fakes/fake_gitea.h"
#include "tests/fakes/fake_plane.h"
#include "tests/fakes/fake_telegram.h"

namespace orch::sandbox {

// The seeds of examples/orch.toml.
inline const std::string kWorkspace = "acme";
inline const std::string kProjectId = "4af0c6c4-5b8e-4d2a-9c61-0d3e7f2a91b5";
inline const std::string kIdentifier = "SHOP";
inline const std::string kRepo = "acme/shop";
inline const std::string kOrchUser = "orch";           // the login ORCH_GITEA_TOKEN acts as
inline const std::string kReviewUser = "orch-review";  // the login ORCH_GITEA_REVIEW_TOKEN acts as
inline const std::string kHuman = "ada";               // who clicks in the sandbox

struct SandboxOptions {
  std::filesystem::path dir;  // <data dir>/sandbox: git/, state.json, git.log
  std::string orch_url;       // where webhooks go, e.g. http://127.0.0.1:8080
  std::string plane_webhook_secret, gitea_webhook_secret, plane_api_key, gitea_token, gitea_review_token;
  std::string telegram_bot_token, telegram_chat_id;
  bool seed_item = true;  // a fresh sandbox starts with one work item in Todo
};

class Sandbox {
 public:
  Sandbox(SandboxOptions options, spdlog::logger& log);
  ~Sandbox();  // stops the webhook sender, then the fakes
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  // The repository, the seeds (or the state saved under dir), and the webhook sender thread.
  Status start();

  std::string plane_url() const { return plane_.base_url(); }
  std::string gitea_url() const { return gitea_.base_url(); }
  std::string telegram_url() const { return telegram_.base_url(); }

  // A person's actions. Each answers the JSON the control API returns; kNotFound / kInvalid say why not.
  Result<nlohmann::json> create(const std::string& title, const std::string& description);
  Result<nlohmann::json> move(const std::string& key, const std::string& state);
  Result<nlohmann::json> ci(const std::string& key, const std::string& state);  // success, failure, pending, error
  Result<nlohmann::json> review(const std::string& key, bool approve, const std::string& body);
  Result<nlohmann::json> merge(const std::string& key);
  nlohmann::json lose_next_webhook(bool on);

  // What the page and the listing verbs show.
  nlohmann::json items() const;
  Result<nlohmann::json> comments(const std::string& key) const;
  nlohmann::json pulls() const;
  nlohmann::json telegram() const;
  nlohmann::json log_lines() const;
  nlohmann::json state() const;  // all of the above, plus the switch and the sender's queue

 private:
  struct Outgoing {
    std::string what;  // e.g. "plane issue updated SHOP-1 (In Progress)"
    std::function<testing::DeliveryResult()> send;
  };
  struct ItemRecord {
    std::string key, id;
  };

  void note(const std::string& line);  // the log and the page's log
  void enqueue(Outgoing o);
  void run_sender(std::stop_token stop);
  void on_push(const std::string& repo, const std::vector<RefChange>& changes);
  void on_api_write(const testing::FakeGitea::ApiWrite& w);
  bool authorised_git(const httplib::Request& req) const;
  std::string state_name(const std::string& state_id) const;
  Result<std::string> item_id(const std::string& key) const;
  std::optional<testing::GiteaPull> pull_for(const std::string& key) const;
  std::string key_of_branch(const std::string& branch) const;
  void save() const;  // state.json: what a restart needs to agree with orch's database
  void load();

  const SandboxOptions options_;
  spdlog::logger& log_;
  testing::FakePlane plane_;
  testing::FakeGitea gitea_;
  testing::FakeTelegram telegram_;
  GitHttp git_;

  mutable std::mutex mu_;
  std::vector<ItemRecord> items_;  // guarded by mu_; in creation order
  std::deque<Outgoing> queue_;     // guarded by mu_
  bool lose_next_ = false;         // guarded by mu_
  int lost_ = 0, sent_ = 0;        // guarded by mu_
  std::deque<std::string> lines_;  // guarded by mu_; the last kMaxLines log lines
  bool sending_ = false;           // guarded by mu_; a delivery is in flight
  std::condition_variable_any cv_;
  mutable std::mutex save_mu_;  // one writer of state.json at a time
  std::jthread sender_;         // last: stopped before the rest goes
};

}  // namespace orch::sandbox
