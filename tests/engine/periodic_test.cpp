#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "engine/periodic.h"
#include "engine/thread_name.h"
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

TEST_CASE("a periodic thread carries its name, and a thread's name is cut to what Linux keeps") {
  std::mutex mu;
  std::string seen;
  Periodic p("reconciler", std::chrono::hours(1), [&] {
    std::lock_guard lock(mu);
    seen = this_thread_name();
  });
  p.start();
  CHECK(testing::eventually([&] {
    std::lock_guard lock(mu);
    return !seen.empty();
  }));
  p.stop();
  CHECK(seen == "reconciler");

  std::string inner;
  std::thread([&] {
    name_this_thread("a-name-longer-than-fifteen-bytes");
    inner = this_thread_name();
  }).join();
  CHECK(inner == "a-name-longer-t");
}
