#include <doctest/doctest.h>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <thread>

#include "tests/webhooks/webhook_harness.h"
#include "webhooks/inbox_processor.h"

using namespace orch;
using namespace orch::testing;
using namespace std::chrono_literals;

namespace {

// Answers from a script keyed by delivery id; records the order in which deliveries were handled.
class ScriptedHandler final : public DeliveryHandler {
 public:
  using Answer = std::function<Result<HandleOutcome>()>;
  void on(const std::string& id, Answer a) {
    std::lock_guard l(mu_);
    script_[id].push_back(std::move(a));
  }
  std::vector<std::string> seen() const {
    std::lock_guard l(mu_);
    return seen_;
  }
  Result<HandleOutcome> handle_delivery(const DeliveryRow& d) override {
    Answer a;
    {
      std::lock_guard l(mu_);
      seen_.push_back(d.delivery_id);
      auto it = script_.find(d.delivery_id);
      if (it != script_.end() && !it->second.empty()) {
        a = it->second.front();
        if (it->second.size() > 1) it->second.pop_front();
      }
    }
    if (a) return a();
    return HandleOutcome::noop(0, "fine");
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::deque<Answer>> script_;
  std::vector<std::string> seen_;
};

struct ProcessorFixture {
  explicit ProcessorFixture(InboxProcessorOptions o = {}) : processor(*f.store, handler, f.clock, f.log, o) {}
  DeliverySeq add(const std::string& id, Source source = Source::kGitea, const std::string& event = "status") {
    NewDelivery d{source, id, event, "digest-" + id, "{}", f.clock.now()};
    auto r = f.store->insert_delivery(d, false);
    REQUIRE(r.ok());
    return r.value().seq;
  }
  DeliveryRow row(const std::string& id) { return *f.store->find_delivery(id).value(); }

  EngineFixture f;
  ScriptedHandler handler;
  InboxProcessor processor;
};

}  // namespace

TEST_CASE("stored deliveries are handled in arrival order, each marked with its outcome") {
  ProcessorFixture p;
  p.add("d1");
  p.add("d2");
  p.add("d3");
  p.handler.on("d2", [] { return HandleOutcome::ignored("unknown gitea repository acme/other"); });
  p.handler.on("d3", [] { return HandleOutcome::changed(7, "SHOP-1 development -> review"); });
  InboxPass pass = p.processor.run_once();
  CHECK(pass.handled == 2);
  CHECK(pass.ignored == 1);
  CHECK(pass.failed == 0);
  CHECK_FALSE(pass.retry_at);
  CHECK(p.handler.seen() == std::vector<std::string>{"d1", "d2", "d3"});
  CHECK(p.row("d1").status == DeliveryStatus::kHandled);
  CHECK(p.row("d2").status == DeliveryStatus::kIgnored);
  CHECK(p.row("d2").error == "unknown gitea repository acme/other");
  CHECK(p.row("d3").status == DeliveryStatus::kHandled);
  CHECK(p.row("d3").handled_at == p.f.clock.now());
  CHECK(p.f.log.contains("info inbox: gitea delivery d2 (status) ignored: unknown gitea repository acme/other"));
  // Nothing pending: a second pass does nothing.
  InboxPass idle = p.processor.run_once();
  CHECK(idle.handled + idle.ignored + idle.failed == 0);
  CHECK(p.handler.seen().size() == 3);
}

TEST_CASE("each outcome's task and detail reach the delivery ledger, also after a replay") {
  ProcessorFixture p;
  p.add("d1");
  p.add("d2");
  p.add("d3");
  p.handler.on("d1", [] { return HandleOutcome::changed(7, "SHOP-1 development -> review"); });
  p.handler.on("d2", [] { return HandleOutcome::ignored("a verdict outside a human stage", 7); });
  p.handler.on("d3", [] { return Result<HandleOutcome>(invalid("field 'sha' missing")); });
  p.handler.on("d3", [] { return HandleOutcome::noop(7, "in sync"); });  // its second handling: the replay's
  p.processor.run_once();
  auto about7 = p.f.store->delivery_ledger(10, 7);
  REQUIRE(about7.ok());
  REQUIRE(about7.value().size() == 2);
  CHECK(about7.value()[0].delivery_id == "d2");
  CHECK(about7.value()[0].detail == "a verdict outside a human stage");
  CHECK(about7.value()[1].delivery_id == "d1");
  CHECK(about7.value()[1].detail == "SHOP-1 development -> review");  // what a handled one changed
  CHECK(p.row("d1").error.empty());
  auto all = p.f.store->delivery_ledger(10, 0).value();
  REQUIRE(all.size() == 3);
  CHECK(all[0].status == DeliveryStatus::kFailed);
  CHECK(all[0].task_id == 0);
  CHECK(all[0].detail.find("field 'sha' missing") != std::string::npos);
  // Replayed, d3 now names its task.
  REQUIRE(p.processor.replay("d3").ok());
  CHECK(p.f.store->delivery_ledger(10, 7).value().size() == 3);
  CHECK(p.f.store->delivery_ledger(10, 7).value()[0].detail == "in sync");
}

TEST_CASE(
    "a stop request ends a pass after the delivery in hand: shutdown never waits for a backlog, which stays "
    "pending for the next start") {
  ProcessorFixture p;
  for (int i = 1; i <= 10; ++i) p.add("d" + std::to_string(i));
  std::stop_source stopping;
  p.handler.on("d3", [&stopping] {
    stopping.request_stop();  // SIGTERM arrives while d3 is being handled
    return HandleOutcome::noop(0, "fine");
  });
  InboxPass pass = p.processor.run_once(stopping.get_token());
  CHECK(pass.handled == 3);
  CHECK(p.row("d3").status == DeliveryStatus::kHandled);  // the one in hand is finished, not dropped
  CHECK(p.row("d4").status == DeliveryStatus::kPending);
  CHECK(p.row("d10").status == DeliveryStatus::kPending);
  CHECK(p.handler.seen().size() == 3);
  // The next start takes the backlog up where it stopped, in order.
  CHECK(p.processor.run_once().handled == 7);
  CHECK(p.handler.seen().back() == "d10");
}

TEST_CASE("an error or an exception fails that one delivery with its message, and the loop goes on") {
  ProcessorFixture p;
  p.add("bad");
  p.add("throws");
  p.add("good");
  p.handler.on("bad", [] { return Result<HandleOutcome>(invalid("missing field data.state.id")); });
  p.handler.on("throws", []() -> Result<HandleOutcome> { throw std::runtime_error("boom"); });
  InboxPass pass = p.processor.run_once();
  CHECK(pass.failed == 2);
  CHECK(pass.handled == 1);
  CHECK(p.row("bad").status == DeliveryStatus::kFailed);
  CHECK(p.row("bad").error.find("missing field data.state.id") != std::string::npos);
  CHECK(p.row("throws").status == DeliveryStatus::kFailed);
  CHECK(p.row("throws").error.find("boom") != std::string::npos);
  CHECK(p.row("good").status == DeliveryStatus::kHandled);
  CHECK(p.f.log.contains("warning inbox: gitea delivery throws (status) failed"));
}

TEST_CASE("a transient failure is retried at the head of the line with backoff, then marked failed") {
  InboxProcessorOptions o;
  o.max_attempts = 3;
  o.first_backoff = 500ms;
  ProcessorFixture p(o);
  p.add("flaky");
  p.add("later");
  p.handler.on("flaky", [] { return Result<HandleOutcome>(unavailable("gitea: 502 Bad Gateway")); });

  InboxPass first = p.processor.run_once();
  REQUIRE(first.retry_at);
  CHECK(*first.retry_at == p.f.clock.now() + 500ms);
  CHECK(p.row("flaky").status == DeliveryStatus::kPending);
  CHECK(p.handler.seen() == std::vector<std::string>{"flaky"});  // "later" waits behind it

  p.f.clock.advance(499ms);
  CHECK(p.processor.run_once().retry_at);  // not yet: nothing handled
  CHECK(p.handler.seen().size() == 1);

  p.f.clock.advance(1ms);
  InboxPass second = p.processor.run_once();
  REQUIRE(second.retry_at);
  CHECK(*second.retry_at == p.f.clock.now() + 1000ms);  // doubled
  CHECK(p.handler.seen().size() == 2);

  p.f.clock.advance(1000ms);
  InboxPass third = p.processor.run_once();  // the last attempt fails: marked failed, the line moves on
  CHECK_FALSE(third.retry_at);
  CHECK(third.failed == 1);
  CHECK(third.handled == 1);
  CHECK(p.row("flaky").status == DeliveryStatus::kFailed);
  CHECK(p.row("flaky").error.find("502") != std::string::npos);
  CHECK(p.row("later").status == DeliveryStatus::kHandled);
}

TEST_CASE("a transient failure that clears on retry is handled, with no failure recorded") {
  ProcessorFixture p;
  p.add("once");
  int calls = 0;
  p.handler.on("once", [&calls]() -> Result<HandleOutcome> {
    if (++calls == 1) return unavailable("database is locked");
    return HandleOutcome::noop(0, "fine");
  });
  REQUIRE(p.processor.run_once().retry_at);
  p.f.clock.advance(1s);
  InboxPass pass = p.processor.run_once();
  CHECK(pass.handled == 1);
  CHECK(p.row("once").status == DeliveryStatus::kHandled);
  CHECK(p.row("once").error.empty());
}

TEST_CASE("replay handles a failed delivery again and records the new outcome, an unknown id is kNotFound") {
  ProcessorFixture p;
  p.add("d1");
  int calls = 0;
  p.handler.on("d1", [&calls]() -> Result<HandleOutcome> {
    if (++calls == 1) return internal("bug");
    return HandleOutcome::changed(3, "SHOP-3 development -> review");
  });
  p.processor.run_once();
  REQUIRE(p.row("d1").status == DeliveryStatus::kFailed);
  auto replayed = p.processor.replay("d1");
  REQUIRE(replayed.ok());
  CHECK(replayed->status == DeliveryStatus::kHandled);
  CHECK(replayed->detail == "SHOP-3 development -> review");
  CHECK(p.row("d1").status == DeliveryStatus::kHandled);
  CHECK(p.row("d1").error.empty());
  CHECK(p.processor.replay("nope").status().code == Code::kNotFound);

  // The requeue alternative: the running processor picks it up in its turn.
  p.add("d2");
  p.handler.on("d2", [] { return Result<HandleOutcome>(internal("bug")); });
  p.processor.run_once();
  REQUIRE(p.row("d2").status == DeliveryStatus::kFailed);
  REQUIRE(requeue_delivery_by_id(*p.f.store, "d2").ok());
  CHECK(p.row("d2").status == DeliveryStatus::kPending);
  CHECK(requeue_delivery_by_id(*p.f.store, "nope").code == Code::kNotFound);
}

TEST_CASE("deliveries left pending by a crash are handled by a fresh processor") {
  ProcessorFixture p;
  p.add("before-crash-1");
  p.add("before-crash-2");
  {
    ScriptedHandler other;
    InboxProcessor fresh(*p.f.store, other, p.f.clock, p.f.log);
    InboxPass pass = fresh.run_once();
    CHECK(pass.handled == 2);
    CHECK(other.seen() == std::vector<std::string>{"before-crash-1", "before-crash-2"});
  }
  CHECK(p.f.store->inbox_counts().value().pending == 0);
}

TEST_CASE("the thread handles a poked delivery promptly and stops promptly") {
  InboxProcessorOptions o;
  o.poll_interval = std::chrono::hours(1);  // only a poke can wake it
  ProcessorFixture p(o);
  p.processor.start();
  p.add("d1");
  p.processor.poke();
  CHECK(eventually([&] { return p.row("d1").status == DeliveryStatus::kHandled; }, 5s));
  auto t0 = std::chrono::steady_clock::now();
  p.processor.stop();
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);  // not the hour; wide enough for TSan on 2 busy cores
  p.processor.stop();                                  // idempotent
}

namespace {
DeliverySeq add_in_lane(ProcessorFixture& p, const std::string& id, const std::string& lane) {
  NewDelivery d{Source::kGitea, id, "status", "digest-" + id, "{}", p.f.clock.now(), lane};
  auto r = p.f.store->insert_delivery(d, false);
  REQUIRE(r.ok());
  return r.value().seq;
}
}  // namespace

TEST_CASE("a delivery waiting for its retry holds up its own lane only") {
  ProcessorFixture p;
  add_in_lane(p, "a1", "project:a");
  add_in_lane(p, "a2", "project:a");
  add_in_lane(p, "b1", "project:b");
  int calls = 0;
  p.handler.on("a1", [&calls]() -> Result<HandleOutcome> {
    if (++calls == 1) return unavailable("gitea: 503");
    return HandleOutcome::noop(0, "fine");
  });
  InboxPass pass = p.processor.run_once();
  REQUIRE(pass.retry_at);
  CHECK(p.handler.seen() == std::vector<std::string>{"a1", "b1"});  // b1 overtook a2, a2 did not overtake a1
  CHECK(p.row("a1").status == DeliveryStatus::kPending);
  CHECK(p.row("a1").run_after == *pass.retry_at);  // the backoff is in the row: every claimer respects it
  CHECK(p.row("a1").claimed_by.empty());
  CHECK(p.row("a2").status == DeliveryStatus::kPending);
  CHECK(p.row("b1").status == DeliveryStatus::kHandled);
  p.f.clock.advance(1s);
  p.processor.run_once();
  CHECK(p.handler.seen() == std::vector<std::string>{"a1", "b1", "a1", "a2"});
}

TEST_CASE("two processors sharing one inbox never handle one delivery twice, nor two of one lane at once") {
  EngineFixture f;
  // Each handler records which lanes are being handled right now; a second delivery of a busy lane is a failure.
  std::mutex mu;
  std::map<std::string, int> busy;
  std::map<std::string, int> handled_count;
  bool overlap = false;
  struct LaneHandler final : DeliveryHandler {
    std::function<Result<HandleOutcome>(const DeliveryRow&)> fn;
    Result<HandleOutcome> handle_delivery(const DeliveryRow& d) override { return fn(d); }
  };
  auto body = [&](const DeliveryRow& d) -> Result<HandleOutcome> {
    {
      std::lock_guard l(mu);
      if (busy[d.lane]++ > 0) overlap = true;
      ++handled_count[d.delivery_id];
    }
    std::this_thread::yield();
    {
      std::lock_guard l(mu);
      --busy[d.lane];
    }
    return HandleOutcome::noop(0, "fine");
  };
  LaneHandler h1, h2;
  h1.fn = body;
  h2.fn = body;
  InboxProcessorOptions o1, o2;
  o1.claimer = "replica-1";
  o2.claimer = "replica-2";
  InboxProcessor first(*f.store, h1, f.clock, f.log, o1);
  InboxProcessor second(*f.store, h2, f.clock, f.log, o2);
  constexpr int kDeliveries = 120;
  for (int i = 0; i < kDeliveries; ++i) {
    NewDelivery d{Source::kGitea, "d" + std::to_string(i),           "status", "x" + std::to_string(i), "{}",
                  f.clock.now(),  "project:" + std::to_string(i % 3)};
    REQUIRE(f.store->insert_delivery(d, false).ok());
  }
  std::thread a([&] {
    while (first.run_once().handled > 0) {
    }
  });
  std::thread b([&] {
    while (second.run_once().handled > 0) {
    }
  });
  a.join();
  b.join();
  while (first.run_once().handled > 0) {
  }  // whatever a lost race left behind
  CHECK_FALSE(overlap);
  CHECK(f.store->inbox_counts().value().handled == kDeliveries);
  CHECK(handled_count.size() == kDeliveries);
  for (const auto& [id, n] : handled_count) CHECK_MESSAGE(n == 1, id);
}

TEST_CASE("a claim left by a dead processor lapses after the lease, and a restarted one takes its own back at once") {
  InboxProcessorOptions o;
  o.claimer = "replica-1";
  o.claim_lease = 5min;
  ProcessorFixture p(o);
  p.add("held");
  // replica-1 claimed it and died before recording the outcome.
  REQUIRE(p.f.store->claim_delivery("replica-1", p.f.clock.now(), 5min).value());
  ScriptedHandler other_handler;
  InboxProcessorOptions other_options;
  other_options.claimer = "replica-2";
  InboxProcessor other(*p.f.store, other_handler, p.f.clock, p.f.log, other_options);
  CHECK(other.run_once().handled == 0);  // still claimed by replica-1
  CHECK(other_handler.seen().empty());

  // replica-1 comes back under the same id: its own claim is its to take at once.
  CHECK(p.processor.run_once().handled == 1);
  CHECK(p.handler.seen() == std::vector<std::string>{"held"});

  p.add("held-2");
  REQUIRE(p.f.store->claim_delivery("replica-1", p.f.clock.now(), 5min).value());
  p.f.clock.advance(5min);  // replica-1 never came back: the claim lapses
  CHECK(other.run_once().handled == 1);
  CHECK(other_handler.seen() == std::vector<std::string>{"held-2"});
}
