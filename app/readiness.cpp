#include "app/readiness.h"

#include <exception>

#include <nlohmann/json.hpp>

namespace orch {

using json = nlohmann::json;

void register_readiness(httplib::Server& server, std::vector<ReadinessCheck> checks) {
  server.Get("/readyz", [checks = std::move(checks)](const httplib::Request&, httplib::Response& res) {
    json body = {{"ready", true}, {"checks", json::object()}};
    for (const ReadinessCheck& c : checks) {
      std::string why;
      try {
        why = c.check();
      } catch (const std::exception& e) {
        why = e.what();
      }
      body["checks"][c.name] = why.empty() ? "ok" : why;
      if (!why.empty()) body["ready"] = false;
    }
    res.status = body["ready"].get<bool>() ? 200 : 503;
    res.set_content(body.dump(), "application/json");
  });
}

std::chrono::milliseconds stall_threshold(std::chrono::milliseconds interval) {
  // A pass may legitimately take a while (the tracker side talks to Plane): allow two intervals and two minutes.
  return 2 * interval + std::chrono::minutes(2);
}

std::vector<ReadinessCheck> serve_readiness_checks(ReadinessSources s) {
  constexpr auto kWaitedTooLong = std::chrono::minutes(2);
  // A worker runs git (a first clone can be large) outside any heartbeat; give it longer than a handler.
  constexpr auto kWorkerSilentTooLong = std::chrono::minutes(5);
  auto ticking = [](const char* what, bool running, std::chrono::steady_clock::time_point last,
                    std::chrono::milliseconds interval) -> std::string {
    if (!running) return std::string(what) + " thread is not running";
    auto since = std::chrono::steady_clock::now() - last;
    if (since > stall_threshold(interval))
      return std::string(what) + " stalled: last tick " +
             std::to_string(std::chrono::duration_cast<std::chrono::seconds>(since).count()) + " s ago";
    return "";
  };
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::to_string(
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - t).count());
  };
  return {
      {"database",
       [s]() -> std::string {
         auto n = s.store.count_tasks();
         return n.ok() ? "" : "database unreachable: " + n.status().message;
       }},
      {"inbox_processor",
       [s, kWaitedTooLong, seconds_since]() -> std::string {
         auto head = s.store.next_pending_delivery(0);
         if (!head.ok()) return "cannot read the inbox: " + head.status().message;
         // A delivery waiting for its retry backoff is not a stall.
         if (head.value() && head.value()->run_after <= s.clock.now() &&
             s.clock.now() - head.value()->received_at > kWaitedTooLong)
           return "stalled: delivery " + head.value()->delivery_id + " pending since " +
                  format_rfc3339(head.value()->received_at) +
                  (head.value()->claimed_by.empty() ? "" : ", claimed by " + head.value()->claimed_by);
         if (!s.inbox.running()) return "inbox processor thread is not running";
         if (std::chrono::steady_clock::now() - s.inbox.last_progress() > kWaitedTooLong)
           return "stalled: no progress for " + seconds_since(s.inbox.last_progress()) + " s (stuck in a handler?)";
         return "";
       }},
      {"worker_pool",
       [s, kWaitedTooLong, kWorkerSilentTooLong, seconds_since]() -> std::string {
         if (!s.pool.running()) return "worker pool is not running";
         for (const auto& w : s.pool.liveness())
           if (std::chrono::steady_clock::now() - w.last_alive > kWorkerSilentTooLong)
             return "stalled: worker " + w.worker + " silent for " + seconds_since(w.last_alive) + " s";
         auto queued = s.store.jobs_with_status(JobStatus::kQueued, 100);
         auto running = s.store.jobs_with_status(JobStatus::kRunning, s.workers);
         if (!queued.ok() || !running.ok()) return "cannot read the job queue";
         if (static_cast<int>(running.value().size()) >= s.workers) return "";  // all busy
         for (const JobRow& j : queued.value())
           if (s.clock.now() - j.run_after > kWaitedTooLong)
             return "stalled: job " + std::to_string(j.id) + " claimable since " + format_rfc3339(j.run_after) +
                    " with a worker free";
         return "";
       }},
      {"reconciler",
       [s, ticking] {
         return ticking("reconciler", s.reconciler.running(), s.reconciler.last_tick(), s.reconciler.interval());
       }},
      {"outbox",
       [s, ticking] { return ticking("outbox", s.outbox.running(), s.outbox.last_tick(), s.outbox.interval()); }},
      {"write_back",
       [s, ticking] {
         return ticking("write-back", s.write_back.running(), s.write_back.last_tick(), s.write_back.interval());
       }},
  };
}

}  // namespace orch
