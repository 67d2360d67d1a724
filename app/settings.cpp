#include "app/settings.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include <nlohmann/json.hpp>

namespace orch {
namespace {

std::optional<bool> parse_bool(const std::string& v) {
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  return std::nullopt;
}

std::optional<long long> parse_int(const std::string& v) {
  if (v.empty()) return std::nullopt;
  char* end = nullptr;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (*end != '\0') return std::nullopt;
  return n;
}

Status bad_env(const std::string& name, const std::string& value, const std::string& want) {
  return invalid(name + "='" + value + "' is not " + want);
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "orch";
  return buf;
}

}  // namespace

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

std::chrono::seconds Settings::grace_for(const std::string& stage) const {
  if (auto it = grace_overrides.find(stage); it != grace_overrides.end()) return it->second;
  for (const auto& s : config.stages)
    if (s.name == stage && s.grace) return *s.grace;
  return reconciler.grace_default;
}

Result<std::string> config_path(const std::optional<std::string>& flag, const EnvLookup& env) {
  if (flag && !flag->empty()) return *flag;
  if (auto v = env("ORCH_CONFIG"); v && !v->empty()) return *v;
  return invalid("no config file: pass --config FILE or set ORCH_CONFIG");
}

Result<Settings> make_settings(Config config, const EnvLookup& env) {
  Settings s;
  s.config = std::move(config);
  s.data_dir = env("ORCH_DATA_DIR").value_or(s.config.server.data_dir);
  if (s.data_dir.empty()) s.data_dir = "./var";

  std::string listen = env("ORCH_LISTEN").value_or(s.config.server.listen);
  auto colon = listen.rfind(':');
  auto port = colon == std::string::npos ? std::nullopt : parse_int(listen.substr(colon + 1));
  if (!port || *port < 0 || *port > 65535) return bad_env("ORCH_LISTEN (or [server] listen)", listen, "host:port");
  s.listen_host = listen.substr(0, colon);
  if (s.listen_host.size() > 2 && s.listen_host.front() == '[' && s.listen_host.back() == ']')
    s.listen_host = s.listen_host.substr(1, s.listen_host.size() - 2);
  s.listen_port = static_cast<int>(*port);

  s.database_url = env("ORCH_DATABASE_URL").value_or(s.config.store_url);
  s.replica_id = env("ORCH_REPLICA_ID").value_or("");
  if (s.replica_id.empty()) s.replica_id = host_name();
  // It names this replica's PostgreSQL sessions ("orch:<id>"), which the server keeps to 63 bytes of printable ASCII.
  const bool printable =
      std::all_of(s.replica_id.begin(), s.replica_id.end(), [](char c) { return c > ' ' && c < 127 && c != '/'; });
  if (s.replica_id.size() > 50 || !printable)
    return bad_env("ORCH_REPLICA_ID", s.replica_id, "a name of at most 50 printable characters without spaces or '/'");
  s.leader_takeover = s.config.leader_takeover;
  s.plane_base_url = env("ORCH_PLANE_BASE_URL").value_or(s.config.plane_base_url);
  s.gitea_base_url = env("ORCH_GITEA_BASE_URL").value_or(s.config.gitea_base_url);
  s.telegram_api_base = env("ORCH_TELEGRAM_API_BASE").value_or(s.config.telegram_api_base);
  auto secret = [&](const char* name) { return Secret(env(name).value_or("")); };
  s.plane_webhook_secret = secret("ORCH_PLANE_WEBHOOK_SECRET");
  s.gitea_webhook_secret = secret("ORCH_GITEA_WEBHOOK_SECRET");
  s.plane_api_key = secret("ORCH_PLANE_API_KEY");
  s.gitea_token = secret("ORCH_GITEA_TOKEN");
  s.gitea_review_token = secret("ORCH_GITEA_REVIEW_TOKEN");
  s.telegram_bot_token = secret("ORCH_TELEGRAM_BOT_TOKEN");
  s.telegram_chat_id = env("ORCH_TELEGRAM_CHAT_ID").value_or("");
  s.admin_token = secret("ORCH_ADMIN_TOKEN");
  s.metrics_token = secret("ORCH_METRICS_TOKEN");
  s.public_url = env("ORCH_PUBLIC_URL").value_or("");

  auto flag = [&](const char* name, bool& target) -> Status {
    if (auto v = env(name)) {
      auto b = parse_bool(*v);
      if (!b) return bad_env(name, *v, "a boolean (1/0, true/false)");
      target = *b;
    }
    return {};
  };
  s.reconciler = s.config.reconciler;
  s.plane_write_back = s.config.plane_write_back;
  for (auto [name, target] : {std::pair<const char*, bool*>{"ORCH_ALLOW_UNSIGNED_WEBHOOKS", &s.allow_unsigned_webhooks},
                              {"ORCH_PLANE_WRITE_BACK", &s.plane_write_back},
                              {"ORCH_RECONCILE_ENABLED", &s.reconciler.enabled},
                              {"ORCH_RECONCILE_PLANE_ENABLED", &s.reconciler.plane_enabled},
                              {"ORCH_RECONCILE_NOTIFY_UNBLOCK", &s.reconciler.notify_unblock}}) {
    if (Status st = flag(name, *target); !st.ok()) return st;
  }
  auto seconds = [&](const char* name, std::chrono::seconds& target) -> Status {
    if (auto v = env(name)) {
      auto n = parse_int(*v);
      if (!n || *n <= 0) return bad_env(name, *v, "a positive whole number of seconds");
      target = std::chrono::seconds(*n);
    }
    return {};
  };
  if (Status st = seconds("ORCH_RECONCILE_INTERVAL_S", s.reconciler.interval); !st.ok()) return st;
  if (Status st = seconds("ORCH_LEADER_TAKEOVER_S", s.leader_takeover); !st.ok()) return st;
  if (Status st = seconds("ORCH_INBOX_CLAIM_LEASE_S", s.inbox_claim_lease); !st.ok()) return st;
  if (Status st = seconds("ORCH_RECONCILE_GRACE_DEFAULT_S", s.reconciler.grace_default); !st.ok()) return st;

  if (auto raw = env("ORCH_RECONCILE_GRACE_OVERRIDES_JSON"); raw && !raw->empty()) {
    auto j = nlohmann::json::parse(*raw, nullptr, false);
    if (j.is_discarded()) {
      s.warnings.push_back("ORCH_RECONCILE_GRACE_OVERRIDES_JSON is not valid JSON; using the per-stage defaults");
    } else if (!j.is_object()) {
      s.warnings.push_back("ORCH_RECONCILE_GRACE_OVERRIDES_JSON is not a JSON object; using the per-stage defaults");
    } else {
      for (const auto& [stage, value] : j.items()) {
        if (!value.is_number_integer() || value.get<long long>() < 0) {
          s.warnings.push_back("ORCH_RECONCILE_GRACE_OVERRIDES_JSON: grace for '" + stage +
                               "' is not a non-negative integer of seconds; using the default for that stage");
          continue;
        }
        s.grace_overrides[stage] = std::chrono::seconds(value.get<long long>());
      }
    }
  }
  if (auto fmt = env("ORCH_LOG_FORMAT")) {
    if (*fmt == "json")
      s.log_json = true;
    else if (*fmt != "text" && !fmt->empty())
      return bad_env("ORCH_LOG_FORMAT", *fmt, "text or json");
  }
  return s;
}

Result<Settings> load_settings(const std::optional<std::string>& config_flag, const EnvLookup& env) {
  auto path = config_path(config_flag, env);
  if (!path.ok()) return path.status();
  auto config = load_config(path.value());
  if (!config.ok()) return config.status();
  return make_settings(std::move(config).value(), env);
}

}  // namespace orch
