// RunnerDispatch: a poke wakes one long poll of each scope, not all of them; close() ends every poll; a wake given to
// a poll that leaves unused, or a poll that took a job, wakes another poll of its scope. The polls are threads that run
// the claim handler's loop (claiming(), count a claim, wait); the tests wait for the claim counts with deadlines, never
// with sleeps.
#include "app/runner_dispatch.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace orch {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

constexpr auto kDeadline = 30s;  // only a bound on how long a failure takes to show (TSan on a busy machine)

struct CountingWaker final : JobWaker {
  std::atomic<int> pokes{0};
  void jobs_enqueued() override { ++pokes; }
};

// Long polls on threads of their own, each in the claim handler's loop, until close().
class Polls {
 public:
  explicit Polls(RunnerDispatch& dispatch) : dispatch_(dispatch) {}
  ~Polls() {
    dispatch_.close();
    join();
  }

  void start(const std::string& scope) {
    threads_.emplace_back([this, scope] {
      RunnerDispatch::Poll poll(dispatch_, scope);
      for (;;) {
        poll.claiming();
        {
          std::lock_guard lock(mu_);
          ++claims_[scope];
        }
        cv_.notify_all();
        if (!poll.wait(Steady::now() + 10min)) break;  // no recheck here: only pokes and close() end a wait
      }
      {
        std::lock_guard lock(mu_);
        ++ended_;
      }
      cv_.notify_all();
    });
  }
  // True once `scope`'s polls have run `n` claims in all.
  bool claims_reach(const std::string& scope, int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kDeadline, [&] { return claims_[scope] >= n; });
  }
  bool all_ended() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kDeadline, [&] { return ended_ == static_cast<int>(threads_.size()); });
  }
  int claims(const std::string& scope) {
    std::lock_guard lock(mu_);
    return claims_[scope];
  }
  void join() {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

 private:
  RunnerDispatch& dispatch_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, int> claims_;  // guarded by mu_
  int ended_ = 0;                      // guarded by mu_
  std::vector<std::thread> threads_;
};

TEST_CASE("runner dispatch: with 8 polls of one scope, each poke wakes one of them and pokes the pool") {
  CountingWaker pool;
  RunnerDispatch dispatch(pool);
  Polls polls(dispatch);
  for (int i = 0; i < 8; ++i) polls.start("analyst\n");
  REQUIRE(polls.claims_reach("analyst\n", 8));  // each poll's first claim
  dispatch.jobs_enqueued();
  REQUIRE(polls.claims_reach("analyst\n", 9));
  dispatch.jobs_enqueued();
  REQUIRE(polls.claims_reach("analyst\n", 10));
  // close() ends the polls without a claim, so the count is what the two pokes caused: one claim each.
  dispatch.close();
  REQUIRE(polls.all_ended());
  polls.join();
  CHECK_MESSAGE(polls.claims("analyst\n") == 10, "claims after 2 pokes of 8 polls: " << polls.claims("analyst\n"));
  CHECK(pool.pokes == 2);
}

TEST_CASE("runner dispatch: with polls of two scopes, one poke wakes one poll of each") {
  RunnerDispatch dispatch(no_waker());
  Polls polls(dispatch);
  for (int i = 0; i < 4; ++i) {
    polls.start("analyst\n");
    polls.start("developer\nreviewer\n");
  }
  REQUIRE(polls.claims_reach("analyst\n", 4));
  REQUIRE(polls.claims_reach("developer\nreviewer\n", 4));
  dispatch.jobs_enqueued();
  REQUIRE(polls.claims_reach("analyst\n", 5));
  REQUIRE(polls.claims_reach("developer\nreviewer\n", 5));
  dispatch.close();
  REQUIRE(polls.all_ended());
  polls.join();
  CHECK_MESSAGE(polls.claims("analyst\n") == 5, "analyst claims: " << polls.claims("analyst\n"));
  CHECK_MESSAGE(polls.claims("developer\nreviewer\n") == 5,
                "developer claims: " << polls.claims("developer\nreviewer\n"));
}

TEST_CASE("runner dispatch: close() ends every long poll at once and a poll after it does not wait") {
  RunnerDispatch dispatch(no_waker());
  Polls polls(dispatch);
  for (int i = 0; i < 6; ++i) polls.start(i % 2 ? "a\n" : "b\n");
  REQUIRE(polls.claims_reach("a\n", 3));
  REQUIRE(polls.claims_reach("b\n", 3));
  dispatch.close();
  CHECK(polls.all_ended());  // their waits were 10 minutes long
  polls.join();
  RunnerDispatch::Poll late(dispatch, "a\n");
  late.claiming();
  CHECK_FALSE(late.wait(Steady::now() + 10min));
}

TEST_CASE("runner dispatch: a wake given to a poll that leaves without using it goes to another poll of its scope") {
  RunnerDispatch dispatch(no_waker());
  // The oldest poll of the scope gets the poke: this one, which then ends (its deadline, say) without claiming.
  std::optional<RunnerDispatch::Poll> leaving;
  leaving.emplace(dispatch, "analyst\n");
  leaving->claiming();
  Polls polls(dispatch);
  for (int i = 0; i < 3; ++i) polls.start("analyst\n");
  REQUIRE(polls.claims_reach("analyst\n", 3));
  dispatch.jobs_enqueued();
  const auto before = Steady::now();
  CHECK(leaving->wait(before + 10min));  // it holds the wake: its wait returns at once
  CHECK(Steady::now() - before < kDeadline);
  leaving.reset();  // leaves with the wake unused: one of the others must claim instead
  REQUIRE(polls.claims_reach("analyst\n", 4));
  dispatch.close();
  REQUIRE(polls.all_ended());
  polls.join();
  CHECK_MESSAGE(polls.claims("analyst\n") == 4, "claims after the hand-off: " << polls.claims("analyst\n"));
}

TEST_CASE("runner dispatch: a poll that used its wake in a claim passes nothing on when it leaves") {
  RunnerDispatch dispatch(no_waker());
  std::optional<RunnerDispatch::Poll> first;
  first.emplace(dispatch, "analyst\n");
  RunnerDispatch::Poll second(dispatch, "analyst\n");
  first->claiming();
  second.claiming();
  dispatch.jobs_enqueued();  // to `first`, the oldest
  first->claiming();         // its claim covers the poke (it took the job, or the job went elsewhere)
  first.reset();
  // Not woken: the wait runs to its (short) deadline. A wait with a predicate never returns early unless woken.
  auto before = Steady::now();
  CHECK(second.wait(before + 100ms));
  CHECK(Steady::now() - before >= 100ms);
  dispatch.jobs_enqueued();  // the next poke finds `second`
  before = Steady::now();
  CHECK(second.wait(before + 10min));
  CHECK(Steady::now() - before < kDeadline);
}

TEST_CASE("runner dispatch: a poll that took a job wakes one other poll of its scope as it leaves") {
  RunnerDispatch dispatch(no_waker());
  std::optional<RunnerDispatch::Poll> taker;
  taker.emplace(dispatch, "analyst\n");
  RunnerDispatch::Poll next(dispatch, "analyst\n");
  RunnerDispatch::Poll after_next(dispatch, "analyst\n");
  RunnerDispatch::Poll other_scope(dispatch, "developer\n");
  for (RunnerDispatch::Poll* p : {&*taker, &next, &after_next, &other_scope}) p->claiming();
  taker->took_job();  // its first claim found one: a backlog, say, that no poke announced
  taker.reset();
  auto before = Steady::now();
  CHECK(next.wait(before + 10min));  // woken: returns at once
  CHECK(Steady::now() - before < kDeadline);
  for (RunnerDispatch::Poll* p : {&after_next, &other_scope}) {  // not woken: each wait runs to its deadline
    before = Steady::now();
    CHECK(p->wait(before + 100ms));
    CHECK(Steady::now() - before >= 100ms);
  }
}

}  // namespace
}  // namespace orch
