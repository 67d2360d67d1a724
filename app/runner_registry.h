// app/runner_registry.h: registering runners (`orch runner register|list|revoke`, docs/adr/0023). A runner is a name,
// labels and a token; the token is printed once and only its SHA-256 is stored, so a copy of the database lets nobody
// act as a runner. Names and labels are [A-Za-z0-9._-], 1 to 64 characters: they show up in worker ids, logs and
// /queue.json and are never parsed back out of anything attacker-controlled.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/status.h"
#include "engine/store.h"

namespace orch {

bool is_runner_name(const std::string& s);
// "a,b" as labels; kInvalid naming the bad one.
Result<std::vector<std::string>> parse_runner_labels(const std::string& csv);
// The SHA-256 (hex) a token is known by.
std::string runner_token_hash(const std::string& token);
// `bytes` random bytes (OpenSSL's generator) as lowercase hex; kInternal when the generator fails.
Result<std::string> random_hex(std::size_t bytes);
// A runner's claims are job worker ids "runner:<name>/<random>" (docs/adr/0023): each claim's, and whether `worker`
// is one of `name`'s claims.
Result<std::string> new_runner_claim(const std::string& name);
bool is_claim_of(const std::string& worker, const std::string& name);
// Online: not revoked, and seen (a claim, heartbeat, log or report) within `heartbeat_stale` of `now`.
bool runner_online(const RunnerRow& runner, TimePoint now, std::chrono::seconds heartbeat_stale);
// Registers `name` with `labels`; the new token (shown once). kConflict when the name is taken, kInvalid for a bad
// name or label.
Result<std::string> register_runner(RunnerStore& store, const std::string& name, const std::vector<std::string>& labels,
                                    TimePoint now);

}  // namespace orch
