// engine/clock.h: the only way code below app/ learns the time.
// SystemClock reads the wall clock; tests use tests/support/manual_clock.h. Thread-safe.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace orch {

using TimePoint = std::chrono::system_clock::time_point;
using Seconds = std::chrono::seconds;
using Millis = std::chrono::milliseconds;

struct Clock {
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now(); }
};

// Milliseconds since the Unix epoch: how times are stored in the database (sortable, exact).
inline long long to_millis(TimePoint t) { return std::chrono::duration_cast<Millis>(t.time_since_epoch()).count(); }
inline TimePoint from_millis(long long ms) { return TimePoint(Millis(ms)); }

// RFC 3339 in UTC with a 'Z' and millisecond precision: "2026-11-23T10:00:00.123Z" (whole seconds omit the fraction).
std::string format_rfc3339(TimePoint t);
// Accepts 'Z' or ±hh:mm, an optional fraction of any length, and a bare date (midnight UTC). nullopt if malformed.
std::optional<TimePoint> parse_rfc3339(std::string_view s);

}  // namespace orch
