// tests/e2e/runners_rig.h: the `orch runner` processes of an end-to-end world (issue 22), shared by runners_test.cpp
// (one server on SQLite) and pg/runners_pg_test.cpp (replicas on PostgreSQL): registered through the CLI, each a
// process with its own work directory and log, polling the server it is given; what their logs say they reported;
// and the check that a server made no agent worktree.
#pragma once

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/e2e/e2e_world.h"

namespace orch::testing::e2e {

// The runners of a world: registered through the CLI, each a process with its own work directory and log.
struct Runners {
  World& w;
  std::map<std::string, std::unique_ptr<RunnerProcess>> procs;
  std::map<std::string, std::string> tokens;

  std::string register_runner(const std::string& name, const std::string& labels) {
    std::string token;
    REQUIRE(w.cli({"runner", "register", "--name", name, "--labels", labels}, &token) == 0);
    while (!token.empty() && token.back() == '\n') token.pop_back();
    REQUIRE(token.rfind("orch_rt_", 0) == 0);
    tokens[name] = token;
    return token;
  }
  // `server`: the base URL it polls; "" for the world's first server.
  RunnerProcess& add(const std::string& name, const std::string& labels = "agents", const std::string& server = "") {
    register_runner(name, labels);
    const std::string file = w.tmp.file(name + ".token");
    std::ofstream(file) << tokens[name] << "\n";
    auto p = std::make_unique<RunnerProcess>(
        std::vector<std::string>{"--server", server.empty() ? w.orch->base_url() : server, "--token-file", file,
                                 "--work-dir", w.tmp.file(name + "-work")},
        std::map<std::string, std::string>{}, w.tmp.file(name + ".log"));
    REQUIRE(p->start());
    return *(procs[name] = std::move(p));
  }
  std::string logs() const {
    std::string out;
    for (const auto& [name, p] : procs) out += "\n---- runner " + name + "\n" + p->log().substr(0, 6000);
    return out;
  }
};

// One work item moved to In Progress, its webhook delivered: its analysis job is queued. Returns its id.
inline std::string start_item(World& w, const std::string& name) {
  const std::string item = w.add_item(name);
  w.plane.set_work_item_state(item, w.plane.state_id(kProjectId, "In Progress"));
  REQUIRE(w.plane.deliver(w.plane_url(), kPlaneSecret, "issue", w.plane.issue_webhook_body(item)).status == 202);
  return item;
}

inline std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Job id -> how many times the runner's log says the server took its successful run ("runner: job N reported:"
// with the outcome `requeued`: the agent succeeded there, open_pr and gate follow on the server).
inline std::map<long long, int> reported_successes(const RunnerProcess& p) {
  static const std::regex line(R"(runner: job ([0-9]+) reported: (\{.*\}))");
  std::map<long long, int> out;
  std::istringstream in(p.log());
  for (std::string l; std::getline(in, l);) {
    std::smatch m;
    if (!std::regex_search(l, m, line)) continue;
    const auto answer = nlohmann::json::parse(m[2].str(), nullptr, false);
    if (answer.is_object() && answer.value("outcome", "") == "requeued") ++out[std::stoll(m[1])];
  }
  return out;
}

// The server made no worktree: every agent ran in a runner's own clone.
inline void check_no_server_worktree(const std::string& data_dir) {
  const std::filesystem::path server_worktrees = std::filesystem::path(data_dir) / "worktrees";
  CHECK_MESSAGE((!std::filesystem::exists(server_worktrees) || std::filesystem::is_empty(server_worktrees)),
                "the server made worktrees: " << server_worktrees);
}

}  // namespace orch::testing::e2e
