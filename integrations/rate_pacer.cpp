#include "integrations/rate_pacer.h"

#include <algorithm>
#include <charconv>

#include "integrations/http_client.h"

namespace orch {
namespace {

// A whole non-negative decimal number, nothing else: a malformed header is ignored, not guessed at.
std::optional<std::int64_t> non_negative(const std::optional<std::string>& v) {
  if (!v || v->empty()) return std::nullopt;
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || end != v->data() + v->size() || n < 0) return std::nullopt;
  return n;
}

}  // namespace

RatePacer::RatePacer(RatePacerOptions options) : options_(std::move(options)) {}

Millis RatePacer::before_request(TimePoint now, int reserve) {
  std::lock_guard lock(mu_);
  if (remaining_ && *remaining_ <= std::max(options_.reserve, reserve)) {
    if (now < window_clear_at_) {
      ++pauses_;
      return std::max(Millis(1), std::chrono::duration_cast<Millis>(window_clear_at_ - now));
    }
    // The window has passed: the whole allowance is back, its exact size unknown until the next answer says.
    remaining_.reset();
  }
  if (remaining_) --*remaining_;
  return Millis(0);
}

void RatePacer::observe(const HttpResponse& response, TimePoint now) {
  std::lock_guard lock(mu_);
  if (response.status == 429) {
    // No rate headers on a 429 (Plane): Retry-After is all the server says. Without it the caller's backoff decides.
    auto after = non_negative(response.header("Retry-After"));
    if (!after) return;
    const Millis wait = std::min<Millis>(Seconds(std::min<std::int64_t>(*after, 86400)), options_.max_pause);
    const bool closed = remaining_ && *remaining_ <= options_.reserve && window_clear_at_ > now;
    window_clear_at_ = closed ? std::max(window_clear_at_, now + wait) : now + wait;
    remaining_ = 0;
    return;
  }
  auto remaining = non_negative(response.header(options_.remaining_header));
  if (!remaining) return;  // a server (or an answer) without a limit
  remaining_ = *remaining;
  auto reset = non_negative(response.header(options_.reset_header));
  // A Reset beyond the year 2200 is nonsense (and would overflow the time point): treated as absent.
  TimePoint clear = reset && *reset < (std::int64_t{1} << 33) ? TimePoint(Seconds(*reset)) + options_.margin
                                                              : now + options_.max_pause;
  window_clear_at_ = std::clamp(clear, now, now + options_.max_pause);
}

std::int64_t RatePacer::pauses() const {
  std::lock_guard lock(mu_);
  return pauses_;
}

std::optional<std::int64_t> RatePacer::remaining() const {
  std::lock_guard lock(mu_);
  return remaining_;
}

}  // namespace orch
