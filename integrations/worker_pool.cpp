// Why it is built this way: the pool is threads and nothing else. A worker claims (the claim is the store's atomic
// update, so several pools, in several processes, never run one job twice), hands the job to the JobRunner, and
// drains the queue before it waits; it waits on a condition variable that poke() and stop() signal, never in a sleep.
#include "integrations/worker_pool.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <optional>
#include <string_view>

#include "engine/thread_name.h"

namespace orch {
namespace {

using Steady = std::chrono::steady_clock;

constexpr int kRecoveryScanLimit = 5000;

// A worker id is "<replica>/<pid>/<n>" ("<pid>/<n>" without a replica id, and before replicas existed).
struct WorkerName {
  std::string replica;  // "" for the two-part form
  pid_t pid = 0;
};
std::optional<WorkerName> parse_worker(const std::string& worker) {
  WorkerName w;
  std::string_view rest = worker;
  if (std::count(worker.begin(), worker.end(), '/') == 2) {
    const auto slash = rest.find('/');
    w.replica = std::string(rest.substr(0, slash));
    rest.remove_prefix(slash + 1);
  }
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos || slash == 0) return std::nullopt;
  long pid = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + slash, pid);
  if (ec != std::errc() || end != rest.data() + slash || pid <= 0) return std::nullopt;
  w.pid = static_cast<pid_t>(pid);
  return w;
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

RecoveryReport recover_interrupted_jobs(JobStore& jobs, AttemptPolicy& attempts, const std::string& replica_id,
                                        const Clock& clock, spdlog::logger& log) {
  RecoveryReport report;
  auto running = jobs.jobs_with_status(JobStatus::kRunning, kRecoveryScanLimit);
  if (!running.ok()) {
    log.warn("jobs: start-up recovery cannot list running jobs: {}", running.status().to_string());
    return report;
  }
  const pid_t self = ::getpid();
  for (const JobRow& job : running.value()) {
    // Only this replica's workers are judged by their pid; another replica's (another host's) are left to the
    // sweeper's heartbeat rule.
    auto w = parse_worker(job.worker);
    const bool ours = w && (w->replica.empty() || w->replica == replica_id);
    if (!ours || (w->pid != self && process_alive(w->pid))) {
      ++report.skipped;
      continue;
    }
    // Its agent had exited 0: only the step it was in was interrupted, and resuming that step is enough.
    if (!job.step.empty()) {
      Status s = jobs.requeue_job(job.id, clock.now());
      if (s.ok()) {
        ++report.requeued;
        log.info("jobs: job {} resumes step {} after a restart", job.id, job.step);
      } else {
        log.warn("jobs: cannot requeue job {} to resume step {}: {}", job.id, job.step, s.to_string());
      }
      continue;
    }
    JobResult r = attempts.attempt_failed(job, "interrupted: worker " + job.worker + " exited while it ran",
                                          AttemptPolicy::Retry::kNow);
    if (r.outcome == JobOutcome::kRetrying) ++report.requeued;
    if (r.outcome == JobOutcome::kBlocked) ++report.blocked;
  }
  if (report.requeued + report.blocked > 0)
    log.info("jobs: start-up recovery: {} interrupted job(s) queued again, {} blocked", report.requeued,
             report.blocked);
  return report;
}

void WorkerPool::start() {
  std::lock_guard lock(state_mu_);
  if (!threads_.empty()) return;
  const int n = std::max(1, runner_.options().workers);
  const std::string replica = runner_.options().replica_id;
  const std::string pid = (replica.empty() ? "" : replica + "/") + std::to_string(::getpid());
  worker_ids_.clear();
  alive_ = std::make_unique<std::atomic<Steady::time_point>[]>(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    worker_ids_.push_back(pid + "/" + std::to_string(i));
    alive_[i].store(Steady::now());
  }
  for (int i = 0; i < n; ++i)
    threads_.emplace_back([this, i](std::stop_token stop) { run(stop, worker_ids_[i], alive_[i]); });
}

std::vector<WorkerPool::WorkerLiveness> WorkerPool::liveness() const {
  std::lock_guard lock(state_mu_);
  std::vector<WorkerLiveness> out;
  for (std::size_t i = 0; i < threads_.size(); ++i) out.push_back({worker_ids_[i], alive_[i].load()});
  return out;
}

bool WorkerPool::running() const {
  std::lock_guard lock(state_mu_);
  return !threads_.empty();
}

void WorkerPool::stop() {
  // The threads leave the vector first (readiness says "not running" from here on), then are joined without the
  // lock: a join waits out an agent's stop grace, and /readyz must not wait for it. worker_ids_ and alive_, which
  // the threads use, stay in place until start() refills them, and only the owner calls start() or stop().
  std::vector<std::jthread> threads;
  {
    std::lock_guard lock(state_mu_);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.request_stop();  // wakes the waits and stops running agents
  for (auto& t : threads)
    if (t.joinable()) t.join();
}

void WorkerPool::poke() {
  {
    std::lock_guard lock(mu_);
    ++pokes_;
  }
  cv_.notify_all();
}

void WorkerPool::remove_worktree_later(const TaskRow& task) {
  if (!remove_worktree_) return;
  {
    std::lock_guard lock(mu_);
    worktrees_to_remove_.push_back(task);
    ++pokes_;
  }
  cv_.notify_one();
}

void WorkerPool::remove_pending_worktrees() {
  while (true) {
    TaskRow task;
    {
      std::lock_guard lock(mu_);
      if (worktrees_to_remove_.empty()) return;
      task = std::move(worktrees_to_remove_.front());
      worktrees_to_remove_.pop_front();
    }
    if (Status s = remove_worktree_(task); !s.ok())
      log_.warn("jobs: cannot remove the worktree of {}: {}", task.work_item_key, s.to_string());
  }
}

void WorkerPool::run(std::stop_token stop, const std::string& worker, std::atomic<Steady::time_point>& alive) {
  name_this_thread("job-worker");
  while (!stop.stop_requested()) {
    alive.store(Steady::now());
    remove_pending_worktrees();
    unsigned long seen;
    {
      std::lock_guard lock(mu_);
      seen = pokes_;  // read before the claim: a poke that lands during it is not missed
    }
    auto claimed = jobs_.claim_job(worker, clock_.now(), runner_.options().limits, runner_.options().scope);
    if (claimed.ok() && claimed.value()) {
      runner_.run(*claimed.value(), stop, [&alive] { alive.store(Steady::now()); });
      continue;  // drain the queue before waiting
    }
    if (!claimed.ok()) log_.warn("jobs: worker {} cannot claim: {}", worker, claimed.status().to_string());
    std::unique_lock lock(mu_);
    // Wait, never sleep: stop() and poke() must wake us now, not one poll interval from now.
    cv_.wait_for(lock, stop, runner_.options().poll_interval, [&] { return pokes_ != seen; });
  }
}

}  // namespace orch
