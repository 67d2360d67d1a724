#include <doctest/doctest.h>

#include <atomic>
#include <chrono>

#include "engine/periodic.h"
#include "tests/support/temp_dir.h"

using namespace orch;

TEST_CASE("a periodic thread runs at start, wakes promptly on poke, and stops promptly") {
  std::atomic<int> ticks{0};
  // An interval far longer than the test: every tick after the first must come from poke().
  Periodic p("test", std::chrono::hours(1), [&] { ++ticks; });
  p.start();
  CHECK(testing::eventually([&] { return ticks.load() == 1; }));
  p.poke();
  CHECK(testing::eventually([&] { return ticks.load() == 2; }));
  auto before = std::chrono::steady_clock::now();
  p.stop();
  CHECK(std::chrono::steady_clock::now() - before < std::chrono::seconds(5));
  CHECK_FALSE(p.running());
  p.stop();  // idempotent
}
