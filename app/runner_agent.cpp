// Why it is built this way (docs/adr/0023): the runner keeps no state the server depends on. Everything it knows of
// a job came in the claim's offer (the job, the task, the agent, the project's clone URL), and everything it learns
// goes back in four calls: heartbeat, log, finish, hand back, each carrying the claim. So a runner can die at any
// point: the server's sweeper fails the job once its heartbeat is stale and the retry rule queues it for another
// runner, and whatever this one says afterwards is refused by the claim (409).
// The agent is launched by the same AgentLauncher as on the server, in a worktree of the runner's own clone, so the
// agent sees exactly the environment contract it sees there. After a successful run the runner pushes the branch
// (the server has no copy of this worktree) and reports the head it pushed; opening the PR and the gate happen on
// the server, as follow-up steps of the job.
#include "app/runner_agent.h"

#include <condition_variable>
#include <mutex>

#include "engine/thread_name.h"
#include "integrations/agent_usage.h"
#include "integrations/job_summary.h"

namespace orch {
namespace {

using nlohmann::json;
using Steady = std::chrono::steady_clock;

constexpr std::size_t kLogChunk = 128 * 1024;        // one log append (the server takes up to 256 KiB)
constexpr std::size_t kMaxPendingLog = 1024 * 1024;  // output not yet sent; beyond it the oldest is dropped

// Sleeps `d` unless `stop` is requested first; false when stopped.
bool nap(std::stop_token stop, std::chrono::milliseconds d) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  cv.wait_for(lock, stop, d, [] { return false; });
  return !stop.stop_requested();
}

HttpClientOptions client_options(const RunnerSettings& s, std::chrono::milliseconds total) {
  HttpClientOptions o;
  o.name = "orch-server";
  o.base_url = s.server;
  o.total_timeout = total;
  o.max_attempts = 1;  // the runner's loops retry, each at its own pace
  o.redact.push_back(s.token);
  o.user_agent = "orch-runner/0.1";
  return o;
}

// The offer's parts as the model rows the launcher and git take.
JobRow job_of(const json& o) {
  JobRow j;
  const json& job = o.at("job");
  j.id = job.at("id").get<JobId>();
  j.task_id = job.at("task_id").get<TaskId>();
  j.visit = job.at("visit").get<int>();
  j.stage = job.at("stage").get<std::string>();
  j.agent = job.at("agent").get<std::string>();
  j.attempt = job.at("attempt").get<int>();
  j.status = JobStatus::kRunning;
  j.worker = o.at("claim").get<std::string>();
  return j;
}

TaskRow task_of(const json& o) {
  TaskRow t;
  const json& task = o.at("task");
  t.id = task.at("id").get<TaskId>();
  t.project = task.at("project").get<std::string>();
  t.work_item_id = task.at("work_item_id").get<std::string>();
  t.work_item_key = task.at("work_item_key").get<std::string>();
  t.title = task.at("title").get<std::string>();
  t.description = task.at("description").get<std::string>();
  t.stage = task.at("stage").get<std::string>();
  t.visit = task.at("visit").get<int>();
  t.branch = task.at("branch").get<std::string>();
  t.rejection_reason = task.at("rejection_reason").get<std::string>();
  if (task.at("pr_number").is_number_integer()) t.pr_number = task.at("pr_number").get<std::int64_t>();
  t.head_sha = task.at("head_sha").get<std::string>();
  return t;
}

AgentSpec agent_of(const json& o) {
  AgentSpec a;
  const json& agent = o.at("agent");
  a.name = agent.at("name").get<std::string>();
  a.argv = agent.at("argv").get<std::vector<std::string>>();
  a.timeout = std::chrono::seconds(agent.at("timeout_seconds").get<std::int64_t>());
  a.env = agent.at("env").get<std::map<std::string, std::string>>();
  return a;
}

ProjectSpec project_of(const json& o) {
  ProjectSpec p;
  const json& project = o.at("project");
  p.name = project.at("name").get<std::string>();
  p.gitea_repo = project.at("gitea_repo").get<std::string>();
  p.clone_url = project.at("clone_url").get<std::string>();
  p.default_branch = project.at("default_branch").get<std::string>();
  return p;
}

// The agent's output not yet sent, bounded: a chatty agent on a slow link loses its oldest lines, never memory.
class PendingLog {
 public:
  void add(std::string_view s) {
    std::lock_guard lock(mu_);
    buf_.append(s);
    if (buf_.size() > kMaxPendingLog) {
      const std::size_t drop = buf_.size() - kMaxPendingLog;
      buf_.erase(0, drop);
      dropped_ += drop;
    }
  }
  std::string take() {
    std::lock_guard lock(mu_);
    std::string out;
    if (dropped_ > 0) out = "[orch runner] " + std::to_string(dropped_) + " bytes of output not sent\n";
    dropped_ = 0;
    out += std::move(buf_);
    buf_.clear();
    return out;
  }

 private:
  std::mutex mu_;
  std::string buf_;
  std::size_t dropped_ = 0;
};

}  // namespace

Runner::Runner(RunnerSettings settings, spdlog::logger& log)
    : settings_(std::move(settings)),
      log_(log),
      layout_(settings_.work_dir),
      git_(layout_, processes_, settings_.gitea_token, log_),
      launcher_(processes_, layout_, clock_, LaunchOptions{}),
      poll_http_(client_options(settings_, settings_.poll_wait + std::chrono::seconds(15)), poll_sleeper_, clock_,
                 log_),
      http_(client_options(settings_, std::chrono::seconds(30)), report_sleeper_, clock_, log_),
      outbox_(settings_.work_dir / "outbox") {}

void Runner::start() {
  if (!slots_.empty()) return;
  replay_ = std::jthread([this](std::stop_token stop) { replay(stop); });
  for (int i = 0; i < std::max(1, settings_.capacity); ++i)
    slots_.emplace_back([this, i](std::stop_token stop) { slot(stop, i); });
  log_.info("runner: {} slot(s) polling {}", slots_.size(), settings_.server);
}

void Runner::stop() {
  for (auto& t : slots_) t.request_stop();
  replay_.request_stop();
  poll_sleeper_.interrupt();
  slots_.clear();  // joins: each slot hands its job back first
  if (replay_.joinable()) replay_.join();
}

Result<HttpResponse> Runner::post(HttpClient& client, const std::string& target, const json& body) {
  HttpRequest r = HttpRequest::json("POST", target, body);
  r.headers.push_back({"Authorization", "Bearer " + settings_.token.reveal()});
  r.any_status = true;
  return client.send(r);
}

void Runner::slot(std::stop_token stop, int n) {
  name_this_thread("runner-slot");
  std::chrono::milliseconds backoff{500};
  while (!stop.stop_requested() && !refused_.load()) {
    auto answer = post(poll_http_, "/runner/v1/claim",
                       {{"wait_seconds", settings_.poll_wait.count()}, {"labels", settings_.labels}});
    if (stop.stop_requested()) break;
    if (answer.ok() && answer.value().status == 401) {
      log_.error("runner: the server refused this runner's token (unknown or revoked)");
      refused_ = true;
      break;
    }
    if (answer.ok() && answer.value().status == 204) {
      backoff = std::chrono::milliseconds(500);
      continue;
    }
    if (answer.ok() && answer.value().status == 200) {
      backoff = std::chrono::milliseconds(500);
      json offer = json::parse(answer.value().body, nullptr, false);
      if (offer.is_discarded() || !offer.is_object()) {
        log_.warn("runner: slot {}: the server's offer is not JSON", n);
        continue;
      }
      try {
        run_job(stop, offer);
      } catch (const std::exception& e) {  // a malformed offer: the job's heartbeat stops and the sweeper takes it
        log_.error("runner: slot {}: cannot run the offered job: {}", n, e.what());
      }
      continue;
    }
    log_.warn("runner: slot {}: claim failed: {}", n,
              answer.ok() ? "HTTP " + std::to_string(answer.value().status) : answer.status().message);
    if (!nap(stop, backoff)) break;
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(30));
  }
}

void Runner::run_job(std::stop_token stop, const json& offer) {
  const JobRow job = job_of(offer);
  const TaskRow task = task_of(offer);
  const AgentSpec agent = agent_of(offer);
  const ProjectSpec project = project_of(offer);
  const bool post_review = offer.value("post_review", false);
  const std::chrono::milliseconds every{std::max<std::int64_t>(100, offer.value("heartbeat_ms", 10000))};
  const std::string jobs = "/runner/v1/jobs/" + std::to_string(job.id);
  log_.info("runner: job {}: {} for {} in {}", job.id, agent.name, task.work_item_key, job.stage);

  std::stop_source halt;  // stops the agent: SIGTERM, or the server took the job away
  std::stop_callback forward(stop, [&halt] { halt.request_stop(); });
  std::atomic<bool> cancelled{false};     // taken away: the server refuses whatever we would say
  std::atomic<bool> cancel_asked{false};  // a person's cancel: stop the agent, then say that its group is gone
  std::atomic<bool> launched{false};      // the agent's process started: the dispatch rule no longer applies
  PendingLog pending;
  auto send_log = [&] {
    std::string data = pending.take();
    for (std::size_t at = 0; at < data.size(); at += kLogChunk)
      (void)post(http_, jobs + "/log", {{"claim", job.worker}, {"data", data.substr(at, kLogChunk)}});
  };
  // Heartbeats from the claim on, through git and the agent, until the result is reported.
  std::jthread beat([&](std::stop_token done) {
    name_this_thread("runner-beat");
    while (nap(done, every)) {
      send_log();
      auto answer = post(http_, jobs + "/heartbeat", {{"claim", job.worker}, {"launched", launched.load()}});
      if (answer.ok() && answer.value().status == 409) {
        const json why = json::parse(answer.value().body, nullptr, false);
        if (why.is_object() && why.value("cancel", false)) {
          log_.warn("runner: job {} was cancelled by a person: its agent is stopped", job.id);
          cancel_asked = true;
        } else {
          log_.warn("runner: job {} was taken away by the server: its agent is stopped", job.id);
          cancelled = true;
        }
        halt.request_stop();
        return;
      }
    }
  });

  const auto started = Steady::now();
  json report = {{"claim", job.worker}};
  auto worktree = git_.ensure_worktree(project, task);
  Status ready = worktree.ok() ? git_.catch_up_worktree(project, task) : worktree.status();
  if (!ready.ok()) {
    report["error"] = "worktree: " + ready.message;
    report["error_code"] = ready.code == Code::kInvalid || ready.code == Code::kConflict ? "invalid" : "unavailable";
  } else {
    LaunchHooks hooks;
    bool group_gone = false;
    hooks.group_gone = &group_gone;
    hooks.stop = halt.get_token();
    hooks.kill_grace = std::chrono::milliseconds(std::max<std::int64_t>(0, offer.value("kill_grace_ms", 10000)));
    hooks.on_output = [&pending](std::string_view s) { pending.add(s); };
    hooks.on_start = [&launched](pid_t) { launched = true; };
    Result<int> code = launcher_.run(job, task, agent, worktree.value().path.string(), hooks);
    report["seconds"] = std::chrono::duration<double>(Steady::now() - started).count();
    if (code.ok()) {
      report["exit_code"] = code.value();
      if (agent_run_succeeded(code, post_review) && !halt.stop_requested()) {
        Status pushed = git_.push_branch(project, task);
        auto head = pushed.ok() ? git_.branch_head(project, task.branch) : Result<std::string>(pushed);
        if (head.ok()) {
          report["head_sha"] = head.value();
        } else {
          report.erase("exit_code");
          report["error"] = "push: " + head.status().message;
          report["error_code"] = "unavailable";
        }
      }
    } else {
      report["error"] = code.status().message;
      report["error_code"] = code.status().code == Code::kInvalid ? "invalid" : "unavailable";
    }
    if (cancel_asked) {
      report.erase("exit_code");
      report.erase("head_sha");
      report["error"] = std::string("cancelled: the agent was stopped; ") +
                        (group_gone ? "no process of its group is left" : "a process of its group outlived SIGKILL");
      report["error_code"] = "unavailable";
    }
    report["summary"] = job_summary(launcher_.output_dir(job.id), layout_.job_log(job.id));
    auto usage = read_agent_usage(launcher_.output_dir(job.id));
    if (usage.ok() && usage.value())
      report["usage"] = {{"tokens_in", usage.value()->tokens_in},
                         {"tokens_out", usage.value()->tokens_out},
                         {"model", usage.value()->model},
                         {"cost_usd", static_cast<double>(usage.value()->cost) / 1e6}};
  }
  beat.request_stop();
  beat.join();
  if (cancelled) {
    // The server refuses whatever we would say.
  } else if (stop.stop_requested() && !cancel_asked) {
    send_log();
    auto answer = post(http_, jobs + "/handback", {{"claim", job.worker}});
    log_.info("runner: job {} handed back: {}", job.id,
              answer.ok() ? "HTTP " + std::to_string(answer.value().status) : answer.status().message);
  } else {
    OutboxEntry last{job.id, report, pending.take()};
    if (Status s = outbox_.put(last); !s.ok())
      log_.warn("runner: job {}: cannot keep its result in the outbox, so it is sent from memory only: {}", job.id,
                s.to_string());
    deliver(stop, std::move(last));
  }
  // What the job made is pushed (or of no use): the next stage may run on another runner, and starts from the remote
  // branch. Only the clone stays, for the next fetch.
  if (worktree.ok())
    if (Status s = git_.remove_worktree(project, task); !s.ok())
      log_.warn("runner: cannot remove the worktree of {}: {}", task.work_item_key, s.to_string());
}

void Runner::replay(std::stop_token stop) {
  name_this_thread("runner-replay");
  std::vector<std::string> skipped;
  auto entries = outbox_.pending(&skipped);
  for (const std::string& file : skipped)
    log_.warn("runner: outbox file {} does not parse: set aside as {}.corrupt", file, file);
  if (!entries.ok()) {
    log_.error("runner: cannot read the outbox: {}", entries.status().to_string());
    return;
  }
  if (!entries.value().empty())
    log_.info("runner: {} result(s) left in the outbox by an earlier run: delivering", entries.value().size());
  for (OutboxEntry& e : entries.value()) {
    if (stop.stop_requested() || refused_.load()) return;
    deliver(stop, std::move(e));
  }
}

void Runner::deliver(std::stop_token stop, OutboxEntry entry) {
  const std::string jobs = "/runner/v1/jobs/" + std::to_string(entry.job);
  const json claim = entry.finish.value("claim", json(""));
  std::chrono::milliseconds backoff{500};
  // The answer when it settles the report, nullopt when it is worth trying again (after the backoff).
  auto settled = [&](const Result<HttpResponse>& answer, const char* what) -> std::optional<int> {
    if (answer.ok() && (answer.value().status == 200 || answer.value().status == 404 || answer.value().status == 409 ||
                        answer.value().status == 413))
      return answer.value().status;
    if (answer.ok() && answer.value().status == 401) {
      refused_ = true;
      log_.error("runner: job {}: the server refused this runner's token: its result stays in the outbox", entry.job);
      return 401;
    }
    log_.warn("runner: job {}: cannot send its {} yet: {}", entry.job, what,
              answer.ok() ? "HTTP " + std::to_string(answer.value().status) : answer.status().message);
    return std::nullopt;
  };
  auto wait = [&] {
    if (!nap(stop, backoff)) return false;
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(30));
    return true;
  };
  while (!entry.log.empty()) {
    auto answer = post(http_, jobs + "/log", {{"claim", claim}, {"data", entry.log.substr(0, kLogChunk)}});
    const std::optional<int> code = settled(answer, "log");
    if (!code) {
      if (!wait()) return;
      continue;
    }
    if (*code == 401) return;
    if (*code != 200) break;  // refused: the finish report says why
    entry.log.erase(0, std::min(entry.log.size(), kLogChunk));
    backoff = std::chrono::milliseconds(500);
    if (Status s = outbox_.put(entry); !s.ok())  // else a restart would send that chunk again
      log_.warn("runner: job {}: cannot update the outbox: {}", entry.job, s.to_string());
  }
  for (;;) {
    auto answer = post(http_, jobs + "/finish", entry.finish);
    const std::optional<int> code = settled(answer, "result");
    if (code && *code == 401) return;
    if (code) {
      if (*code == 200)
        log_.info("runner: job {} reported: {}", entry.job, answer.value().body);
      else
        log_.warn("runner: job {}: the server refused the result: {}", entry.job, answer.value().body);
      outbox_.remove(entry.job);
      return;
    }
    if (!wait()) return;
  }
}

}  // namespace orch
