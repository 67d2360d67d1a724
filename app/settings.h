// app/settings.h: the effective settings: the TOML config, then ORCH_* environment variables over it (names are a
// contract, docs/contracts.md "Environment variables"), then secrets, which only ever come from the environment.
// Plain values; built once at start-up.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/secret.h"
#include "engine/status.h"

namespace orch {

using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

struct Settings {
  Config config;
  std::string data_dir;
  std::string listen_host = "127.0.0.1";
  int listen_port = 8080;
  std::string database_url;  // "" = embedded SQLite under data_dir
  std::string replica_id;    // ORCH_REPLICA_ID, else the host name: names this replica's claims, workers and lock
  std::chrono::seconds leader_takeover{15};     // ORCH_LEADER_TAKEOVER_S over [store] leader_takeover
  std::chrono::seconds inbox_claim_lease{300};  // ORCH_INBOX_CLAIM_LEASE_S
  std::string plane_base_url, gitea_base_url, telegram_api_base;
  Secret plane_webhook_secret, gitea_webhook_secret;
  Secret plane_api_key, gitea_token;
  // ORCH_GITEA_REVIEW_TOKEN: a second Gitea user's token for the reviews of post_review stages (Gitea refuses a
  // verdict by the PR's author, and orch opens the PRs with gitea_token). Empty: reviews go with gitea_token.
  Secret gitea_review_token;
  Secret telegram_bot_token;
  std::string telegram_chat_id;
  Secret admin_token, metrics_token;
  bool allow_unsigned_webhooks = false;
  bool log_json = false;
  std::string public_url;  // ORCH_PUBLIC_URL: orch's address for people (the /queue link in comments); "" = none
  // How often the Plane and Gitea channels of the outbox are drained.
  std::chrono::milliseconds write_back_interval{std::chrono::seconds(2)};
  bool plane_write_back = true;                                 // ORCH_PLANE_WRITE_BACK over [plane] write_back
  ReconcilerSpec reconciler;                                    // env over [reconciler]
  std::map<std::string, std::chrono::seconds> grace_overrides;  // ORCH_RECONCILE_GRACE_OVERRIDES_JSON
  std::vector<std::string> warnings;  // problems that fell back to a default; logged at start-up, never fatal

  std::chrono::seconds grace_for(const std::string& stage) const;
};

// The config path: the --config flag, else ORCH_CONFIG. kInvalid when neither is given.
Result<std::string> config_path(const std::optional<std::string>& flag, const EnvLookup& env);
// Bad values of typed variables (ORCH_LISTEN without a port, ORCH_RECONCILE_INTERVAL_S=abc) are errors;
// a bad ORCH_RECONCILE_GRACE_OVERRIDES_JSON is a warning and the defaults stand.
Result<Settings> make_settings(Config config, const EnvLookup& env);
Result<Settings> load_settings(const std::optional<std::string>& config_flag, const EnvLookup& env);

}  // namespace orch
