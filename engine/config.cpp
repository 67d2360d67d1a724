// engine/config.cpp: reads and validates the TOML config whose shape docs/contracts.md "The config file" fixes.
//
// DESIGN: toml11 only parses; this file walks the tree itself so that every problem names the line of the
// offending key or value ("orch.toml:14: unknown key 'gaet' in [[stages]] \"development\" (did you mean
// 'gate'?)"). Validation stops at the first problem: a later one is often a consequence of the first (a
// misspelt [agents.X] table makes every stage naming it "unknown"), and one precise line is what an operator
// fixes first. toml11's exceptions stop in this file.
#include "engine/config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <set>
#include <sstream>
#include <toml.hpp>

#include "engine/budget.h"

namespace orch {

namespace {

using std::chrono::seconds;

constexpr int kMaxSuggestDistance = 2;

unsigned line_of(const toml::value& v) { return v.location().line(); }

const char* type_phrase(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::empty: return "nothing";
    case toml::value_t::boolean: return "a boolean";
    case toml::value_t::integer: return "an integer";
    case toml::value_t::floating: return "a float";
    case toml::value_t::string: return "a string";
    case toml::value_t::offset_datetime:
    case toml::value_t::local_datetime:
    case toml::value_t::local_date:
    case toml::value_t::local_time: return "a date or time";
    case toml::value_t::array: return "an array";
    case toml::value_t::table: return "a table";
  }
  return "something else";
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions, so "gaet" is one edit from
// "gate", the typo people actually make.
int edit_distance(std::string_view a, std::string_view b) {
  const std::size_t n = a.size(), m = b.size();
  std::vector<std::vector<int>> d(n + 1, std::vector<int>(m + 1, 0));
  for (std::size_t i = 0; i <= n; ++i) d[i][0] = static_cast<int>(i);
  for (std::size_t j = 0; j <= m; ++j) d[0][j] = static_cast<int>(j);
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      const int cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

bool is_env_name(std::string_view s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

// A program named by a relative path with a '/' ("agents/analyst.sh") is resolved against the config file's
// directory: agents run with the task's worktree as their working directory, where that path means nothing.
// A bare name ("python3") is left for PATH.
std::string resolve_program(const std::string& program, const std::filesystem::path& base_dir) {
  std::filesystem::path p(program);
  if (program.find('/') == std::string::npos || p.is_absolute()) return program;
  return (base_dir / p).lexically_normal().string();
}

std::filesystem::path config_dir(const std::string& filename) {
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::path(filename).parent_path();
  if (dir.is_absolute()) return dir.lexically_normal();
  std::filesystem::path cwd = std::filesystem::current_path(ec);
  if (ec) return dir;
  return (cwd / dir).lexically_normal();
}

// Walks the parsed tree, remembering the first problem. Readers return the fallback once a problem is
// recorded, so callers read straight down and check failed() where a later step depends on an earlier one.
class Reader {
 public:
  explicit Reader(std::string filename) : filename_(std::move(filename)) {}

  bool failed() const { return !error_.ok(); }
  const Status& error() const { return error_; }

  void fail_at(unsigned line, const std::string& what) {
    if (!failed()) error_ = invalid(filename_ + ":" + std::to_string(line) + ": " + what);
  }
  void fail(const toml::value& at, const std::string& what) { fail_at(line_of(at), what); }

  // Reports the first key (by line) of `table` that is not in `known`, with the closest known key.
  void check_keys(const toml::value& table, const std::vector<std::string_view>& known, const std::string& where) {
    if (failed()) return;
    const toml::value* first = nullptr;
    std::string first_key;
    for (const auto& [key, value] : table.as_table()) {
      if (std::find(known.begin(), known.end(), key) != known.end()) continue;
      if (!first || line_of(value) < line_of(*first) || (line_of(value) == line_of(*first) && key < first_key)) {
        first = &value;
        first_key = key;
      }
    }
    if (!first) return;
    std::string what = "unknown key " + in_quotes(first_key) + " in " + where;
    std::string_view best;
    int best_distance = kMaxSuggestDistance + 1;
    for (std::string_view k : known) {
      const int d = edit_distance(first_key, k);
      if (d < best_distance) {
        best_distance = d;
        best = k;
      }
    }
    if (!best.empty() && best_distance < static_cast<int>(first_key.size()))
      what += " (did you mean " + in_quotes(best) + "?)";
    fail(*first, what);
  }

  static const toml::value* find(const toml::value& table, const std::string& key) {
    const auto& t = table.as_table();
    auto it = t.find(key);
    return it == t.end() ? nullptr : &it->second;
  }

  // A table under `key`, or nullptr when absent or wrong (the latter recorded).
  const toml::value* table(const toml::value& parent, const std::string& key, const std::string& what) {
    const toml::value* v = find(parent, key);
    if (!v || failed()) return nullptr;
    if (!v->is_table()) {
      fail(*v, what + " must be a table, not " + type_phrase(*v));
      return nullptr;
    }
    return v;
  }

  std::string string_or(const toml::value& t, const std::string& key, const std::string& where, std::string fallback,
                        bool allow_empty = false) {
    const toml::value* v = find(t, key);
    if (!v || failed()) return fallback;
    if (!v->is_string()) {
      fail(*v, in_quotes(key) + " in " + where + " must be a string, not " + type_phrase(*v));
      return fallback;
    }
    const std::string& s = v->as_string().str;
    if (s.empty() && !allow_empty) {
      fail(*v, in_quotes(key) + " in " + where + " must not be empty");
      return fallback;
    }
    return s;
  }

  bool bool_or(const toml::value& t, const std::string& key, const std::string& where, bool fallback) {
    const toml::value* v = find(t, key);
    if (!v || failed()) return fallback;
    if (!v->is_boolean()) {
      fail(*v, in_quotes(key) + " in " + where + " must be true or false, not " + type_phrase(*v));
      return fallback;
    }
    return v->as_boolean();
  }

  std::int64_t int_or(const toml::value& t, const std::string& key, const std::string& where, std::int64_t fallback,
                      std::int64_t min, std::int64_t max) {
    const toml::value* v = find(t, key);
    if (!v || failed()) return fallback;
    if (!v->is_integer()) {
      fail(*v, in_quotes(key) + " in " + where + " must be an integer, not " + type_phrase(*v));
      return fallback;
    }
    const std::int64_t n = v->as_integer();
    if (n < min) {
      fail(*v,
           in_quotes(key) + " in " + where + " must be at least " + std::to_string(min) + ", not " + std::to_string(n));
      return fallback;
    }
    if (n > max) {
      fail(*v,
           in_quotes(key) + " in " + where + " must be at most " + std::to_string(max) + ", not " + std::to_string(n));
      return fallback;
    }
    return n;
  }

  int small_int_or(const toml::value& t, const std::string& key, const std::string& where, int fallback, int min) {
    return static_cast<int>(int_or(t, key, where, fallback, min, INT_MAX));
  }

  // A budget in US dollars (an integer or a float), > 0, as micro-USD; `fallback` when absent.
  MicroUsd usd_or(const toml::value& t, const std::string& key, const std::string& where, MicroUsd fallback) {
    const toml::value* v = find(t, key);
    if (!v || failed()) return fallback;
    if (!v->is_integer() && !v->is_floating()) {
      fail(*v, in_quotes(key) + " in " + where + " must be a number of US dollars, not " + type_phrase(*v));
      return fallback;
    }
    const double usd = v->is_integer() ? static_cast<double>(v->as_integer()) : v->as_floating();
    const std::optional<MicroUsd> micros = usd_to_micros(usd);
    if (!micros || *micros <= 0) {
      fail(*v, in_quotes(key) + " in " + where + " must be more than 0 and at most 1000000000 US dollars");
      return fallback;
    }
    return *micros;
  }

  // Intervals and timeouts must be > 0; a grace may be "0s" (advance as soon as the gate is green).
  seconds duration_or(const toml::value& t, const std::string& key, const std::string& where, seconds fallback,
                      bool allow_zero = false) {
    const toml::value* v = find(t, key);
    if (!v || failed()) return fallback;
    if (!v->is_string()) {
      fail(*v, in_quotes(key) + " in " + where +
                   " must be a duration string with a unit such as \"90s\", \"15m\", \"2h\", not " + type_phrase(*v));
      return fallback;
    }
    const std::string& s = v->as_string().str;
    std::optional<seconds> d = parse_duration(s);
    if (!d) {
      fail(*v, in_quotes(key) + " in " + where + " is not a duration: \"" + s +
                   "\" (write a whole number with a unit s, m, h or d, such as \"90s\" or \"15m\")");
      return fallback;
    }
    if (d->count() == 0 && !allow_zero) {
      fail(*v, in_quotes(key) + " in " + where + " must be longer than zero, not \"" + s + "\"");
      return fallback;
    }
    return *d;
  }

  // An array of non-empty strings; empty when absent.
  std::vector<std::string> strings(const toml::value& t, const std::string& key, const std::string& where) {
    std::vector<std::string> out;
    const toml::value* v = find(t, key);
    if (!v || failed()) return out;
    if (!v->is_array()) {
      fail(*v, in_quotes(key) + " in " + where + " must be an array of strings, not " + type_phrase(*v));
      return out;
    }
    for (const toml::value& item : v->as_array()) {
      if (!item.is_string()) {
        fail(item, in_quotes(key) + " in " + where + " must hold only strings, not " + type_phrase(item));
        return {};
      }
      if (item.as_string().str.empty()) {
        fail(item, in_quotes(key) + " in " + where + " must not hold an empty string");
        return {};
      }
      out.push_back(item.as_string().str);
    }
    return out;
  }

 private:
  std::string filename_;
  Status error_;
};

bool is_http_url(std::string_view s) { return s.starts_with("http://") || s.starts_with("https://"); }

void read_base_url(Reader& r, const toml::value& root, const std::string& section, const std::string& key,
                   std::string& out, std::initializer_list<std::string_view> other_keys = {}) {
  const toml::value* t = r.table(root, section, in_quotes(section));
  if (!t) return;
  const std::string where = "[" + section + "]";
  std::vector<std::string_view> known{key};
  known.insert(known.end(), other_keys.begin(), other_keys.end());
  r.check_keys(*t, known, where);
  // Absent: keep the default (the table may hold only its other key, or be empty).
  if (!Reader::find(*t, key)) return;
  std::string url = r.string_or(*t, key, where, out);
  if (r.failed()) return;
  if (!is_http_url(url)) {
    r.fail(*Reader::find(*t, key),
           in_quotes(key) + " in " + where + " must start with http:// or https://, not \"" + url + "\"");
    return;
  }
  while (url.size() > std::string_view("https://").size() && url.back() == '/') url.pop_back();
  out = url;
}

ServerSpec read_server(Reader& r, const toml::value& root) {
  ServerSpec s;
  const toml::value* t = r.table(root, "server", "'server'");
  if (!t) return s;
  const std::string where = "[server]";
  r.check_keys(*t, {"listen", "data_dir", "max_body_bytes"}, where);
  s.listen = r.string_or(*t, "listen", where, s.listen);
  if (!r.failed()) {
    const auto colon = s.listen.rfind(':');
    const std::string port = colon == std::string::npos ? "" : s.listen.substr(colon + 1);
    const bool digits = !port.empty() && port.size() <= 5 &&
                        std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (colon == 0 || !digits || std::stoi(port) > 65535)
      r.fail(*Reader::find(*t, "listen"),
             "'listen' in [server] must be host:port, such as \"127.0.0.1:8080\", not \"" + s.listen + "\"");
  }
  s.data_dir = r.string_or(*t, "data_dir", where, s.data_dir);
  s.max_body_bytes = static_cast<std::size_t>(
      r.int_or(*t, "max_body_bytes", where, static_cast<std::int64_t>(s.max_body_bytes), 1, INT64_MAX));
  return s;
}

ReconcilerSpec read_reconciler(Reader& r, const toml::value& root) {
  ReconcilerSpec s;
  const toml::value* t = r.table(root, "reconciler", "'reconciler'");
  if (!t) return s;
  const std::string where = "[reconciler]";
  r.check_keys(*t,
               {"enabled", "plane_enabled", "interval", "grace_default", "notify_unblock", "max_candidates_per_pass"},
               where);
  s.enabled = r.bool_or(*t, "enabled", where, s.enabled);
  s.plane_enabled = r.bool_or(*t, "plane_enabled", where, s.plane_enabled);
  s.interval = r.duration_or(*t, "interval", where, s.interval);
  s.grace_default = r.duration_or(*t, "grace_default", where, s.grace_default, /*allow_zero=*/true);
  s.notify_unblock = r.bool_or(*t, "notify_unblock", where, s.notify_unblock);
  s.max_candidates_per_pass = r.small_int_or(*t, "max_candidates_per_pass", where, s.max_candidates_per_pass, 1);
  return s;
}

JobsSpec read_jobs(Reader& r, const toml::value& root) {
  JobsSpec s;
  const toml::value* t = r.table(root, "jobs", "'jobs'");
  if (!t) return s;
  const std::string where = "[jobs]";
  r.check_keys(*t,
               {"workers", "max_running", "heartbeat_stale", "dispatch_timeout", "queued_ttl", "sweep_batch",
                "step_attempts", "cancel_grace"},
               where);
  s.workers = r.small_int_or(*t, "workers", where, s.workers, 1);
  s.max_running = r.small_int_or(*t, "max_running", where, s.max_running, 1);
  s.heartbeat_stale = r.duration_or(*t, "heartbeat_stale", where, s.heartbeat_stale);
  s.dispatch_timeout = r.duration_or(*t, "dispatch_timeout", where, s.dispatch_timeout);
  s.cancel_grace = r.duration_or(*t, "cancel_grace", where, s.cancel_grace);
  s.queued_ttl = r.duration_or(*t, "queued_ttl", where, s.queued_ttl);
  s.sweep_batch = r.small_int_or(*t, "sweep_batch", where, s.sweep_batch, 1);
  s.step_attempts = r.small_int_or(*t, "step_attempts", where, s.step_attempts, 1);
  return s;
}

// A table-array entry is named by its `name` when it has one, else by its position.
std::string entry_where(const std::string& array, const toml::value& entry, std::size_t index) {
  const toml::value* name = Reader::find(entry, "name");
  if (name && name->is_string() && !name->as_string().str.empty())
    return "[[" + array + "]] \"" + name->as_string().str + "\"";
  return "[[" + array + "]] #" + std::to_string(index + 1);
}

// The entries of a [[array]] of tables; empty when absent or wrong (the latter recorded).
std::vector<const toml::value*> table_array(Reader& r, const toml::value& root, const std::string& key) {
  std::vector<const toml::value*> out;
  const toml::value* v = Reader::find(root, key);
  if (!v || r.failed()) return out;
  if (!v->is_array()) {
    r.fail(*v, in_quotes(key) + " must be an array of tables, written [[" + key + "]], not " + type_phrase(*v));
    return out;
  }
  for (const toml::value& item : v->as_array()) {
    if (!item.is_table()) {
      r.fail(item, in_quotes(key) + " must hold only tables, written [[" + key + "]], not " + type_phrase(item));
      return {};
    }
    out.push_back(&item);
  }
  return out;
}

std::vector<ProjectSpec> read_projects(Reader& r, const toml::value& root) {
  std::vector<ProjectSpec> projects;
  std::map<std::string, unsigned> name_lines, repo_lines, plane_id_lines;
  const auto entries = table_array(r, root, "projects");
  for (std::size_t i = 0; i < entries.size() && !r.failed(); ++i) {
    const toml::value& t = *entries[i];
    const std::string where = entry_where("projects", t, i);
    r.check_keys(t,
                 {"name", "gitea_repo", "clone_url", "default_branch", "plane_workspace", "plane_project_id",
                  "plane_states", "max_running", "budget_usd"},
                 where);
    ProjectSpec p;
    p.name = r.string_or(t, "name", where, "");
    p.gitea_repo = r.string_or(t, "gitea_repo", where, "");
    p.clone_url = r.string_or(t, "clone_url", where, "");
    p.default_branch = r.string_or(t, "default_branch", where, p.default_branch);
    p.plane_workspace = r.string_or(t, "plane_workspace", where, "");
    p.plane_project_id = r.string_or(t, "plane_project_id", where, "");
    p.max_running = r.small_int_or(t, "max_running", where, p.max_running, 1);
    p.budget = r.usd_or(t, "budget_usd", where, p.budget);
    if (r.failed()) break;
    for (const char* required : {"name", "gitea_repo", "plane_workspace", "plane_project_id"}) {
      if (!Reader::find(t, required)) r.fail(t, where + " is missing " + in_quotes(required));
    }
    if (r.failed()) break;
    const auto slash = p.gitea_repo.find('/');
    if (slash == 0 || slash == std::string::npos || slash + 1 == p.gitea_repo.size() ||
        p.gitea_repo.find('/', slash + 1) != std::string::npos) {
      r.fail(*Reader::find(t, "gitea_repo"),
             "'gitea_repo' in " + where + " must be owner/name, not \"" + p.gitea_repo + "\"");
      break;
    }
    if (const toml::value* states = r.table(t, "plane_states", "'plane_states' in " + where)) {
      const std::string states_where = "plane_states of " + where;
      r.check_keys(*states, {"in_progress", "approved", "rejected"}, states_where);
      p.plane_states.in_progress = r.string_or(*states, "in_progress", states_where, p.plane_states.in_progress);
      p.plane_states.approved = r.string_or(*states, "approved", states_where, p.plane_states.approved);
      p.plane_states.rejected = r.string_or(*states, "rejected", states_where, p.plane_states.rejected);
    }
    if (r.failed()) break;
    // Webhooks are routed to a project by repository and by Plane project id: each must name one project, compared
    // as the senders compare them (match_key: "Acme/App" and "acme/app" are one repository).
    auto unique = [&](std::map<std::string, unsigned>& seen, const char* key, const std::string& value,
                      const char* what) {
      const toml::value& at = *Reader::find(t, key);
      auto [it, inserted] = seen.emplace(std::string(key) == "name" ? value : match_key(value), line_of(at));
      if (!inserted)
        r.fail(at, std::string(what) + " \"" + value + "\" (first on line " + std::to_string(it->second) + ")");
    };
    unique(name_lines, "name", p.name, "duplicate project name");
    unique(repo_lines, "gitea_repo", p.gitea_repo, "a second project for gitea_repo");
    unique(plane_id_lines, "plane_project_id", p.plane_project_id, "a second project for plane_project_id");
    projects.push_back(std::move(p));
  }
  return projects;
}

std::map<std::string, AgentSpec> read_agents(Reader& r, const toml::value& root,
                                             const std::filesystem::path& base_dir) {
  std::map<std::string, AgentSpec> agents;
  const toml::value* t = r.table(root, "agents", "'agents'");
  if (!t) return agents;
  // Map order is by name; report problems in file order.
  std::vector<std::pair<std::string, const toml::value*>> entries;
  for (const auto& [name, value] : t->as_table()) entries.emplace_back(name, &value);
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return std::make_pair(line_of(*a.second), a.first) < std::make_pair(line_of(*b.second), b.first);
  });
  for (const auto& [name, value] : entries) {
    if (r.failed()) break;
    const std::string where = "[agents." + name + "]";
    if (!value->is_table()) {
      r.fail(*value, "'agents." + name + "' must be a table, written " + where + ", not " + type_phrase(*value));
      break;
    }
    const toml::value& a = *value;
    r.check_keys(a, {"argv", "timeout", "max_attempts", "max_running", "budget_usd_per_task", "env", "runs_on"}, where);
    AgentSpec spec;
    spec.name = name;
    spec.argv = r.strings(a, "argv", where);
    if (!r.failed() && spec.argv.empty()) {
      const toml::value* argv = Reader::find(a, "argv");
      r.fail(argv ? *argv : a, argv ? "'argv' in " + where + " must name a program: it is empty"
                                    : where + " is missing 'argv', the command that runs the agent");
    }
    if (!spec.argv.empty()) spec.argv[0] = resolve_program(spec.argv[0], base_dir);
    spec.timeout = r.duration_or(a, "timeout", where, spec.timeout);
    spec.max_attempts = r.small_int_or(a, "max_attempts", where, spec.max_attempts, 1);
    spec.max_running = r.small_int_or(a, "max_running", where, spec.max_running, 1);
    spec.budget_per_task = r.usd_or(a, "budget_usd_per_task", where, spec.budget_per_task);
    spec.runs_on = r.strings(a, "runs_on", where);
    if (const toml::value* env = r.table(a, "env", "'env' in " + where)) {
      for (const auto& [key, v] : env->as_table()) {
        if (r.failed()) break;
        if (!is_env_name(key)) {
          r.fail(v, "'env' in " + where + " has " + in_quotes(key) +
                        ", which is not a variable name (letters, digits, _)");
        } else if (!v.is_string()) {
          r.fail(v, "env " + in_quotes(key) + " in " + where + " must be a string, not " + type_phrase(v));
        } else {
          spec.env[key] = v.as_string().str;
        }
      }
    }
    agents.emplace(name, std::move(spec));
  }
  return agents;
}

GateSpec read_gate(Reader& r, const toml::value& g, const std::string& where, const std::filesystem::path& base_dir) {
  GateSpec gate;
  if (!g.is_table()) {
    r.fail(g, "a gate in " + where + " must be a table such as { type = \"ci_green\" }, not " + type_phrase(g));
    return gate;
  }
  r.check_keys(g, {"type", "paths", "argv", "of"}, "the gate of " + where);
  const toml::value* type = Reader::find(g, "type");
  if (r.failed()) return gate;
  if (!type) {
    r.fail(g, "a gate in " + where + " is missing 'type'");
    return gate;
  }
  const std::string type_name = r.string_or(g, "type", "the gate of " + where, "");
  if (r.failed()) return gate;
  const std::optional<GateSpec::Type> t = parse_gate_type(type_name);
  if (!t) {
    r.fail(*type,
           "unknown gate type \"" + type_name + "\" in " + where +
               " (known: human_approval, ci_green, pr_open, pr_approved, pr_merged, artifacts, command, all, any)");
    return gate;
  }
  gate.type = *t;
  const std::string gate_where = "the " + type_name + " gate of " + where;
  auto only_for = [&](const char* key, bool applies) {
    if (const toml::value* v = Reader::find(g, key); v && !applies)
      r.fail(*v, in_quotes(key) + " does not apply to " + gate_where);
  };
  only_for("paths", gate.type == GateSpec::Type::kArtifacts);
  only_for("argv", gate.type == GateSpec::Type::kCommand);
  only_for("of", gate.type == GateSpec::Type::kAll || gate.type == GateSpec::Type::kAny);
  if (r.failed()) return gate;
  switch (gate.type) {
    case GateSpec::Type::kArtifacts: {
      gate.paths = r.strings(g, "paths", gate_where);
      if (r.failed()) break;
      if (gate.paths.empty()) {
        const toml::value* paths = Reader::find(g, "paths");
        r.fail(paths ? *paths : g, paths ? "'paths' in " + gate_where + " is empty" : gate_where + " needs 'paths'");
      }
      // The gate looks inside the task's worktree; a path leaving it would check something else.
      if (gate.paths.empty()) break;
      for (const toml::value& p : Reader::find(g, "paths")->as_array()) {
        const std::filesystem::path path(p.as_string().str);
        const bool escapes = std::any_of(path.begin(), path.end(), [](const auto& part) { return part == ".."; });
        if (path.is_absolute() || escapes)
          r.fail(p, "'paths' in " + gate_where + " must be relative to the worktree, not \"" + path.string() + "\"");
      }
      break;
    }
    case GateSpec::Type::kCommand: {
      gate.argv = r.strings(g, "argv", gate_where);
      if (r.failed()) break;
      if (gate.argv.empty()) {
        const toml::value* argv = Reader::find(g, "argv");
        r.fail(argv ? *argv : g, argv ? "'argv' in " + gate_where + " is empty" : gate_where + " needs 'argv'");
        break;
      }
      gate.argv[0] = resolve_program(gate.argv[0], base_dir);
      break;
    }
    case GateSpec::Type::kAll:
    case GateSpec::Type::kAny: {
      const toml::value* of = Reader::find(g, "of");
      if (!of) {
        r.fail(g, gate_where + " needs 'of', the list of gates it combines");
        break;
      }
      if (!of->is_array()) {
        r.fail(*of, "'of' in " + gate_where + " must be an array of gates, not " + type_phrase(*of));
        break;
      }
      if (of->as_array().empty()) {
        r.fail(*of, "'of' in " + gate_where + " is empty");
        break;
      }
      for (const toml::value& inner : of->as_array()) {
        if (r.failed()) break;
        gate.of.push_back(read_gate(r, inner, where, base_dir));
      }
      break;
    }
    default: break;
  }
  return gate;
}

const std::set<std::string, std::less<>> kImplicitStages = {"created", "done"};

std::vector<StageSpec> read_stages(Reader& r, const toml::value& root, const std::map<std::string, AgentSpec>& agents,
                                   const std::filesystem::path& base_dir) {
  std::vector<StageSpec> stages;
  const auto entries = table_array(r, root, "stages");
  if (r.failed()) return stages;
  if (entries.empty()) {
    r.fail_at(1, "no stages: declare the pipeline with at least one [[stages]] table");
    return stages;
  }
  std::map<std::string, unsigned> name_lines;
  for (std::size_t i = 0; i < entries.size() && !r.failed(); ++i) {
    const toml::value& t = *entries[i];
    const std::string where = entry_where("stages", t, i);
    r.check_keys(t,
                 {"name", "agent", "gate", "human", "open_pr", "grace", "on_reject", "on_changes_requested",
                  "plane_state", "post_review"},
                 where);
    StageSpec s;
    s.name = r.string_or(t, "name", where, "");
    if (r.failed()) break;
    const toml::value* name = Reader::find(t, "name");
    if (!name) {
      r.fail(t, where + " is missing 'name'");
      break;
    }
    if (kImplicitStages.contains(s.name)) {
      r.fail(*name, "a stage may not be named \"" + s.name + "\": created and done are implicit");
      break;
    }
    if (auto [it, inserted] = name_lines.emplace(s.name, line_of(*name)); !inserted) {
      r.fail(*name, "duplicate stage \"" + s.name + "\" (first on line " + std::to_string(it->second) + ")");
      break;
    }
    s.agent = r.string_or(t, "agent", where, "");
    if (!r.failed() && !s.agent.empty() && !agents.contains(s.agent))
      r.fail(*Reader::find(t, "agent"),
             where + " names agent \"" + s.agent + "\", but there is no [agents." + s.agent + "]");
    if (const toml::value* gate = Reader::find(t, "gate"); gate && !r.failed())
      s.gate = read_gate(r, *gate, where, base_dir);
    s.human = r.bool_or(t, "human", where, s.human);
    s.open_pr = r.bool_or(t, "open_pr", where, s.open_pr);
    if (Reader::find(t, "grace")) s.grace = r.duration_or(t, "grace", where, seconds{0}, /*allow_zero=*/true);
    s.on_reject = r.string_or(t, "on_reject", where, "");
    s.on_changes_requested = r.string_or(t, "on_changes_requested", where, "");
    s.plane_state = r.string_or(t, "plane_state", where, "");
    if (const toml::value* v = Reader::find(t, "plane_state"); v && !r.failed())
      s.plane_state_line = static_cast<int>(line_of(*v));
    s.post_review = r.bool_or(t, "post_review", where, s.post_review);
    // The verdict is the agent's exit code: a stage without an agent has nobody to give it.
    if (!r.failed() && s.post_review && s.agent.empty())
      r.fail(*Reader::find(t, "post_review"),
             "'post_review' in " + where + " needs an agent: the review verdict is the agent's exit code");
    stages.push_back(std::move(s));
  }
  // Rollback edges may point forward or backward, so they are checked once every stage is known.
  for (std::size_t i = 0; i < stages.size() && !r.failed(); ++i) {
    const std::string where = entry_where("stages", *entries[i], i);
    for (const char* key : {"on_reject", "on_changes_requested"}) {
      const toml::value* v = Reader::find(*entries[i], key);
      if (!v) continue;
      const std::string& target = v->as_string().str;
      if (!name_lines.contains(target))
        r.fail(*v, in_quotes(key) + " in " + where + " names stage \"" + target +
                       "\", which is not declared in [[stages]]");
    }
  }
  return stages;
}

std::string done_state_key() { return "'done_state' in [plane]"; }
std::string plane_state_key(const StageSpec& stage) { return "'plane_state' in [[stages]] \"" + stage.name + "\""; }

// A state orch moves a work item to must not be one of a project's trigger states: the item's next webhook (or the
// reconciler) would read the move back as a verdict or a start and run the pipeline again. Names compare exactly,
// as the Plane client resolves them (integrations/plane_client.cpp). Reported in file order.
void check_no_trigger_states(Reader& r, const Config& config) {
  struct Use {
    int line;
    std::string state, key;
  };
  std::vector<Use> uses;
  for (const StageSpec& s : config.stages)
    if (!s.plane_state.empty()) uses.push_back({s.plane_state_line, s.plane_state, plane_state_key(s)});
  if (!config.plane_done_state.empty())
    uses.push_back({config.plane_done_state_line, config.plane_done_state, done_state_key()});
  std::stable_sort(uses.begin(), uses.end(), [](const Use& a, const Use& b) { return a.line < b.line; });
  for (const Use& use : uses) {
    for (const ProjectSpec& p : config.projects) {
      for (auto [name, which] :
           {std::pair{&p.plane_states.in_progress, "in_progress"}, std::pair{&p.plane_states.approved, "approved"},
            std::pair{&p.plane_states.rejected, "rejected"}}) {
        if (use.state != *name) continue;
        r.fail_at(static_cast<unsigned>(use.line), use.key + " is \"" + use.state + "\", the " + which +
                                                       " state of [[projects]] \"" + p.name +
                                                       "\": moving a work item there would trigger the pipeline again");
        return;
      }
    }
  }
}

// toml11 puts "[error] toml::parse_xxx: " before what went wrong, then a framed excerpt of the file.
std::string syntax_message(const std::string& what) {
  std::string first = what.substr(0, what.find('\n'));
  std::string rest = what.find('\n') == std::string::npos ? "" : what.substr(what.find('\n'));
  if (first.starts_with("[error] ")) first.erase(0, 8);
  if (first.starts_with("toml::")) {
    const auto colon = first.find(": ");
    if (colon != std::string::npos) first.erase(0, colon + 2);
  }
  return "syntax error: " + first + rest;
}

}  // namespace

const char* gate_type_name(GateSpec::Type t) {
  switch (t) {
    case GateSpec::Type::kHumanApproval: return "human_approval";
    case GateSpec::Type::kCiGreen: return "ci_green";
    case GateSpec::Type::kPrOpen: return "pr_open";
    case GateSpec::Type::kPrApproved: return "pr_approved";
    case GateSpec::Type::kPrMerged: return "pr_merged";
    case GateSpec::Type::kArtifacts: return "artifacts";
    case GateSpec::Type::kCommand: return "command";
    case GateSpec::Type::kAll: return "all";
    case GateSpec::Type::kAny: return "any";
  }
  return "unknown";
}

std::optional<GateSpec::Type> parse_gate_type(std::string_view s) {
  for (auto t : {GateSpec::Type::kHumanApproval, GateSpec::Type::kCiGreen, GateSpec::Type::kPrOpen,
                 GateSpec::Type::kPrApproved, GateSpec::Type::kPrMerged, GateSpec::Type::kArtifacts,
                 GateSpec::Type::kCommand, GateSpec::Type::kAll, GateSpec::Type::kAny}) {
    if (s == gate_type_name(t)) return t;
  }
  return std::nullopt;
}

bool gate_is_human(const GateSpec& g) {
  if (g.type == GateSpec::Type::kHumanApproval) return true;
  return std::any_of(g.of.begin(), g.of.end(), gate_is_human);
}

const ProjectSpec* Config::find_project(std::string_view name) const {
  for (const auto& p : projects)
    if (p.name == name) return &p;
  return nullptr;
}

std::string match_key(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

const ProjectSpec* Config::find_project_by_repo(std::string_view gitea_repo) const {
  const std::string key = match_key(gitea_repo);
  for (const auto& p : projects)
    if (match_key(p.gitea_repo) == key) return &p;
  return nullptr;
}

const ProjectSpec* Config::find_project_by_plane_id(std::string_view plane_project_id) const {
  const std::string key = match_key(plane_project_id);
  for (const auto& p : projects)
    if (match_key(p.plane_project_id) == key) return &p;
  return nullptr;
}

std::optional<std::chrono::seconds> parse_duration(std::string_view s) {
  // One or more <digits><unit> groups: "90s", "15m", "1h30m". No sign, no spaces, no bare numbers: a
  // bare "5" could mean seconds or minutes, and the config is a contract.
  if (s.empty()) return std::nullopt;
  constexpr std::int64_t kMax = std::int64_t{1} << 40;  // ~35,000 years: far past any sane value, far from overflow
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    std::int64_t n = 0;
    const std::size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      n = n * 10 + (s[i] - '0');
      if (n > kMax) return std::nullopt;
      ++i;
    }
    if (i == start || i == s.size()) return std::nullopt;
    std::int64_t unit = 0;
    switch (s[i]) {
      case 's': unit = 1; break;
      case 'm': unit = 60; break;
      case 'h': unit = 3600; break;
      case 'd': unit = 86400; break;
      default: return std::nullopt;
    }
    ++i;
    total += n * unit;
    if (total > kMax) return std::nullopt;
  }
  return std::chrono::seconds(total);
}

Result<Config> parse_config(const std::string& text, const std::string& filename) {
  toml::value root;
  try {
    std::istringstream in(text);
    root = toml::parse(in, filename);
  } catch (const toml::syntax_error& e) {
    return invalid(filename + ":" + std::to_string(e.location().line()) + ": " + syntax_message(e.what()));
  } catch (const std::exception& e) {
    return invalid(filename + ":1: cannot parse: " + std::string(e.what()));
  }

  Reader r(filename);
  Config config;
  config.source_path = filename;
  const std::filesystem::path base_dir = config_dir(filename);
  try {
    r.check_keys(
        root, {"server", "plane", "gitea", "telegram", "reconciler", "jobs", "store", "projects", "agents", "stages"},
        "the top-level table");
    config.server = read_server(r, root);
    read_base_url(r, root, "plane", "base_url", config.plane_base_url, {"write_back", "done_state"});
    if (const toml::value* plane = r.table(root, "plane", "'plane'")) {
      config.plane_write_back = r.bool_or(*plane, "write_back", "[plane]", config.plane_write_back);
      config.plane_done_state = r.string_or(*plane, "done_state", "[plane]", "");
      if (const toml::value* v = Reader::find(*plane, "done_state"); v && !r.failed())
        config.plane_done_state_line = static_cast<int>(line_of(*v));
    }
    read_base_url(r, root, "gitea", "base_url", config.gitea_base_url, {"official_reviews_only"});
    if (const toml::value* gitea = r.table(root, "gitea", "'gitea'"))
      config.gitea_official_reviews_only =
          r.bool_or(*gitea, "official_reviews_only", "[gitea]", config.gitea_official_reviews_only);
    read_base_url(r, root, "telegram", "api_base", config.telegram_api_base);
    if (const toml::value* store = r.table(root, "store", "'store'")) {
      r.check_keys(*store, {"url", "leader_takeover"}, "[store]");
      config.store_url = r.string_or(*store, "url", "[store]", "", /*allow_empty=*/true);
      config.leader_takeover = r.duration_or(*store, "leader_takeover", "[store]", config.leader_takeover);
    }
    config.reconciler = read_reconciler(r, root);
    config.jobs = read_jobs(r, root);
    config.projects = read_projects(r, root);
    config.agents = read_agents(r, root, base_dir);
    if (!r.failed()) config.stages = read_stages(r, root, config.agents, base_dir);
    if (!r.failed()) check_no_trigger_states(r, config);
  } catch (const std::exception& e) {  // a toml11 accessor threw despite the checks above: a bug here
    return internal(filename + ": reading the config failed: " + std::string(e.what()));
  }
  if (r.failed()) return r.error();
  return config;
}

std::vector<PlaneStateRef> plane_state_refs(const Config& config) {
  std::vector<PlaneStateRef> refs;
  for (const ProjectSpec& p : config.projects) {
    for (const StageSpec& s : config.stages)
      if (!s.plane_state.empty()) refs.push_back({p.name, s.plane_state, s.plane_state_line, plane_state_key(s)});
    if (!config.plane_done_state.empty())
      refs.push_back({p.name, config.plane_done_state, config.plane_done_state_line, done_state_key()});
  }
  return refs;
}

Result<Config> load_config(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return invalid("cannot read " + path + ": it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return invalid("cannot read " + path + ": " + std::strerror(errno));
  return parse_config(text.str(), path);
}

JobLimits job_limits(const Config& config) {
  JobLimits limits;
  limits.max_running = config.jobs.max_running;
  for (const ProjectSpec& p : config.projects)
    if (p.max_running > 0) limits.per_project[p.name] = p.max_running;
  for (const auto& [name, agent] : config.agents)
    if (agent.max_running > 0) limits.per_agent[name] = agent.max_running;
  return limits;
}

ClaimScope server_claim_scope(const Config& config) {
  ClaimScope scope;
  for (const auto& [name, agent] : config.agents) {
    if (agent.remote())
      scope.any_agent = false;
    else
      scope.agents.push_back(name);
  }
  if (scope.any_agent) scope.agents.clear();
  return scope;
}

ClaimScope runner_claim_scope(const Config& config, const std::vector<std::string>& labels) {
  ClaimScope scope{.fresh = true, .any_agent = false, .agents = {}, .steps = false};
  for (const auto& [name, agent] : config.agents)
    for (const std::string& label : agent.runs_on)
      if (std::find(labels.begin(), labels.end(), label) != labels.end()) {
        scope.agents.push_back(name);
        break;
      }
  return scope;
}

}  // namespace orch
