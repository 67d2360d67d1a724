// engine/periodic.h: an owned thread that runs `tick` every `interval` from start() until stop(), and at once
// when poke()d. It waits on a condition variable, never sleeps, so stop() and poke() take effect immediately.
// All logic lives in the tick (tested without the thread); this class only schedules it.
// Only the owner calls start() and stop(); poke() and last_tick() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>

#include "engine/thread_name.h"

namespace orch {

class Periodic {
 public:
  Periodic(std::string name, std::chrono::milliseconds interval, std::function<void()> tick)
      : name_(std::move(name)), interval_(interval), tick_(std::move(tick)) {}
  ~Periodic() { stop(); }
  Periodic(const Periodic&) = delete;
  Periodic& operator=(const Periodic&) = delete;

  void start() {
    thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
    running_.store(true);
  }
  void stop() {  // idempotent; returns once the thread has joined
    running_.store(false);
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
  }
  void poke() {
    {
      std::lock_guard lock(mu_);
      poked_ = true;
    }
    cv_.notify_one();
  }
  // From any thread (readiness): a flag, not thread_.joinable(), which would race the owner's start() and stop().
  bool running() const { return running_.load(); }
  const std::string& name() const { return name_; }
  // Steady-clock time of the last tick start (or of start()); readiness uses it to spot a stalled thread.
  std::chrono::steady_clock::time_point last_tick() const { return last_tick_.load(); }
  std::chrono::milliseconds interval() const { return interval_; }

 private:
  void run(std::stop_token stop) {
    name_this_thread(name_);
    while (!stop.stop_requested()) {
      last_tick_.store(std::chrono::steady_clock::now());
      tick_();  // contains its own failures; never throws
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, stop, interval_, [this] { return poked_; });
      poked_ = false;
    }
  }

  const std::string name_;
  const std::chrono::milliseconds interval_;
  const std::function<void()> tick_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  bool poked_ = false;  // guarded by mu_
  std::atomic<std::chrono::steady_clock::time_point> last_tick_{std::chrono::steady_clock::now()};
  std::atomic<bool> running_{false};
  std::jthread thread_;  // last member: stopped before the others are destroyed
};

}  // namespace orch
