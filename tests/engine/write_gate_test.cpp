// tests/engine/write_gate_test.cpp: the order in which the SQLite store's writers get the write lock. Threads are
// queued behind a held gate and let in one at a time; each test waits for them with waiting(), never with a sleep.
// The two timings are set to 0 or to an hour, so that no outcome depends on how fast this machine is.
#include "engine/write_gate.h"

#include <doctest/doctest.h>

#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/temp_dir.h"

namespace orch {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using P = WriteGate::Priority;

constexpr auto kForever = std::chrono::microseconds(std::chrono::hours(1));

// Records the order in which writers got in.
struct Order {
  std::mutex mu;
  std::vector<std::string> names;
  void add(const std::string& name) {
    std::lock_guard lock(mu);
    names.push_back(name);
  }
};

std::thread writer(WriteGate& gate, P priority, std::string name, Order& order) {
  return std::thread([&gate, &order, priority, name = std::move(name)] {
    auto hold = gate.enter(priority);
    order.add(name);
  });
}

// The gate is held (by a `holder` writer) while a normal writer, then an acknowledging one, queue up; then it is
// let go. The order in which the two got in.
std::vector<std::string> order_after_release(WriteGate& gate, P holder) {
  Order order;
  std::optional<WriteGate::Hold> held(gate.enter(holder));
  std::thread n1 = writer(gate, P::kNormal, "processor", order);
  REQUIRE(eventually([&] { return gate.waiting() == 1; }));
  std::thread a1 = writer(gate, P::kAcknowledge, "committer", order);
  REQUIRE(eventually([&] { return gate.waiting() == 2; }));
  held.reset();
  n1.join();
  a1.join();
  return order.names;
}

TEST_CASE("write gate: a waiting acknowledging writer goes before normal writers that came first") {
  WriteGate gate({.anticipation = 0us, .max_yield = kForever});
  CHECK(order_after_release(gate, P::kNormal) == std::vector<std::string>{"committer", "processor"});
}

TEST_CASE("write gate: a normal writer held back past max_yield goes next, before acknowledging writers") {
  WriteGate gate({.anticipation = 0us, .max_yield = 0us});  // every normal writer that has to wait is overdue
  CHECK(order_after_release(gate, P::kAcknowledge) == std::vector<std::string>{"processor", "committer"});
}

TEST_CASE(
    "write gate: after an acknowledging write the gate waits for the next one, a normal writer at most max_yield") {
  // The reservation never ends by itself here; only the normal writer's max_yield (2 s) lets it in.
  WriteGate gate({.anticipation = kForever, .max_yield = 2s});
  Order order;
  { auto batch = gate.enter(P::kAcknowledge); }  // the committer's batch ends; the gate is kept for its next one
  std::thread n1 = writer(gate, P::kNormal, "processor", order);
  REQUIRE(eventually([&] { return gate.waiting() == 1; }));  // the gate is free, yet the processor waits
  std::thread a1 = writer(gate, P::kAcknowledge, "committer", order);
  a1.join();  // not held up by the reservation, nor by the processor that came first
  n1.join();  // let in by its max_yield
  CHECK(order.names == std::vector<std::string>{"committer", "processor"});
  CHECK(gate.waiting() == 0);
}

TEST_CASE("write gate: a kNext writer goes in right after the holder, before an acknowledging writer that came first") {
  WriteGate gate({.anticipation = kForever, .max_yield = kForever});
  Order order;
  std::optional<WriteGate::Hold> held(gate.enter(P::kAcknowledge));
  std::thread a1 = writer(gate, P::kAcknowledge, "committer", order);
  REQUIRE(eventually([&] { return gate.waiting() == 1; }));
  std::thread k1 = writer(gate, P::kNext, "checkpointer", order);
  REQUIRE(eventually([&] { return gate.waiting() == 2; }));
  held.reset();
  a1.join();
  k1.join();
  CHECK(order.names == std::vector<std::string>{"checkpointer", "committer"});
}

TEST_CASE("write gate: a kNext writer does not wait out the reservation after an acknowledging write") {
  WriteGate gate({.anticipation = kForever, .max_yield = kForever});  // a kNormal writer would wait forever here
  { auto batch = gate.enter(P::kAcknowledge); }
  Order order;
  std::thread k1 = writer(gate, P::kNext, "checkpointer", order);
  k1.join();
  CHECK(order.names == std::vector<std::string>{"checkpointer"});
  CHECK(gate.waiting() == 0);
}

}  // namespace
}  // namespace orch
