// webhooks/inbox_processor.cpp
//
// DESIGN: the HTTP route stores a verified delivery and answers at once (docs/adr/0002); everything that can be slow
// or fail happens here, one delivery at a time, in arrival order. Order matters little to the handlers (they re-read
// the truth), but it matters for one item's own events: a start must create the task before its verdict arrives.
// So a transiently failing delivery is retried at the head of the line, with backoff, a few times, and then marked
// failed so that the line moves on; a failed delivery stays replayable and the reconciler recovers its effect.
#include "webhooks/inbox_processor.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include "engine/thread_name.h"

namespace orch {

Result<HandleOutcome> InboxProcessor::handle_guarded(const DeliveryRow& row) {
  try {
    return handler_.handle_delivery(row);
  } catch (const std::exception& e) {  // escaped an adapter: this delivery fails, the loop goes on
    return internal(std::string("exception: ") + e.what());
  } catch (...) {
    return internal("unknown exception");
  }
}

namespace {

// The row keeps an error only for what was not handled; the detail (and the task) for every outcome: the ledger.
DeliveryOutcome outcome_of(const DeliveryResult& r) {
  return {r.status, r.status == DeliveryStatus::kHandled ? std::string() : r.detail, r.task_id, r.detail};
}

}  // namespace

DeliveryResult InboxProcessor::to_result(const DeliveryRow& row, const Result<HandleOutcome>& outcome) {
  const char* source = source_name(row.source);
  if (!outcome.ok()) {
    log_.warn("inbox: {} delivery {} ({}) failed: {}", source, row.delivery_id, row.event,
              outcome.status().to_string());
    return {DeliveryStatus::kFailed, outcome.status().to_string(), 0};
  }
  const HandleOutcome& o = outcome.value();
  switch (o.kind) {
    case HandleOutcome::Kind::kIgnored:
      log_.info("inbox: {} delivery {} ({}) ignored: {}", source, row.delivery_id, row.event, o.reason);
      return {DeliveryStatus::kIgnored, o.reason, o.task_id};
    case HandleOutcome::Kind::kChanged:
      log_.info("inbox: {} delivery {} ({}): {}", source, row.delivery_id, row.event, o.reason);
      return {DeliveryStatus::kHandled, o.reason, o.task_id};
    case HandleOutcome::Kind::kNoop:
      log_.debug("inbox: {} delivery {} ({}): {}", source, row.delivery_id, row.event, o.reason);
      return {DeliveryStatus::kHandled, o.reason, o.task_id};
  }
  return {DeliveryStatus::kFailed, "unknown outcome", 0};
}

InboxPass InboxProcessor::run_once(std::stop_token stop) {
  std::lock_guard handling(handle_mu_);
  InboxPass pass;
  auto wait_until = [&pass](TimePoint t) {
    if (!pass.retry_at || t < *pass.retry_at) pass.retry_at = t;
  };
  for (int n = 0; n < options_.max_per_pass && !stop.stop_requested(); ++n) {
    const TimePoint now = clock_.now();
    auto claimed = inbox_.claim_delivery(options_.claimer, now, options_.claim_lease, stop);
    if (!claimed.ok() && stop.stop_requested()) break;  // cancelled by the stop: nothing was claimed
    if (!claimed.ok()) {  // the pass cannot go on: say so once, and look again after a backoff
      log_.warn("inbox: cannot claim pending deliveries: {}", claimed.status().to_string());
      wait_until(now + options_.first_backoff);
      break;
    }
    if (!claimed.value()) break;
    const DeliveryRow row = *claimed.value();

    const auto handling_started = std::chrono::steady_clock::now();
    Result<HandleOutcome> outcome = handle_guarded(row);
    const double handling_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - handling_started).count();
    if (!outcome.ok() && outcome.status().code == Code::kUnavailable) {
      Retry& retry = retries_[row.seq];
      if (++retry.attempts < options_.max_attempts) {
        retry.at = clock_.now() + options_.first_backoff * (1 << (retry.attempts - 1));
        log_.warn("inbox: {} delivery {} ({}) will be retried (attempt {} of {}): {}", source_name(row.source),
                  row.delivery_id, row.event, retry.attempts + 1, options_.max_attempts, outcome.status().message);
        if (Status s = inbox_.retry_delivery(row.seq, outcome.status().to_string(), retry.at); !s.ok())
          log_.warn("inbox: cannot schedule the retry of {} delivery {}: {}", source_name(row.source), row.delivery_id,
                    s.to_string());
        wait_until(retry.at);
        continue;  // its lane waits; the others go on
      }
    }
    retries_.erase(row.seq);

    DeliveryResult result = to_result(row, outcome);
    options_.telemetry->delivery_handled(row.source, row.event, result.status, handling_seconds);
    last_progress_.store(std::chrono::steady_clock::now());
    if (Status s = inbox_.finish_delivery(row.seq, outcome_of(result), clock_.now()); !s.ok()) {
      // Still claimed by us: the next pass claims it again (a claimer takes back its own claims) and, the
      // handlers being idempotent, handling it a second time is safe.
      log_.warn("inbox: cannot record the outcome of {} delivery {}: {}", source_name(row.source), row.delivery_id,
                s.to_string());
      wait_until(clock_.now() + options_.first_backoff);
      break;
    }
    switch (result.status) {
      case DeliveryStatus::kHandled: ++pass.handled; break;
      case DeliveryStatus::kIgnored: ++pass.ignored; break;
      default: ++pass.failed; break;
    }
  }
  // A retry of ours still ahead keeps the thread's wait short; one that came due was claimed above, or was taken
  // by another claimer (then it is not ours to count any more).
  const TimePoint now = clock_.now();
  for (auto it = retries_.begin(); it != retries_.end();) {
    if (it->second.at > now) {
      wait_until(it->second.at);
      ++it;
    } else if (now - it->second.at > options_.claim_lease) {
      it = retries_.erase(it);
    } else {
      ++it;
    }
  }
  return pass;
}

Result<DeliveryResult> InboxProcessor::replay(const std::string& delivery_id) {
  auto found = inbox_.find_delivery(delivery_id);
  if (!found.ok()) return found.status();
  if (!found.value()) return not_found("no delivery " + delivery_id);
  std::lock_guard handling(handle_mu_);
  const DeliveryRow& row = *found.value();
  log_.info("inbox: replaying {} delivery {} ({}), {} until now", source_name(row.source), row.delivery_id, row.event,
            delivery_status_name(row.status));
  DeliveryResult result = to_result(row, handle_guarded(row));
  retries_.erase(row.seq);
  if (Status s = inbox_.finish_delivery(row.seq, outcome_of(result), clock_.now()); !s.ok()) return s;
  return result;
}

void InboxProcessor::start() {
  if (thread_.joinable()) return;
  thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
  running_.store(true);
}

void InboxProcessor::stop() {
  running_.store(false);
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void InboxProcessor::poke() {
  {
    std::lock_guard lock(mu_);
    poked_ = true;
  }
  cv_.notify_one();
}

void InboxProcessor::run(std::stop_token stop) {
  name_this_thread("inbox-handle");
  while (!stop.stop_requested()) {
    last_progress_.store(std::chrono::steady_clock::now());
    InboxPass pass = run_once(stop);  // contains its own failures; never throws
    auto wait = options_.poll_interval;
    if (pass.retry_at) {
      auto until = std::chrono::duration_cast<std::chrono::milliseconds>(*pass.retry_at - clock_.now());
      wait = std::clamp(until, std::chrono::milliseconds(0), options_.poll_interval);
    } else if (pass.handled + pass.ignored + pass.failed >= options_.max_per_pass) {
      wait = std::chrono::milliseconds(0);  // a backlog: yield to stop(), then go on
    }
    std::unique_lock lock(mu_);
    // Wait, never sleep: stop() and poke() must wake us now.
    cv_.wait_for(lock, stop, wait, [this] { return poked_; });
    poked_ = false;
  }
}

Status requeue_delivery_by_id(InboxStore& inbox, const std::string& delivery_id) {
  auto found = inbox.find_delivery(delivery_id);
  if (!found.ok()) return found.status();
  if (!found.value()) return not_found("no delivery " + delivery_id);
  return inbox.requeue_delivery(found.value()->seq);
}

}  // namespace orch
