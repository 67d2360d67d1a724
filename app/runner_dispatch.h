// app/runner_dispatch.h: the wake-up of the runners' long polls (docs/adr/0023). The job scheduler pokes it after each
// enqueue (the runner routes after a finish or hand-back, the sweeper after a pass that queued jobs again), as it
// pokes the pool; the claim handler (app/runner_routes.cpp) holds a RunnerDispatch::Poll for each long poll and waits
// on it between claims.
//
// Why not notify_all: every poke woke every waiting long poll and each ran a claim statement, so with 50 runners a new
// job cost the server ~50 claims (bench/RESULTS.md, 2026-12-07). A poke says only "something may be claimable", not
// what, and runners differ in what they may take, so the polls are grouped by their scope (the key: the agents they
// may run) and a poke wakes one poll of each group that is not already woken: one claim per group and poke. A woken
// poll that claims nothing passes nothing on (the job went elsewhere). One that takes a job wakes the next poll of its
// group as it leaves, since there may be more (several jobs behind one poke, a backlog another replica wrote): a
// backlog wakes the runners one claim after the other, a single job costs one empty claim more. A poll that ends with
// a wake it did not use (its deadline, or a claim that ran before the poke) hands it on the same way, so a poke is
// never lost to a poll that was leaving. The claim handler's periodic recheck stays the safety net (another
// replica's enqueues, which poke nobody here).
// Thread-safe: everything is guarded by one mutex; each poll has its own condition variable.
#pragma once

#include <chrono>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <string>

#include "engine/job_scheduler.h"

namespace orch {

class RunnerDispatch final : public JobWaker {
 public:
  explicit RunnerDispatch(JobWaker& next) : next_(next) {}
  void jobs_enqueued() override;  // wakes one poll of each scope, then `next` (the server's pool)
  // Ends every long poll at once and makes new ones return at once: before the HTTP server stops.
  void close();

  // One long poll, registered in its scope's group from construction to destruction (the whole request, so that a
  // poke while it claims is not lost). Used by one thread.
  class Poll {
   public:
    Poll(RunnerDispatch& dispatch, std::string scope);
    ~Poll();  // after took_job(), or with a wake it did not use: wakes another poll of its scope
    Poll(const Poll&) = delete;
    Poll& operator=(const Poll&) = delete;
    // Call before each claim: the wakes so far are used by it.
    void claiming();
    // Waits until woken (since the last claiming()), close(), or `until`; false once closed.
    bool wait(std::chrono::steady_clock::time_point until);
    // Its last claim found a job: there may be more, so the next poll of the scope claims too once this one ends.
    void took_job() { took_job_ = true; }

   private:
    friend class RunnerDispatch;
    RunnerDispatch& dispatch_;
    const std::string scope_;
    std::condition_variable cv_;
    bool woken_ = false;     // guarded by dispatch_.mu_
    bool took_job_ = false;  // the owning thread's only
  };

 private:
  // The first poll of `polls` that is not woken yet: woken and notified. Called with mu_ held.
  static void wake_one(std::list<Poll*>& polls);

  JobWaker& next_;
  std::mutex mu_;
  std::map<std::string, std::list<Poll*>> scopes_;  // guarded by mu_: the open polls by scope, oldest first
  bool closed_ = false;                             // guarded by mu_
};

}  // namespace orch
