#include "app/runner_registry.h"

#include <openssl/rand.h>

#include <cstdio>
#include <vector>

#include "webhooks/signature.h"

namespace orch {

bool is_runner_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-'))
      return false;
  return true;
}

Result<std::vector<std::string>> parse_runner_labels(const std::string& csv) {
  std::vector<std::string> labels;
  std::size_t at = 0;
  while (at <= csv.size() && !csv.empty()) {
    std::size_t comma = csv.find(',', at);
    if (comma == std::string::npos) comma = csv.size();
    std::string label = csv.substr(at, comma - at);
    if (!is_runner_name(label))
      return invalid("label '" + label + "' is not 1 to 64 of the characters A-Z a-z 0-9 . _ -");
    labels.push_back(label);
    at = comma + 1;
  }
  return labels;
}

Result<std::string> random_hex(std::size_t bytes) {
  std::vector<unsigned char> b(bytes);
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) return internal("cannot draw random bytes");
  std::string out;
  char hex[3];
  for (unsigned char c : b) {
    std::snprintf(hex, sizeof hex, "%02x", c);
    out += hex;
  }
  return out;
}

Result<std::string> new_runner_claim(const std::string& name) {
  auto random = random_hex(8);
  if (!random.ok()) return random.status();
  return std::string(kRunnerClaimPrefix) + name + "/" + random.value();
}

bool is_claim_of(const std::string& worker, const std::string& name) {
  return worker.rfind(std::string(kRunnerClaimPrefix) + name + "/", 0) == 0;
}

bool runner_online(const RunnerRow& runner, TimePoint now, std::chrono::seconds heartbeat_stale) {
  return !runner.revoked && runner.last_seen_at && *runner.last_seen_at >= now - heartbeat_stale;
}

std::string runner_token_hash(const std::string& token) { return sha256_hex(token); }

Result<std::string> register_runner(RunnerStore& store, const std::string& name, const std::vector<std::string>& labels,
                                    TimePoint now) {
  if (!is_runner_name(name)) return invalid("runner name '" + name + "' is not 1 to 64 of A-Z a-z 0-9 . _ -");
  for (const std::string& l : labels)
    if (!is_runner_name(l)) return invalid("label '" + l + "' is not 1 to 64 of A-Z a-z 0-9 . _ -");
  auto random = random_hex(32);
  if (!random.ok()) return random.status();
  const std::string token = "orch_rt_" + random.value();
  RunnerRow row;
  row.name = name;
  row.labels = labels;
  row.token_sha256 = runner_token_hash(token);
  row.registered_at = now;
  if (Status s = store.register_runner(row); !s.ok()) return s;
  return token;
}

}  // namespace orch
