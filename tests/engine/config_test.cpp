// tests/engine/config_test.cpp: the config file is a contract; every rejection names the file and the line.
#include "engine/config.h"

#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <initializer_list>
#include <string>
#include <vector>

#include "app/settings.h"  // the ORCH_PLANE_WRITE_BACK test at the end
#include "tests/support/temp_dir.h"

namespace orch {
namespace {

using namespace std::chrono_literals;

// Lines of TOML, numbered from 1 in the order written, so each test states the line it expects.
std::string toml(std::initializer_list<std::string> lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// A valid pipeline appended after the lines under test, so those keep their numbers.
std::string with_pipeline(std::initializer_list<std::string> lines) {
  return toml(lines) + toml({
                           "[agents.dev]",
                           "argv = [\"/bin/true\"]",
                           "[[stages]]",
                           "name = \"development\"",
                           "agent = \"dev\"",
                           "gate = { type = \"ci_green\" }",
                       });
}

std::string error_of(const std::string& text, const std::string& filename = "orch.toml") {
  Result<Config> r = parse_config(text, filename);
  if (r.ok()) return "(parsed without error)";
  CHECK(r.status().code == Code::kInvalid);
  return r.status().message;
}

// The message starts with "orch.toml:LINE: " and says `what`.
void check_error(const std::string& text, int line, const std::string& what) {
  const std::string message = error_of(text);
  INFO("message: " << message);
  const std::string prefix = "orch.toml:" + std::to_string(line) + ": ";
  CHECK(message.substr(0, prefix.size()) == prefix);
  CHECK(message.find(what) != std::string::npos);
}

Config parse_ok(const std::string& text, const std::string& filename = "orch.toml") {
  Result<Config> r = parse_config(text, filename);
  INFO("error: " << r.status().message);
  REQUIRE(r.ok());
  return r.value();
}

TEST_CASE("config: an unknown key in any table is rejected with its line") {
  struct Case {
    std::string text;
    int line;
    std::string what;
  };
  const std::vector<Case> cases = {
      {with_pipeline({"colour = 1"}), 1, "unknown key 'colour' in the top-level table"},
      {with_pipeline({"[server]", "listen = \"127.0.0.1:1\"", "port = 1"}), 3, "unknown key 'port' in [server]"},
      {with_pipeline({"[plane]", "base_url = \"http://x\"", "token = \"t\""}), 3, "unknown key 'token' in [plane]"},
      {with_pipeline({"[gitea]", "url = \"http://x\""}), 2, "unknown key 'url' in [gitea]"},
      {with_pipeline({"[telegram]", "chat_id = \"1\""}), 2, "unknown key 'chat_id' in [telegram]"},
      {with_pipeline({"[reconciler]", "enabled = true", "", "interva = \"60s\""}), 4,
       "unknown key 'interva' in [reconciler] (did you mean 'interval'?)"},
      {with_pipeline({"[jobs]", "worker = 2"}), 2, "unknown key 'worker' in [jobs] (did you mean 'workers'?)"},
      {with_pipeline({"[store]", "uri = \"postgresql://x\""}), 2, "unknown key 'uri' in [store] (did you mean 'url'?)"},
      {with_pipeline({"[[projects]]", "name = \"shop\"", "gitea_repo = \"acme/shop\"", "plane_workspace = \"acme\"",
                      "plane_project_id = \"p1\"", "branch = \"main\""}),
       6, "unknown key 'branch' in [[projects]] \"shop\""},
      {with_pipeline({"[[projects]]", "name = \"shop\"", "gitea_repo = \"acme/shop\"", "plane_workspace = \"acme\"",
                      "plane_project_id = \"p1\"", "plane_states = { in_progress = \"Doing\", approve = \"OK\" }"}),
       6, "unknown key 'approve' in plane_states of [[projects]] \"shop\" (did you mean 'approved'?)"},
      {with_pipeline({"[agents.analyst]", "argv = [\"a\"]", "timout = \"1m\""}), 3,
       "unknown key 'timout' in [agents.analyst] (did you mean 'timeout'?)"},
      {toml({"[agents.dev]", "argv = [\"/bin/true\"]", "[[stages]]", "name = \"development\"",
             "gaet = { type = \"ci_green\" }"}),
       5, "unknown key 'gaet' in [[stages]] \"development\" (did you mean 'gate'?)"},
      {toml({"[[stages]]", "name = \"development\"", "gate = { type = \"ci_green\", pahts = [\"x\"] }"}), 3,
       "unknown key 'pahts' in the gate of [[stages]] \"development\" (did you mean 'paths'?)"},
  };
  for (const Case& c : cases) {
    INFO("toml:\n" << c.text);
    check_error(c.text, c.line, c.what);
  }
}

TEST_CASE("config: an unknown key far from every known key gets no suggestion") {
  const std::string message = error_of(with_pipeline({"[jobs]", "parallelism = 4"}));
  CHECK(message == "orch.toml:2: unknown key 'parallelism' in [jobs]");
}

TEST_CASE("config: a value of the wrong type names its line and the expected type") {
  check_error(with_pipeline({"[jobs]", "workers = \"2\""}), 2, "'workers' in [jobs] must be an integer, not a string");
  check_error(with_pipeline({"[server]", "listen = 8080"}), 2, "'listen' in [server] must be a string, not an integer");
  check_error(with_pipeline({"[reconciler]", "enabled = \"yes\""}), 2,
              "'enabled' in [reconciler] must be true or false");
  check_error(with_pipeline({"[agents.a]", "argv = \"/bin/a\""}), 2,
              "'argv' in [agents.a] must be an array of strings");
  check_error(with_pipeline({"[agents.a]", "argv = [\"/bin/a\", 3]"}), 2, "must hold only strings, not an integer");
  check_error(with_pipeline({"[agents.a]", "argv = [\"/bin/a\"]", "env = { MODEL = 1 }"}), 3,
              "env 'MODEL' in [agents.a] must be a string");
  check_error(with_pipeline({"server = \"x\""}), 1, "'server' must be a table, not a string");
  check_error(toml({"[stages]", "name = \"x\""}), 1, "'stages' must be an array of tables, written [[stages]]");
  check_error(toml({"[agents.dev]", "argv = [\"/bin/true\"]", "[[stages]]", "name = \"development\"", "agent = \"dev\"",
                    "human = 1"}),
              6, "'human' in [[stages]] \"development\" must be true or false, not an integer");
  check_error(toml({"[[stages]]", "name = \"development\"", "gate = \"ci_green\""}), 3, "must be a table such as");
}

TEST_CASE("config: a malformed duration names its line and the accepted units") {
  for (std::string bad : {"90x", "", "-5s", "5", "5 s", "s", "1.5h"}) {
    INFO("duration: \"" << bad << "\"");
    check_error(
        with_pipeline({"[reconciler]", "enabled = true", "interval = \"" + bad + "\""}), 3,
        "'interval' in [reconciler] is not a duration: \"" + bad + "\" (write a whole number with a unit s, m, h or d");
  }
  check_error(with_pipeline({"[jobs]", "queued_ttl = 7200"}), 2,
              "'queued_ttl' in [jobs] must be a duration string with a unit such as \"90s\"");
  check_error(with_pipeline({"[reconciler]", "interval = \"0s\""}), 2,
              "'interval' in [reconciler] must be longer than zero");
  check_error(with_pipeline({"[agents.a]", "argv = [\"a\"]", "timeout = \"0m\""}), 3,
              "'timeout' in [agents.a] must be longer than zero");
  check_error(toml({"[[stages]]", "name = \"development\"", "grace = \"30\""}), 3,
              "'grace' in [[stages]] \"development\" is not a duration: \"30\"");
}

TEST_CASE("config: parse_duration reads whole numbers with s, m, h or d") {
  CHECK(parse_duration("90s") == 90s);
  CHECK(parse_duration("15m") == 15min);
  CHECK(parse_duration("2h") == 2h);
  CHECK(parse_duration("1d") == 24h);
  CHECK(parse_duration("1h30m") == 90min);
  CHECK(parse_duration("0s") == 0s);
  for (std::string_view bad :
       {"", "5", "90x", "-5s", "+5s", " 5s", "5s ", "5S", "m", "1.5h", "99999999999999999999s"}) {
    INFO("duration: \"" << bad << "\"");
    CHECK_FALSE(parse_duration(bad).has_value());
  }
}

TEST_CASE("config: a stage naming a missing agent is rejected at the agent's line") {
  check_error(
      toml({"[agents.dev]", "argv = [\"/bin/true\"]", "[[stages]]", "name = \"development\"", "agent = \"develper\""}),
      5, "[[stages]] \"development\" names agent \"develper\", but there is no [agents.develper]");
}

TEST_CASE("config: a gate of unknown type is rejected at its line") {
  check_error(toml({"[[stages]]", "name = \"development\"", "", "gate = { type = \"ci_greeen\" }"}), 4,
              "unknown gate type \"ci_greeen\" in [[stages]] \"development\"");
  check_error(toml({"[[stages]]", "name = \"review\"", "gate = { type = \"any\", of = [",
                    "  { type = \"pr_approved\" },", "  { type = \"pr_mergd\" },", "] }"}),
              5, "unknown gate type \"pr_mergd\"");
  check_error(toml({"[[stages]]", "name = \"development\"", "gate = { of = [] }"}), 3,
              "a gate in [[stages]] \"development\" is missing 'type'");
}

TEST_CASE("config: an artifacts gate needs paths") {
  check_error(toml({"[[stages]]", "name = \"analysis\"", "gate = { type = \"artifacts\" }"}), 3,
              "the artifacts gate of [[stages]] \"analysis\" needs 'paths'");
  check_error(toml({"[[stages]]", "name = \"analysis\"", "gate = { type = \"artifacts\", paths = [] }"}), 3,
              "'paths' in the artifacts gate of [[stages]] \"analysis\" is empty");
  check_error(toml({"[[stages]]", "name = \"analysis\"", "gate = { type = \"artifacts\", paths = [", "\"../x\"] }"}), 4,
              "must be relative to the worktree");
  check_error(toml({"[[stages]]", "name = \"analysis\"", "gate = { type = \"ci_green\", paths = [\"A.md\"] }"}), 3,
              "'paths' does not apply to the ci_green gate of [[stages]] \"analysis\"");
}

TEST_CASE("config: a command gate needs argv") {
  check_error(toml({"[[stages]]", "name = \"development\"", "gate = { type = \"command\" }"}), 3,
              "the command gate of [[stages]] \"development\" needs 'argv'");
  check_error(toml({"[[stages]]", "name = \"development\"", "gate = { type = \"command\", argv = [] }"}), 3,
              "'argv' in the command gate of [[stages]] \"development\" is empty");
}

TEST_CASE("config: an all or any gate needs a non-empty of") {
  check_error(toml({"[[stages]]", "name = \"review\"", "gate = { type = \"any\" }"}), 3,
              "the any gate of [[stages]] \"review\" needs 'of'");
  check_error(toml({"[[stages]]", "name = \"review\"", "gate = { type = \"all\", of = [] }"}), 3,
              "'of' in the all gate of [[stages]] \"review\" is empty");
  check_error(toml({"[[stages]]", "name = \"review\"", "[stages.gate]", "type = \"all\"", "of = \"ci_green\""}), 5,
              "'of' in the all gate of [[stages]] \"review\" must be an array of gates, not a string");
}

TEST_CASE("config: a duplicate stage name is rejected at the second one") {
  check_error(toml({"[[stages]]", "name = \"review\"", "[[stages]]", "name = \"development\"", "[[stages]]",
                    "name = \"review\""}),
              6, "duplicate stage \"review\" (first on line 2)");
}

TEST_CASE("config: created and done are implicit and may not be declared") {
  check_error(toml({"[[stages]]", "name = \"created\""}), 2, "a stage may not be named \"created\"");
  check_error(toml({"[[stages]]", "name = \"analysis\"", "[[stages]]", "name = \"done\""}), 4,
              "a stage may not be named \"done\"");
}

TEST_CASE("config: a rollback edge must name a declared stage") {
  check_error(toml({"[[stages]]", "name = \"analysis\"", "on_reject = \"analyse\"", "[[stages]]", "name = \"review\""}),
              3, "'on_reject' in [[stages]] \"analysis\" names stage \"analyse\", which is not declared");
  check_error(toml({"[[stages]]", "name = \"analysis\"", "[[stages]]", "name = \"review\"",
                    "on_changes_requested = \"development\""}),
              5, "'on_changes_requested' in [[stages]] \"review\" names stage \"development\"");
  check_error(toml({"[[stages]]", "name = \"analysis\"", "on_reject = \"created\""}), 3, "names stage \"created\"");
}

TEST_CASE("config: a duplicate project is rejected at the second one") {
  const std::string text = with_pipeline({
      "[[projects]]",
      "name = \"shop\"",
      "gitea_repo = \"acme/shop\"",
      "plane_workspace = \"acme\"",
      "plane_project_id = \"p1\"",
      "[[projects]]",
      "name = \"shop\"",
      "gitea_repo = \"acme/shop2\"",
      "plane_workspace = \"acme\"",
      "plane_project_id = \"p2\"",
  });
  check_error(text, 7, "duplicate project name \"shop\" (first on line 2)");
}

TEST_CASE("config: two projects for one repository in different case are rejected, as Gitea sees one repository") {
  const std::string text = with_pipeline({
      "[[projects]]",
      "name = \"shop\"",
      "gitea_repo = \"acme/shop\"",
      "plane_workspace = \"acme\"",
      "plane_project_id = \"p1\"",
      "[[projects]]",
      "name = \"shop2\"",
      "gitea_repo = \"Acme/Shop\"",
      "plane_workspace = \"acme\"",
      "plane_project_id = \"P1\"",
  });
  check_error(text, 8, "a second project for gitea_repo \"Acme/Shop\" (first on line 3)");
}

TEST_CASE("config: a project without its repository or Plane project is rejected at its header") {
  for (std::string missing : {"gitea_repo", "plane_workspace", "plane_project_id"}) {
    std::vector<std::string> fields = {"gitea_repo = \"acme/shop\"", "plane_workspace = \"acme\"",
                                       "plane_project_id = \"p1\""};
    std::erase_if(fields, [&](const std::string& f) { return f.starts_with(missing); });
    const std::string text =
        with_pipeline({"[jobs]", "workers = 1", "", "[[projects]]", "name = \"shop\"", fields[0], fields[1]});
    INFO("missing " << missing);
    check_error(text, 4, "[[projects]] \"shop\" is missing '" + missing + "'");
  }
  check_error(with_pipeline({"[[projects]]", "name = \"shop\"", "gitea_repo = \"shop\"", "plane_workspace = \"acme\"",
                             "plane_project_id = \"p1\""}),
              3, "'gitea_repo' in [[projects]] \"shop\" must be owner/name, not \"shop\"");
}

TEST_CASE("config: an agent with an empty argv is rejected") {
  check_error(with_pipeline({"[agents.analyst]", "timeout = \"1m\"", "argv = []"}), 3,
              "'argv' in [agents.analyst] must name a program: it is empty");
  check_error(with_pipeline({"[agents.analyst]", "timeout = \"1m\""}), 1, "[agents.analyst] is missing 'argv'");
}

TEST_CASE("config: counts below one are rejected") {
  check_error(with_pipeline({"[agents.a]", "argv = [\"a\"]", "max_attempts = 0"}), 3,
              "'max_attempts' in [agents.a] must be at least 1, not 0");
  check_error(with_pipeline({"[jobs]", "workers = 0"}), 2, "'workers' in [jobs] must be at least 1, not 0");
  check_error(with_pipeline({"[server]", "max_body_bytes = -1"}), 2,
              "'max_body_bytes' in [server] must be at least 1, not -1");
  check_error(with_pipeline({"[jobs]", "sweep_batch = 0"}), 2, "'sweep_batch' in [jobs] must be at least 1");
  check_error(with_pipeline({"[jobs]", "step_attempts = 0"}), 2, "'step_attempts' in [jobs] must be at least 1");
  check_error(with_pipeline({"[jobs]", "workers = 3000000000"}), 2, "'workers' in [jobs] must be at most");
}

TEST_CASE("config: a TOML syntax error names its line") {
  check_error(with_pipeline({"[server]", "listen = \"127.0.0.1:8080\"", "data_dir = "}), 3, "syntax error:");
  check_error(with_pipeline({"[jobs]", "workers = 2 3"}), 2, "syntax error:");
  check_error(with_pipeline({"[jobs]", "workers = 2", "", "[jobs]", "sweep_batch = 1"}), 4, "syntax error:");
  check_error(with_pipeline({"[plane]", "base_url = \"http://unterminated"}), 2, "syntax error:");
  // toml11's framed excerpt stays below the first line.
  CHECK(error_of(with_pipeline({"[jobs]", "workers = 2 3"})).find("\n") != std::string::npos);
}

TEST_CASE("config: a config without stages is rejected") {
  check_error(toml({"[jobs]", "workers = 2"}), 1, "no stages");
  check_error("", 1, "no stages");
  check_error(toml({"[agents.dev]", "argv = [\"/bin/true\"]"}), 1, "no stages");
}

TEST_CASE("config: other checks that keep the contract name their line") {
  check_error(with_pipeline({"[plane]", "base_url = \"plane.example.com\""}), 2,
              "'base_url' in [plane] must start with http:// or https://");
  check_error(with_pipeline({"[server]", "listen = \"localhost\""}), 2, "'listen' in [server] must be host:port");
  check_error(with_pipeline({"[agents.a]", "argv = [\"a\"]", "env = { \"NOT A NAME\" = \"x\" }"}), 3,
              "which is not a variable name");
  check_error(toml({"[[stages]]", "agent = \"dev\""}), 1, "[[stages]] #1 is missing 'name'");
}

TEST_CASE("config: absent keys take the documented defaults") {
  const Config c = parse_ok(toml({"[[stages]]", "name = \"development\""}));
  CHECK(c.server.listen == "127.0.0.1:8080");
  CHECK(c.server.data_dir == "./var");
  CHECK(c.server.max_body_bytes == 16 * 1024 * 1024);  // docs/adr/0009
  CHECK(c.plane_base_url.empty());
  CHECK(c.gitea_base_url.empty());
  CHECK(c.telegram_api_base == "https://api.telegram.org");
  CHECK(c.store_url.empty());
  CHECK(c.reconciler.enabled);
  CHECK(c.reconciler.plane_enabled);
  CHECK(c.reconciler.interval == 60s);
  CHECK(c.reconciler.grace_default == 15min);
  CHECK(c.reconciler.notify_unblock);
  CHECK(c.reconciler.max_candidates_per_pass == 500);
  CHECK(c.jobs.workers == 2);
  CHECK(c.jobs.heartbeat_stale == 150s);
  CHECK(c.jobs.dispatch_timeout == 5min);
  CHECK(c.jobs.queued_ttl == 2h);
  CHECK(c.jobs.sweep_batch == 500);
  CHECK(c.jobs.step_attempts == 8);
  CHECK(c.projects.empty());
  CHECK(c.agents.empty());
  REQUIRE(c.stages.size() == 1);
  const StageSpec& s = c.stages[0];
  CHECK(s.agent.empty());
  CHECK_FALSE(s.gate.has_value());
  CHECK_FALSE(s.human);
  CHECK_FALSE(s.open_pr);
  CHECK_FALSE(s.grace.has_value());
  CHECK(s.on_reject.empty());
  CHECK(s.on_changes_requested.empty());

  const Config p = parse_ok(
      with_pipeline({"[agents.a]", "argv = [\"a\"]", "[[projects]]", "name = \"shop\"", "gitea_repo = \"acme/shop\"",
                     "plane_workspace = \"acme\"", "plane_project_id = \"p1\""}));
  REQUIRE(p.projects.size() == 1);
  CHECK(p.projects[0].clone_url.empty());
  CHECK(p.projects[0].default_branch == "main");
  CHECK(p.projects[0].plane_states.in_progress == "In Progress");
  CHECK(p.projects[0].plane_states.approved == "Approved");
  CHECK(p.projects[0].plane_states.rejected == "Rejected");
  const AgentSpec& a = p.agents.at("a");
  CHECK(a.name == "a");
  CHECK(a.timeout == 30min);
  CHECK(a.max_attempts == 3);
  CHECK(a.env.empty());
}

TEST_CASE("config: the optional [store] table and explicit values are read") {
  const Config c = parse_ok(with_pipeline({
      "[server]",
      "max_body_bytes = 2048",
      "[store]",
      "url = \"postgresql://orch@db/orch\"",
      "[reconciler]",
      "enabled = false",
      "interval = \"90s\"",
      "grace_default = \"0s\"",
      "[jobs]",
      "workers = 8",
      "queued_ttl = \"1d\"",
      "step_attempts = 3",
      "[gitea]",
      "base_url = \"https://gitea.example.com/\"",
  }));
  CHECK(c.gitea_base_url == "https://gitea.example.com");
  CHECK(c.server.max_body_bytes == 2048);
  CHECK(c.store_url == "postgresql://orch@db/orch");
  CHECK_FALSE(c.reconciler.enabled);
  CHECK(c.reconciler.interval == 90s);
  CHECK(c.reconciler.grace_default == 0s);
  CHECK(c.jobs.workers == 8);
  CHECK(c.jobs.queued_ttl == 24h);
  CHECK(c.jobs.step_attempts == 3);
}

TEST_CASE("config: max_running is read in [jobs], a project and an agent, and job_limits gathers them") {
  const Config c = parse_ok(with_pipeline({
      "[jobs]",
      "max_running = 4",
      "[[projects]]",
      "name = \"shop\"",
      "gitea_repo = \"acme/shop\"",
      "plane_workspace = \"acme\"",
      "plane_project_id = \"p-1\"",
      "max_running = 2",
      "[[projects]]",
      "name = \"docs\"",
      "gitea_repo = \"acme/docs\"",
      "plane_workspace = \"acme\"",
      "plane_project_id = \"p-2\"",
      "[agents.analyst]",
      "argv = [\"/bin/true\"]",
      "max_running = 1",
  }));
  const JobLimits limits = job_limits(c);
  CHECK(limits.max_running == 4);
  CHECK(limits.per_project == std::map<std::string, int>{{"shop", 2}});   // docs has none
  CHECK(limits.per_agent == std::map<std::string, int>{{"analyst", 1}});  // dev has none
  CHECK(job_limits(parse_ok(with_pipeline({}))).any() == false);
  check_error(with_pipeline({"[jobs]", "max_running = 0"}), 2, "'max_running' in [jobs] must be at least 1, not 0");
  check_error(with_pipeline({"[agents.a]", "argv = [\"a\"]", "max_running = -2"}), 3,
              "'max_running' in [agents.a] must be at least 1, not -2");
  check_error(with_pipeline({"[jobs]", "max_runing = 2"}), 2, "max_running");  // a typo names the key it meant
}

TEST_CASE("config: budget_usd in a project and budget_usd_per_task in an agent are dollars, kept as micro-USD") {
  const Config c = parse_ok(with_pipeline({
      "[[projects]]",
      "name = \"shop\"",
      "gitea_repo = \"acme/shop\"",
      "plane_workspace = \"acme\"",
      "plane_project_id = \"p-1\"",
      "budget_usd = 250",
      "[agents.analyst]",
      "argv = [\"/bin/true\"]",
      "budget_usd_per_task = 1.25",
  }));
  CHECK(c.find_project("shop")->budget == 250'000'000);
  CHECK(c.agents.at("analyst").budget_per_task == 1'250'000);
  CHECK(c.agents.at("dev").budget_per_task == 0);  // none
  check_error(with_pipeline({"[agents.a]", "argv = [\"a\"]", "budget_usd_per_task = 0"}), 3,
              "'budget_usd_per_task' in [agents.a] must be more than 0 and at most 1000000000 US dollars");
  check_error(with_pipeline({"[agents.a]", "argv = [\"a\"]", "budget_usd_per_task = \"5\""}), 3,
              "'budget_usd_per_task' in [agents.a] must be a number of US dollars, not a string");
  check_error(with_pipeline({"[agents.a]", "argv = [\"a\"]", "budget_usd_per_tsak = 5"}), 3,
              "did you mean 'budget_usd_per_task'");  // a typo names the key it meant
}

TEST_CASE("config: relative programs with a slash are resolved against the config file's directory") {
  const std::string text = toml({
      "[agents.local]",
      "argv = [\"agents/run.sh\", \"--stage\", \"x/y\"]",
      "[agents.dotted]",
      "argv = [\"./bin/../agents/run.sh\"]",
      "[agents.on_path]",
      "argv = [\"python3\", \"agent.py\"]",
      "[agents.absolute]",
      "argv = [\"/usr/local/bin/analyst\"]",
      "[[stages]]",
      "name = \"development\"",
      "agent = \"local\"",
      "gate = { type = \"all\", of = [{ type = \"command\", argv = [\"checks/lint.sh\", \"a/b\"] },",
      "                                { type = \"command\", argv = [\"make\", \"check\"] }] }",
  });
  const Config c = parse_ok(text, "/etc/orch/orch.toml");
  CHECK(c.source_path == "/etc/orch/orch.toml");
  CHECK(c.agents.at("local").argv == std::vector<std::string>{"/etc/orch/agents/run.sh", "--stage", "x/y"});
  CHECK(c.agents.at("dotted").argv[0] == "/etc/orch/agents/run.sh");
  CHECK(c.agents.at("on_path").argv == std::vector<std::string>{"python3", "agent.py"});
  CHECK(c.agents.at("absolute").argv[0] == "/usr/local/bin/analyst");
  REQUIRE(c.stages[0].gate.has_value());
  REQUIRE(c.stages[0].gate->of.size() == 2);
  CHECK(c.stages[0].gate->of[0].argv == std::vector<std::string>{"/etc/orch/checks/lint.sh", "a/b"});
  CHECK(c.stages[0].gate->of[1].argv == std::vector<std::string>{"make", "check"});

  // A relative config path is made absolute too: agents run in a worktree, not where orch was started.
  const Config rel = parse_ok(text, "conf/orch.toml");
  CHECK(std::filesystem::path(rel.agents.at("local").argv[0]).is_absolute());
  CHECK(rel.agents.at("local").argv[0].ends_with("/conf/agents/run.sh"));
}

TEST_CASE("config: the example file parses into the default pipeline") {
  const std::string path = std::string(ORCH_SOURCE_DIR) + "/examples/orch.toml";
  Result<Config> r = load_config(path);
  INFO("error: " << r.status().message);
  REQUIRE(r.ok());
  const Config& c = r.value();
  CHECK(c.source_path == path);
  CHECK(c.plane_base_url == "http://127.0.0.1:9801");
  CHECK(c.gitea_base_url == "http://127.0.0.1:9802");
  CHECK(c.telegram_api_base == "http://127.0.0.1:9803");

  REQUIRE(c.projects.size() == 1);
  const ProjectSpec* shop = c.find_project("shop");
  REQUIRE(shop != nullptr);
  CHECK(shop->gitea_repo == "acme/shop");
  CHECK(shop->default_branch == "main");
  CHECK(shop->plane_workspace == "acme");
  CHECK(c.find_project_by_repo("acme/shop") == shop);
  CHECK(c.find_project_by_plane_id(shop->plane_project_id) == shop);
  CHECK(c.find_project("other") == nullptr);
  CHECK(c.find_project_by_repo("acme/other") == nullptr);
  CHECK(c.find_project_by_plane_id("nope") == nullptr);

  const std::filesystem::path examples = std::filesystem::path(ORCH_SOURCE_DIR).lexically_normal() / "examples";
  for (const char* name : {"analyst", "developer", "reviewer"}) {
    INFO("agent " << name);
    REQUIRE(c.agents.contains(name));
    const std::string script = (examples / "agents" / (std::string(name) + ".sh")).string();
    CHECK(c.agents.at(name).argv == std::vector<std::string>{script});
    CHECK(std::filesystem::exists(script));
  }

  REQUIRE(c.stages.size() == 3);
  const StageSpec& analysis = c.stages[0];
  CHECK(analysis.name == "analysis");
  CHECK(analysis.agent == "analyst");
  REQUIRE(analysis.gate.has_value());
  CHECK(analysis.gate->type == GateSpec::Type::kHumanApproval);
  CHECK(gate_is_human(*analysis.gate));
  CHECK(analysis.human);
  CHECK(analysis.on_reject == "analysis");

  const StageSpec& development = c.stages[1];
  CHECK(development.name == "development");
  CHECK(development.agent == "developer");
  CHECK(development.open_pr);
  REQUIRE(development.gate.has_value());
  CHECK(development.gate->type == GateSpec::Type::kCiGreen);
  CHECK_FALSE(gate_is_human(*development.gate));
  CHECK(development.grace == std::optional<std::chrono::seconds>(30min));

  const StageSpec& review = c.stages[2];
  CHECK(review.name == "review");
  CHECK(review.agent == "reviewer");
  REQUIRE(review.gate.has_value());
  CHECK(review.gate->type == GateSpec::Type::kAny);
  REQUIRE(review.gate->of.size() == 2);
  CHECK(review.gate->of[0].type == GateSpec::Type::kPrApproved);
  CHECK(review.gate->of[1].type == GateSpec::Type::kPrMerged);
  CHECK(review.on_changes_requested == "development");
  CHECK_FALSE(review.human);
  CHECK(review.plane_state == "In Review");
  CHECK(review.post_review);
  CHECK_FALSE(development.post_review);
  CHECK(development.plane_state.empty());
  CHECK(c.plane_write_back);
  CHECK(c.plane_done_state == "Done");
}

TEST_CASE("config: human may be set on any stage, and a human_approval anywhere in a gate makes it human") {
  const Config c = parse_ok(toml({
      "[[stages]]",
      "name = \"development\"",
      "gate = { type = \"ci_green\" }",
      "human = true",
      "[[stages]]",
      "name = \"review\"",
      "gate = { type = \"all\", of = [{ type = \"ci_green\" }, { type = \"any\", of = [{ type = \"human_approval\" }] "
      "}] }",
  }));
  CHECK(c.stages[0].human);
  CHECK_FALSE(gate_is_human(*c.stages[0].gate));
  CHECK(gate_is_human(*c.stages[1].gate));
}

TEST_CASE("config: gate type names round-trip") {
  for (auto t : {GateSpec::Type::kHumanApproval, GateSpec::Type::kCiGreen, GateSpec::Type::kPrOpen,
                 GateSpec::Type::kPrApproved, GateSpec::Type::kPrMerged, GateSpec::Type::kArtifacts,
                 GateSpec::Type::kCommand, GateSpec::Type::kAll, GateSpec::Type::kAny}) {
    CHECK(parse_gate_type(gate_type_name(t)) == t);
  }
  CHECK_FALSE(parse_gate_type("CI_GREEN").has_value());
  CHECK_FALSE(parse_gate_type("").has_value());
}

TEST_CASE("config: load_config reports an unreadable file and names it") {
  testing::TempDir dir;
  const std::string missing = dir.file("missing.toml");
  Result<Config> r = load_config(missing);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code == Code::kInvalid);
  CHECK(r.status().message == "cannot read " + missing + ": No such file or directory");

  Result<Config> d = load_config(dir.path().string());
  REQUIRE_FALSE(d.ok());
  CHECK(d.status().message.starts_with("cannot read " + dir.path().string() + ": "));

  const std::string bad = dir.file("bad.toml");
  std::ofstream(bad) << "[jobs]\nworkers = \"2\"\n";
  Result<Config> b = load_config(bad);
  REQUIRE_FALSE(b.ok());
  CHECK(b.status().message.starts_with(bad + ":2: 'workers' in [jobs] must be an integer"));
}

TEST_CASE("config: [gitea] official_reviews_only defaults to true, reads a bool, and rejects other types at its line") {
  CHECK(parse_ok(with_pipeline({"[gitea]", "base_url = \"http://x\""})).gitea_official_reviews_only);
  CHECK(parse_ok(with_pipeline({})).gitea_official_reviews_only);
  CHECK_FALSE(parse_ok(with_pipeline({"[gitea]", "base_url = \"http://x\"", "official_reviews_only = false"}))
                  .gitea_official_reviews_only);
  CHECK(parse_ok(with_pipeline({"[gitea]", "official_reviews_only = true"})).gitea_official_reviews_only);
  check_error(with_pipeline({"[gitea]", "base_url = \"http://x\"", "official_reviews_only = \"yes\""}), 3,
              "'official_reviews_only' in [gitea] must be true or false, not a string");
  check_error(with_pipeline({"[gitea]", "oficial_reviews_only = false"}), 2,
              "unknown key 'oficial_reviews_only' in [gitea] (did you mean 'official_reviews_only'?)");
}

}  // namespace
}  // namespace orch

// Write-back (issue 20): [plane] write_back / done_state and a stage's plane_state / post_review.
namespace orch {
namespace {

// One project (default trigger states) and a two-stage pipeline; the lines under test come first.
std::string with_project_pipeline(std::initializer_list<std::string> lines) {
  return toml(lines) + toml({
                           "[[projects]]",
                           "name = \"shop\"",
                           "gitea_repo = \"acme/shop\"",
                           "plane_workspace = \"acme\"",
                           "plane_project_id = \"p1\"",
                           "plane_states = { in_progress = \"Doing\", approved = \"OK\", rejected = \"No\" }",
                           "[agents.dev]",
                           "argv = [\"/bin/true\"]",
                       });
}

TEST_CASE("config: [plane] write_back defaults to true and done_state to unset, and both are read with their line") {
  const Config defaults = parse_ok(with_pipeline({}));
  CHECK(defaults.plane_write_back);
  CHECK(defaults.plane_done_state.empty());
  CHECK(defaults.plane_done_state_line == 0);
  CHECK(defaults.stages[0].plane_state.empty());
  CHECK(defaults.stages[0].plane_state_line == 0);
  CHECK_FALSE(defaults.stages[0].post_review);

  const Config c =
      parse_ok(with_pipeline({"[plane]", "base_url = \"http://x\"", "write_back = false", "done_state = \"Done\""}));
  CHECK_FALSE(c.plane_write_back);
  CHECK(c.plane_done_state == "Done");
  CHECK(c.plane_done_state_line == 4);
  CHECK(c.plane_base_url == "http://x");

  check_error(with_pipeline({"[plane]", "write_back = \"yes\""}), 2,
              "'write_back' in [plane] must be true or false, not a string");
  check_error(with_pipeline({"[plane]", "done_state = \"\""}), 2, "'done_state' in [plane] must not be empty");
  check_error(with_pipeline({"[plane]", "done_state = 3"}), 2, "'done_state' in [plane] must be a string");
  check_error(with_pipeline({"[plane]", "writeback = true"}), 2,
              "unknown key 'writeback' in [plane] (did you mean 'write_back'?)");
}

TEST_CASE("config: a stage's plane_state and post_review are read, and post_review needs an agent") {
  const Config c = parse_ok(toml({
      "[agents.rev]",
      "argv = [\"/bin/true\"]",
      "[[stages]]",
      "name = \"review\"",
      "agent = \"rev\"",
      "plane_state = \"In Review\"",
      "post_review = true",
      "[[stages]]",
      "name = \"wait\"",
      "post_review = false",
  }));
  CHECK(c.stages[0].plane_state == "In Review");
  CHECK(c.stages[0].plane_state_line == 6);
  CHECK(c.stages[0].post_review);
  CHECK(c.stages[1].plane_state.empty());
  CHECK_FALSE(c.stages[1].post_review);

  check_error(toml({"[[stages]]", "name = \"wait\"", "post_review = true"}), 3,
              "'post_review' in [[stages]] \"wait\" needs an agent: the review verdict is the agent's exit code");
  check_error(toml({"[agents.rev]", "argv = [\"/bin/true\"]", "[[stages]]", "name = \"review\"", "agent = \"rev\"",
                    "post_review = 1"}),
              6, "'post_review' in [[stages]] \"review\" must be true or false, not an integer");
  check_error(toml({"[[stages]]", "name = \"review\"", "plane_state = \"\""}), 3,
              "'plane_state' in [[stages]] \"review\" must not be empty");
  check_error(toml({"[[stages]]", "name = \"review\"", "plane_stat = \"X\""}), 3,
              "unknown key 'plane_stat' in [[stages]] \"review\" (did you mean 'plane_state'?)");
}

TEST_CASE("config: a plane_state or done_state that is a project's trigger state is refused at its line") {
  // Each trigger state of the project, compared exactly as the Plane client resolves names.
  check_error(
      with_project_pipeline(
          {"[plane]", "done_state = \"Doing\"", "[[stages]]", "name = \"development\"", "agent = \"dev\""}),
      2,
      "'done_state' in [plane] is \"Doing\", the in_progress state of [[projects]] \"shop\": moving a work item "
      "there would trigger the pipeline again");
  check_error(
      with_project_pipeline({"[[stages]]", "name = \"development\"", "agent = \"dev\"", "plane_state = \"OK\""}), 4,
      "'plane_state' in [[stages]] \"development\" is \"OK\", the approved state of [[projects]] \"shop\": "
      "moving a work item there would trigger the pipeline again");
  check_error(
      with_project_pipeline({"[[stages]]", "name = \"development\"", "agent = \"dev\"", "plane_state = \"No\""}), 4,
      "the rejected state of [[projects]] \"shop\"");
  // The first in the file is reported.
  check_error(with_project_pipeline(
                  {"[plane]", "done_state = \"No\"", "[[stages]]", "name = \"development\"", "plane_state = \"OK\""}),
              2, "'done_state' in [plane] is \"No\"");
  // Other names pass, also one differing only in case (Plane's names are matched exactly).
  const Config c =
      parse_ok(with_project_pipeline({"[plane]", "done_state = \"Done\"", "[[stages]]", "name = \"development\"",
                                      "agent = \"dev\"", "plane_state = \"doing\""}));
  CHECK(c.stages[0].plane_state == "doing");
}

TEST_CASE("config: plane_state_refs lists each project with each stage's plane_state and the done_state") {
  const Config c = parse_ok(toml({
      "[plane]",
      "done_state = \"Done\"",
      "[[projects]]",
      "name = \"shop\"",
      "gitea_repo = \"acme/shop\"",
      "plane_workspace = \"acme\"",
      "plane_project_id = \"p1\"",
      "[[projects]]",
      "name = \"blog\"",
      "gitea_repo = \"acme/blog\"",
      "plane_workspace = \"acme\"",
      "plane_project_id = \"p2\"",
      "[[stages]]",
      "name = \"development\"",
      "plane_state = \"Coding\"",
      "[[stages]]",
      "name = \"wait\"",
      "[[stages]]",
      "name = \"review\"",
      "plane_state = \"In Review\"",
  }));
  const std::vector<PlaneStateRef> refs = plane_state_refs(c);
  REQUIRE(refs.size() == 6);
  auto check_ref = [](const PlaneStateRef& r, const char* project, const char* state, int line, const char* key) {
    CHECK(r.project == project);
    CHECK(r.state == state);
    CHECK(r.line == line);
    CHECK(r.key == key);
  };
  check_ref(refs[0], "shop", "Coding", 15, "'plane_state' in [[stages]] \"development\"");
  check_ref(refs[1], "shop", "In Review", 20, "'plane_state' in [[stages]] \"review\"");
  check_ref(refs[2], "shop", "Done", 2, "'done_state' in [plane]");
  check_ref(refs[3], "blog", "Coding", 15, "'plane_state' in [[stages]] \"development\"");
  check_ref(refs[4], "blog", "In Review", 20, "'plane_state' in [[stages]] \"review\"");
  check_ref(refs[5], "blog", "Done", 2, "'done_state' in [plane]");

  CHECK(plane_state_refs(parse_ok(with_pipeline({}))).empty());
}

TEST_CASE("settings: ORCH_PLANE_WRITE_BACK wins over [plane] write_back and a bad value is an error") {
  auto settings = [](bool configured, std::optional<std::string> value) {
    Config c = parse_ok(with_pipeline({}));
    c.plane_write_back = configured;
    return make_settings(c, [value](const std::string& name) -> std::optional<std::string> {
      if (name == "ORCH_PLANE_WRITE_BACK") return value;
      return std::nullopt;
    });
  };
  REQUIRE(settings(true, std::nullopt).ok());
  CHECK(settings(true, std::nullopt).value().plane_write_back);
  CHECK_FALSE(settings(false, std::nullopt).value().plane_write_back);
  CHECK_FALSE(settings(true, "0").value().plane_write_back);
  CHECK_FALSE(settings(true, "off").value().plane_write_back);
  CHECK(settings(false, "true").value().plane_write_back);
  auto bad = settings(true, "maybe");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code == Code::kInvalid);
  CHECK(bad.status().message == "ORCH_PLANE_WRITE_BACK='maybe' is not a boolean (1/0, true/false)");
}

}  // namespace
}  // namespace orch
