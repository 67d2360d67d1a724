// Why it is built this way (docs/adr/0023): the job row is the only shared state. A runner's claim is the job's
// `worker` ("runner:<name>/<random>"), drawn afresh for every claim, so it doubles as the fencing token: a heartbeat
// is fenced by it in one UPDATE (heartbeat_claim), and a finish or hand-back first takes the job over from it in one
// UPDATE (take_over_job) before anything else is written. After that the report is handled by the same JobRunner
// code as a local run, so the retry rule, budgets, write-back and the follow-up steps are the same. A runner that
// was marked gone (the sweeper's heartbeat rule failed its job) or whose report is repeated finds the claim no longer
// the job's: 409, nothing changed. Nothing here holds state that matters across a restart: the open logs are
// reopened (appending) by the next chunk, and a long poll is just a claim tried again.
#include "app/runner_routes.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>

#include "app/auth.h"
#include "app/json_answer.h"
#include "app/runner_registry.h"

namespace orch {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

constexpr std::size_t kMaxSummary = 64 * 1024;  // job_summary keeps less; a bigger one is cut, not refused

std::optional<json> parse_body(const httplib::Request& req, httplib::Response& res) {
  if (req.body.empty()) return json::object();
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    answer(res, 400, {{"error", "the body is not a JSON object"}});
    return std::nullopt;
  }
  return body;
}

std::string string_field(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json job_offer(const JobRow& job, const JobRunner::Ready& ready, const std::string& clone_url) {
  const TaskRow& t = ready.task;
  const AgentSpec& a = *ready.agent;
  const ProjectSpec& p = *ready.project;
  return {
      {"job",
       {{"id", job.id},
        {"task_id", job.task_id},
        {"visit", job.visit},
        {"stage", job.stage},
        {"agent", job.agent},
        {"attempt", job.attempt}}},
      {"task",
       {{"id", t.id},
        {"project", t.project},
        {"work_item_id", t.work_item_id},
        {"work_item_key", t.work_item_key},
        {"title", t.title},
        {"description", t.description},
        {"stage", t.stage},
        {"visit", t.visit},
        {"branch", t.branch},
        {"rejection_reason", t.rejection_reason},
        {"pr_number", t.pr_number ? json(*t.pr_number) : json(nullptr)},
        {"head_sha", t.head_sha}}},
      {"agent", {{"name", a.name}, {"argv", a.argv}, {"timeout_seconds", a.timeout.count()}, {"env", a.env}}},
      {"post_review", ready.stage->post_review},
      {"project",
       {{"name", p.name},
        {"gitea_repo", p.gitea_repo},
        {"clone_url", clone_url},
        {"default_branch", p.default_branch}}},
  };
}

}  // namespace

std::string RunnerRoutes::server_worker() const {
  return (options_.replica_id.empty() ? "" : options_.replica_id + "/") + std::to_string(::getpid()) + "/remote";
}

void RunnerRoutes::register_on(httplib::Server& server) {
  // Every route: the runner's token first. Unknown or revoked: 401 before the body is even read.
  auto authed = [this](auto fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      const std::string token = presented_token(req);
      if (token.empty()) return answer(res, 401, {{"error", "a runner token is required (Authorization: Bearer)"}});
      auto found = deps_.store.find_runner_by_token(runner_token_hash(token));
      if (!found.ok()) return answer(res, 503, {{"error", found.status().message}});
      if (!found.value() || found.value()->revoked)
        return answer(res, 401, {{"error", "unknown or revoked runner token"}});
      const RunnerRow& runner = *found.value();
      if (Status s = deps_.store.runner_seen(runner.name, deps_.clock.now()); !s.ok())
        deps_.log.warn("runners: cannot record that {} was seen: {}", runner.name, s.to_string());
      fn(runner, req, res);
    };
  };
  // The job routes: the path's id and the body's claim.
  auto job_route = [this, authed](auto fn) {
    return authed([this, fn](const RunnerRow& runner, const httplib::Request& req, httplib::Response& res) {
      auto id = path_id(req);
      if (!id) return answer(res, 404, {{"error", "no such job"}});
      auto body = parse_body(req, res);
      if (!body) return;
      const std::string claim = string_field(*body, "claim");
      // A claim names its runner: one runner can never report on another's, even with a guessed claim.
      if (!is_claim_of(claim, runner.name))
        return answer(res, 409,
                      {{"state", "cancelled"}, {"error", "this runner does not hold job " + std::to_string(*id)}});
      fn(runner, *id, claim, *body, res);
    });
  };

  server.Post("/runner/v1/claim", authed([this](const RunnerRow& runner, const httplib::Request& req,
                                                httplib::Response& res) { claim(runner, req, res); }));
  server.Post(R"(/runner/v1/jobs/(\d+)/heartbeat)",
              job_route([this](const RunnerRow& runner, JobId id, const std::string& claim, const json& body,
                               httplib::Response& res) {
                const auto launched = body.find("launched");
                heartbeat(runner, id, claim, launched != body.end() && *launched == true, res);
              }));
  server.Post(R"(/runner/v1/jobs/(\d+)/log)",
              job_route([this](const RunnerRow&, JobId id, const std::string& claim, const json& body,
                               httplib::Response& res) { append_log(id, claim, string_field(body, "data"), res); }));
  server.Post(R"(/runner/v1/jobs/(\d+)/finish)",
              job_route([this](const RunnerRow&, JobId id, const std::string& claim, const json& body,
                               httplib::Response& res) { finish(id, claim, body, res); }));
  server.Post(R"(/runner/v1/jobs/(\d+)/handback)",
              job_route([this](const RunnerRow&, JobId id, const std::string& claim, const json&,
                               httplib::Response& res) { hand_back(id, claim, res); }));
}

void RunnerRoutes::claim(const RunnerRow& runner, const httplib::Request& req, httplib::Response& res) {
  auto body = parse_body(req, res);
  if (!body) return;
  std::chrono::seconds wait{25};
  if (auto it = body->find("wait_seconds"); it != body->end() && it->is_number_integer())
    wait = std::chrono::seconds(std::max<std::int64_t>(0, it->get<std::int64_t>()));
  wait = std::min(wait, options_.max_wait);
  // The labels it offers now, within those it was registered with (all of them when it offers none).
  std::vector<std::string> labels = runner.labels;
  if (auto it = body->find("labels"); it != body->end() && it->is_array() && !it->empty()) {
    std::vector<std::string> offered;
    for (const json& l : *it)
      if (l.is_string() && std::find(labels.begin(), labels.end(), l.get<std::string>()) != labels.end())
        offered.push_back(l.get<std::string>());
    labels = std::move(offered);
  }
  const ClaimScope scope = runner_claim_scope(deps_.config, labels);
  const JobLimits limits = job_limits(deps_.config);
  const auto deadline = Steady::now() + wait;
  // The poll's group in the dispatch: the agents it may run (sorted: config.agents is a map), so that a poke wakes
  // one runner of each kind, not all of them.
  std::string scope_key;
  for (const std::string& a : scope.agents) scope_key += a + '\n';
  RunnerDispatch::Poll poll(deps_.dispatch, std::move(scope_key));
  for (;;) {
    poll.claiming();
    if (!scope.agents.empty()) {  // labels that match no agent's runs_on: never a job, only the wait
      auto drawn = new_runner_claim(runner.name);
      if (!drawn.ok()) return answer(res, 503, {{"error", drawn.status().message}});
      const std::string& worker = drawn.value();
      auto claimed = deps_.store.claim_job(worker, deps_.clock.now(), limits, scope);
      if (!claimed.ok()) return answer(res, 503, {{"error", claimed.status().message}});
      if (claimed.value()) {
        const JobRow& job = *claimed.value();
        auto ready = deps_.runner.before_remote_start(job);
        if (auto* r = std::get_if<JobRunner::Ready>(&ready)) {
          deps_.log.info("runners: {} claimed job {} ({} for {})", runner.name, job.id, job.agent,
                         r->task.work_item_key);
          json offer = job_offer(job, *r, deps_.git.clone_url(*r->project));
          offer["claim"] = worker;
          poll.took_job();
          offer["heartbeat_ms"] = options_.heartbeat_interval.count();
          offer["kill_grace_ms"] =
              std::chrono::duration_cast<std::chrono::milliseconds>(deps_.config.jobs.cancel_grace).count();
          return answer(res, 200, offer);
        }
        continue;  // settled here (superseded, misconfigured, held for its budget): look for another
      }
    }
    const auto now = Steady::now();
    if (now >= deadline) break;
    if (!poll.wait(std::min(deadline, now + options_.recheck)))
      return answer(res, 503, {{"error", "the server is stopping"}});
  }
  res.status = 204;
}

std::optional<JobRow> RunnerRoutes::held_job(JobId id, const std::string& claim, httplib::Response& res) {
  auto job = deps_.store.find_job(id);
  if (!job.ok()) {
    answer(res, 503, {{"error", job.status().message}});
    return std::nullopt;
  }
  if (!job.value()) {
    answer(res, 404, {{"error", "no such job"}});
    return std::nullopt;
  }
  if (job.value()->status != JobStatus::kRunning || job.value()->worker != claim) {
    answer(res, 409,
           {{"state", "cancelled"}, {"error", "job " + std::to_string(id) + " is no longer held by " + claim}});
    return std::nullopt;
  }
  return job.value();
}

void RunnerRoutes::heartbeat(const RunnerRow& runner, JobId id, const std::string& claim, bool launched,
                             httplib::Response& res) {
  const TimePoint now = deps_.clock.now();
  // `launched`: the agent's process has started, so the dispatch rule no longer applies (docs/adr/0023).
  Status s = launched ? deps_.store.launched_claim(id, claim, now) : deps_.store.heartbeat_claim(id, claim, now);
  if (s.code == Code::kConflict || s.code == Code::kNotFound) {
    // A person's cancel: the job is still this claim's, and the runner reports once its agent's group is gone.
    auto job = deps_.store.find_job(id);
    const bool cancel = job.ok() && job.value() && job.value()->worker == claim &&
                        job.value()->status == JobStatus::kRunning && !job.value()->cancel_requested.empty();
    if (!cancel) close_log(id);
    return answer(res, 409, {{"state", "cancelled"}, {"cancel", cancel}, {"error", s.message}});
  }
  if (!s.ok()) return answer(res, 503, {{"error", s.message}});
  // The task moved on (a person, a replayed webhook): the runner stops its agent, as a local worker would.
  auto job = deps_.store.find_job(id);
  if (job.ok() && job.value()) {
    auto task = deps_.store.find_task(job.value()->task_id);
    if (task.ok() && (!task.value() || task.value()->stage != job.value()->stage)) {
      const std::string why = task.value() ? "superseded: task is in " + task.value()->stage : "task not found";
      if (deps_.store.take_over_job(id, claim, server_worker(), now).ok()) {
        (void)deps_.store.finish_job(id, JobStatus::kFailed, why, now);
        deps_.log.info("runners: job {} on {} stopped: {}", id, runner.name, why);
        close_log(id);
        return answer(res, 409, {{"state", "cancelled"}, {"error", why}});
      }
    }
  }
  answer(res, 200, {{"state", "running"}});
}

void RunnerRoutes::append_log(JobId id, const std::string& claim, const std::string& data, httplib::Response& res) {
  if (data.size() > options_.max_log_chunk)
    return answer(res, 413,
                  {{"error", "a log chunk holds at most " + std::to_string(options_.max_log_chunk) +
                                 " bytes, this one " + std::to_string(data.size())}});
  auto job = held_job(id, claim, res);
  if (!job) return;
  std::lock_guard lock(logs_mu_);
  auto& log = logs_[id];
  if (!log) {
    auto opened = JobLog::open(deps_.runner.launcher().layout().job_log(id), options_.log_cap_bytes,
                               "[orch] job " + std::to_string(id) + ": " + job->agent + " in " + job->stage +
                                   ", attempt " + std::to_string(job->attempt) + ", on " + claim + "\n");
    if (!opened.ok()) {
      logs_.erase(id);
      return answer(res, 503, {{"error", opened.status().message}});
    }
    log = std::move(opened).value();
  }
  log->write(data);
  answer(res, 200, {{"state", "running"}});
}

void RunnerRoutes::close_log(JobId id) {
  std::lock_guard lock(logs_mu_);
  if (auto it = logs_.find(id); it != logs_.end()) {
    it->second->finish("[orch] the runner's run ended\n");
    logs_.erase(it);
  }
}

void RunnerRoutes::finish(JobId id, const std::string& claim, const json& body, httplib::Response& res) {
  const TimePoint now = deps_.clock.now();
  if (Status s = deps_.store.take_over_job(id, claim, server_worker(), now); !s.ok())
    return answer(res, http_status(s.code), {{"state", "cancelled"}, {"error", s.message}});
  close_log(id);
  JobRunner::RemoteRun run;
  if (auto it = body.find("exit_code"); it != body.end() && it->is_number_integer()) {
    run.code = static_cast<int>(it->get<std::int64_t>());
  } else {
    const std::string error = string_field(body, "error");
    const std::string why = "runner: " + (error.empty() ? std::string("the agent did not run") : error);
    run.code = string_field(body, "error_code") == "invalid" ? invalid(why) : unavailable(why);
  }
  run.head_sha = string_field(body, "head_sha");
  if (auto it = body.find("seconds"); it != body.end() && it->is_number()) run.seconds = it->get<double>();

  // What the agent left, where the shared code reads it: summary.md and usage.json in the job's output directory.
  const fs::path out = deps_.runner.launcher().output_dir(id);
  std::error_code ec;
  fs::remove_all(out, ec);
  fs::create_directories(out, ec);
  std::string summary = string_field(body, "summary");
  if (summary.size() > kMaxSummary) summary.resize(kMaxSummary);
  if (!summary.empty()) std::ofstream(out / "summary.md", std::ios::binary) << summary;
  if (auto it = body.find("usage"); it != body.end() && it->is_object())
    std::ofstream(out / "usage.json", std::ios::binary) << it->dump();

  auto job = deps_.store.find_job(id);
  if (!job.ok() || !job.value()) return answer(res, 503, {{"error", "cannot read job " + std::to_string(id)}});
  const JobResult result = deps_.runner.finish_remote(*job.value(), run);
  deps_.dispatch.jobs_enqueued();  // a next attempt, or the steps for the server's pool
  answer(res, 200, {{"state", "finished"}, {"outcome", job_outcome_name(result.outcome)}, {"detail", result.detail}});
}

void RunnerRoutes::hand_back(JobId id, const std::string& claim, httplib::Response& res) {
  const TimePoint now = deps_.clock.now();
  Status s = deps_.store.take_over_job(id, claim, server_worker(), now);
  if (s.ok()) s = deps_.store.requeue_job(id, now);
  if (!s.ok()) return answer(res, http_status(s.code), {{"state", "cancelled"}, {"error", s.message}});
  close_log(id);
  deps_.log.info("runners: job {} handed back by {}", id, claim);
  deps_.dispatch.jobs_enqueued();
  answer(res, 200, {{"state", "queued"}});
}

}  // namespace orch
