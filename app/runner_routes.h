// app/runner_routes.h: the server side of `orch runner` (docs/adr/0023, docs/contracts.md "Runner API"): the job API
// under /runner/v1/, each request authenticated by the runner's own token (Authorization: Bearer; revoked or unknown:
// 401, nothing changed). A runner long-polls /claim for a job of its labels' agents, heartbeats it, appends its log,
// and finishes or hands it back; every report names the claim it came with (the job's worker id), and one from a
// claim that is no longer the job's is refused with 409 and changes nothing.
// RunnerDispatch (app/runner_dispatch.h) is the long polls' wake-up.
// Handlers run on any server thread; everything they touch is thread-safe.
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "app/runner_dispatch.h"
#include "engine/clock.h"
#include "engine/config.h"
#include "engine/job_scheduler.h"
#include "engine/store.h"
#include "integrations/git.h"
#include "integrations/job_log.h"
#include "integrations/job_runner.h"

namespace orch {

struct RunnerRoutesOptions {
  std::string replica_id;                                      // the server's worker ids: "<replica>/<pid>/remote"
  std::chrono::milliseconds heartbeat_interval{10000};         // what runners are told to heartbeat at
  std::chrono::seconds max_wait{30};                           // the longest long poll
  std::chrono::milliseconds recheck{std::chrono::seconds(5)};  // a long poll claims again this often without a poke
  std::size_t max_log_chunk = 256 * 1024;                      // a bigger log append is 413
  std::size_t log_cap_bytes = 1024 * 1024;  // the job log's cap on the server (integrations/job_log.h)
};

struct RunnerRoutesDeps {
  Store& store;
  JobRunner& runner;
  RunnerDispatch& dispatch;  // poked after a finish or hand-back: it wakes the long polls and the server's pool
  GitWorkspaces& git;
  const Config& config;
  const Clock& clock;
  spdlog::logger& log;
};

class RunnerRoutes {
 public:
  RunnerRoutes(RunnerRoutesDeps deps, RunnerRoutesOptions options) : deps_(deps), options_(std::move(options)) {}
  void register_on(httplib::Server& server);

 private:
  void claim(const RunnerRow& runner, const httplib::Request& req, httplib::Response& res);
  void heartbeat(const RunnerRow& runner, JobId id, const std::string& claim, bool launched, httplib::Response& res);
  void append_log(JobId id, const std::string& claim, const std::string& data, httplib::Response& res);
  void finish(JobId id, const std::string& claim, const nlohmann::json& body, httplib::Response& res);
  void hand_back(JobId id, const std::string& claim, httplib::Response& res);
  // The job, when it is running for `claim`; else answers 409 (404 for no such job) and returns nullopt.
  std::optional<JobRow> held_job(JobId id, const std::string& claim, httplib::Response& res);
  std::string server_worker() const;
  void close_log(JobId id);

  const RunnerRoutesDeps deps_;
  const RunnerRoutesOptions options_;
  std::mutex logs_mu_;
  std::map<JobId, std::unique_ptr<JobLog>> logs_;  // guarded by logs_mu_: the open logs of remote runs
};

}  // namespace orch
