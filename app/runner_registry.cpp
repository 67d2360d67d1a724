#include "app/runner_registry.h"

#include <openssl/rand.h>

#include <cstdio>

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

std::string runner_token_hash(const std::string& token) { return sha256_hex(token); }

Result<std::string> register_runner(RunnerStore& store, const std::string& name, const std::vector<std::string>& labels,
                                    TimePoint now) {
  if (!is_runner_name(name)) return invalid("runner name '" + name + "' is not 1 to 64 of A-Z a-z 0-9 . _ -");
  for (const std::string& l : labels)
    if (!is_runner_name(l)) return invalid("label '" + l + "' is not 1 to 64 of A-Z a-z 0-9 . _ -");
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return internal("cannot draw a random token");
  std::string token = "orch_rt_";
  char hex[3];
  for (unsigned char b : bytes) {
    std::snprintf(hex, sizeof hex, "%02x", b);
    token += hex;
  }
  RunnerRow row;
  row.name = name;
  row.labels = labels;
  row.token_sha256 = runner_token_hash(token);
  row.registered_at = now;
  if (Status s = store.register_runner(row); !s.ok()) return s;
  return token;
}

}  // namespace orch
