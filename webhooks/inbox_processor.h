// webhooks/inbox_processor.h: InboxProcessor claims and handles the stored deliveries, lane by lane in arrival order,
// on its own thread, from start() until stop(). Claims (InboxStore::claim_delivery) let several processors (replicas)
// share one inbox: each delivery is handled by one of them, and one lane by one at a time. All logic is in run_once();
// poke() (after a delivery is stored) wakes it at once, and it also looks every poll_interval for deliveries stored by
// another process. Pending deliveries left by a crash are simply the first ones it finds. Only the owner calls start()
// and stop(); poke() and replay() from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include <spdlog/logger.h>

#include "engine/clock.h"
#include "engine/store.h"
#include "engine/telemetry.h"
#include "webhooks/handlers/dispatcher.h"

namespace orch {

struct InboxProcessorOptions {
  // Who claims (InboxStore::claim_delivery): the replica id. A restarted replica with the same id takes back its own
  // claims at once; another replica waits for them to lapse after claim_lease.
  std::string claimer = "local";
  // Longer than any handler takes (its HTTP calls are bounded by their timeouts and retries): a lapsed claim is
  // handled again elsewhere, which the handlers' idempotence makes harmless but wasteful.
  Millis claim_lease{std::chrono::minutes(5)};
  // A transient failure (kUnavailable: Gitea or Plane down, SQLITE_BUSY) is retried in place up to this many
  // attempts in all, waiting first_backoff, then twice that, ...; then the delivery is marked failed (replayable).
  // The delivery stays at the head of its lane meanwhile: later events for the same project must not overtake it;
  // other lanes go on.
  int max_attempts = 3;
  std::chrono::milliseconds first_backoff{500};
  // How often the thread looks without being poked (deliveries stored by another process, e.g. a requeue).
  std::chrono::milliseconds poll_interval{1000};
  int max_per_pass = 1000;  // a pass ends after this many (then sees its retries due), and the next begins at once
  Telemetry* telemetry = &no_telemetry();  // told each delivery's outcome and handling time; never null
};

struct InboxPass {
  int handled = 0, ignored = 0, failed = 0;
  std::optional<TimePoint> retry_at;  // set when a delivery of ours waits for a retry (or the store failed)
};

struct DeliveryResult {
  DeliveryStatus status = DeliveryStatus::kPending;
  std::string detail;  // the reason it was ignored, the error it failed with, or what it changed
  TaskId task_id = 0;  // the task it was about, when the handler named one
};

class InboxProcessor {
 public:
  InboxProcessor(InboxStore& inbox, DeliveryHandler& handler, const Clock& clock, spdlog::logger& log,
                 InboxProcessorOptions options = {})
      : inbox_(inbox), handler_(handler), clock_(clock), log_(log), options_(options) {}
  ~InboxProcessor() { stop(); }
  InboxProcessor(const InboxProcessor&) = delete;
  InboxProcessor& operator=(const InboxProcessor&) = delete;

  // Claims and handles deliveries until none is claimable (all handled, or their lanes wait for a retry or for
  // another claimer), or max_per_pass, or `stop` is requested (checked before each claim: shutdown waits for the
  // delivery in hand, never for a backlog). Each delivery is one unit of work: an error or exception marks it failed
  // and the pass goes on.
  InboxPass run_once(std::stop_token stop = {});

  // Handles one stored delivery again now, whatever its status (`orch replay`, /admin/deliveries/{id}/replay), and
  // records the new outcome. kNotFound for an unknown id. One attempt: a transient error marks it failed again.
  // The row never goes back to pending, so a processor in another process cannot pick it up at the same time.
  Result<DeliveryResult> replay(const std::string& delivery_id);

  void start();
  void stop();  // idempotent; joins
  void poke();
  // From any thread (readiness): a flag, not thread_.joinable(), which would race the owner's start() and stop().
  bool running() const { return running_.load(); }
  // Steady-clock time the thread last made progress (began a pass or finished a delivery): readiness reports a
  // thread stuck in one handler.
  std::chrono::steady_clock::time_point last_progress() const { return last_progress_.load(); }

 private:
  struct Retry {
    int attempts = 0;
    TimePoint at{};
  };
  void run(std::stop_token stop);
  Result<HandleOutcome> handle_guarded(const DeliveryRow& row);
  DeliveryResult to_result(const DeliveryRow& row, const Result<HandleOutcome>& outcome);

  InboxStore& inbox_;
  DeliveryHandler& handler_;
  const Clock& clock_;
  spdlog::logger& log_;
  const InboxProcessorOptions options_;

  std::mutex handle_mu_;  // run_once() and replay() never handle at the same time
  // Transient failures of deliveries this processor claimed: the attempt budget is counted here, the backoff is
  // in the row (run_after), so that every claimer respects it.
  std::map<DeliverySeq, Retry> retries_;  // guarded by handle_mu_

  std::atomic<std::chrono::steady_clock::time_point> last_progress_{std::chrono::steady_clock::now()};

  std::mutex mu_;
  std::condition_variable_any cv_;
  bool poked_ = false;  // guarded by mu_
  std::atomic<bool> running_{false};
  std::jthread thread_;  // last member: stopped before the others are destroyed
};

// Puts a stored delivery back to pending for the running processor to handle in its turn (an alternative to
// InboxProcessor::replay for a process that cannot handle deliveries itself). kNotFound for an unknown id.
Status requeue_delivery_by_id(InboxStore& inbox, const std::string& delivery_id);

}  // namespace orch
