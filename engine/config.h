// engine/config.h: the parsed TOML config (shape fixed by docs/contracts.md "The config file").
// load_config() rejects anything else with "FILE:LINE: what is wrong". Secrets never live here.
// Plain values; thread-safe once built.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/status.h"

namespace orch {

struct GateSpec {
  enum class Type { kHumanApproval, kCiGreen, kPrOpen, kPrApproved, kPrMerged, kArtifacts, kCommand, kAll, kAny };
  Type type = Type::kCiGreen;
  std::vector<std::string> paths;  // artifacts
  std::vector<std::string> argv;   // command
  std::vector<GateSpec> of;        // all / any
};
const char* gate_type_name(GateSpec::Type t);
std::optional<GateSpec::Type> parse_gate_type(std::string_view s);
bool gate_is_human(const GateSpec& g);  // any human_approval inside it

struct AgentSpec {
  std::string name;
  std::vector<std::string> argv;
  std::chrono::seconds timeout{std::chrono::minutes(30)};
  int max_attempts = 3;
  int max_running = 0;           // jobs of this agent running at once, in every process sharing the store; 0 = no limit
  MicroUsd budget_per_task = 0;  // `budget_usd_per_task`: its runs' spend on one task; 0 = no limit (engine/budget.h)
  std::map<std::string, std::string> env;
  // `runs_on`: the runner labels that may run it (`orch runner`, docs/adr/0023). A runner whose labels include one of
  // them claims its jobs; empty: the server's own worker pool runs them, as without runners.
  std::vector<std::string> runs_on;
  bool remote() const { return !runs_on.empty(); }
};

struct StageSpec {
  std::string name;
  std::string agent;  // "" = no agent
  std::optional<GateSpec> gate;
  bool human = false;
  bool open_pr = false;
  std::optional<std::chrono::seconds> grace;
  std::string on_reject;             // rollback edge taken on Rejected ("" = none)
  std::string on_changes_requested;  // rollback edge taken on a changes-requested review ("" = none)
  // The Plane state a work item is moved to when its task enters this stage (write-back, docs/adr/0013); "" = none.
  // Its TOML line (0 when unset), for the start-up check that the state exists in each project.
  std::string plane_state;
  int plane_state_line = 0;
  // The agent reviews: its exit 3 is a successful run with the verdict REQUEST_CHANGES (exit 0: APPROVED). Only on a
  // stage with an agent.
  bool post_review = false;
};

struct PlaneStateNames {
  std::string in_progress = "In Progress";
  std::string approved = "Approved";
  std::string rejected = "Rejected";
};

struct ProjectSpec {
  std::string name;
  std::string gitea_repo;  // owner/name
  std::string clone_url;   // "" = <gitea base_url>/<gitea_repo>.git
  std::string default_branch = "main";
  std::string plane_workspace;
  std::string plane_project_id;
  PlaneStateNames plane_states;
  int max_running = 0;  // jobs of this project running at once, in every process sharing the store; 0 = no limit
  MicroUsd budget = 0;  // `budget_usd`: every agent run's spend in the project; 0 = no limit (engine/budget.h)
};

// [server] max_body_bytes when unset: 16 MiB. A Plane work-item webhook carries the description three times
// (description_html, description_binary as base64, description_stripped); 16 MiB fits a description of several
// MiB of HTML with room to spare, while one request can still not hold more than that in memory (docs/adr/0009).
inline constexpr std::size_t kDefaultMaxBodyBytes = 16 * 1024 * 1024;

struct ServerSpec {
  std::string listen = "127.0.0.1:8080";
  std::string data_dir = "./var";
  std::size_t max_body_bytes = kDefaultMaxBodyBytes;
};

struct ReconcilerSpec {
  bool enabled = true;
  bool plane_enabled = true;
  std::chrono::seconds interval{60};
  std::chrono::seconds grace_default{std::chrono::minutes(15)};
  bool notify_unblock = true;
  int max_candidates_per_pass = 500;
};

struct JobsSpec {
  int workers = 2;
  // Jobs running at once in every process sharing the store (replicas, runners); 0 = no limit but the workers.
  int max_running = 0;
  std::chrono::seconds heartbeat_stale{150};
  std::chrono::seconds dispatch_timeout{std::chrono::minutes(5)};
  // Between SIGTERM and SIGKILL to an agent's process group when it is stopped: a cancel, a shutdown, a task that
  // moved on, a timeout (docs/adr/0023). Runners are told it with each job.
  std::chrono::seconds cancel_grace{10};
  std::chrono::seconds queued_ttl{std::chrono::hours(2)};
  int sweep_batch = 500;
  // How often a follow-up step after the agent exited 0 (push, open_pr, gate; ADR 0010) may fail before its job fails.
  int step_attempts = 8;
};

struct Config {
  std::string source_path;  // the file it was read from
  ServerSpec server;
  std::string plane_base_url;
  // [plane] write_back: orch writes its progress back to Plane and Gitea (docs/adr/0013); ORCH_PLANE_WRITE_BACK wins.
  bool plane_write_back = true;
  // [plane] done_state: the Plane state a work item is moved to when its task reaches done ("" = none), and its
  // TOML line (0 when unset).
  std::string plane_done_state;
  int plane_done_state_line = 0;
  std::string gitea_base_url;
  // [gitea] official_reviews_only: the pr_approved gate counts only reviews Gitea marks official (stale ones never).
  bool gitea_official_reviews_only = true;
  std::string telegram_api_base = "https://api.telegram.org";
  std::string store_url;  // [store] url; "" = embedded SQLite
  // [store] leader_takeover: with several replicas on PostgreSQL, how soon a follower takes over once the leader's
  // lock is gone (it retries the lock a third of this apart).
  std::chrono::seconds leader_takeover{15};
  ReconcilerSpec reconciler;
  JobsSpec jobs;
  std::vector<ProjectSpec> projects;
  std::map<std::string, AgentSpec> agents;
  std::vector<StageSpec> stages;  // in order; `created` and `done` are implicit

  const ProjectSpec* find_project(std::string_view name) const;
  // Both compare as the senders do, ignoring ASCII case (match_key): Gitea resolves owner/name case-insensitively
  // and sends repository.full_name with the owner's capitalisation; a UUID's hex digits have no case.
  const ProjectSpec* find_project_by_repo(std::string_view gitea_repo) const;
  const ProjectSpec* find_project_by_plane_id(std::string_view plane_project_id) const;
};

// A Plane state name the config relies on, which must exist in the project's Plane states: each project with each
// stage's plane_state and with [plane] done_state. For the start-up check, whose message names the line and the key.
struct PlaneStateRef {
  std::string project;  // ProjectSpec::name
  std::string state;    // the Plane state name, as configured
  int line = 0;         // its line in the config file
  std::string key;      // what set it: "'done_state' in [plane]", "'plane_state' in [[stages]] \"review\""
};
// In config order: per project, the stages' plane_state in stage order, then done_state.
std::vector<PlaneStateRef> plane_state_refs(const Config& config);

// The `max_running` limits of [jobs], each project and each agent, as the job claim enforces them.
JobLimits job_limits(const Config& config);
// What the server's own pool claims: every follow-up step, and the jobs of the agents without `runs_on` (all of them
// when no agent has it). What a runner with `labels` claims: the jobs of the agents whose `runs_on` names one of its
// labels, and no step (docs/adr/0023).
ClaimScope server_claim_scope(const Config& config);
ClaimScope runner_claim_scope(const Config& config, const std::vector<std::string>& labels);

// Parses and validates; every error names the file and line: "orch.toml:12: unknown key 'gaet' in [[stages]]".
Result<Config> parse_config(const std::string& text, const std::string& filename);
Result<Config> load_config(const std::string& path);
// Durations are strings with a unit: "90s", "15m", "2h", "1d". nullopt if malformed.
std::optional<std::chrono::seconds> parse_duration(std::string_view s);

// The form under which a repository name ("Acme/App") or a Plane project id is compared: ASCII-lowercased, the way
// Gitea compares owner and repository names (its LowerName columns). Never shown: what is shown and what the REST
// calls use is the configured spelling.
std::string match_key(std::string_view s);

}  // namespace orch
