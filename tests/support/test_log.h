// tests/support/test_log.h: a spdlog::logger over a ring buffer, so tests assert on what an operator would read.
#pragma once

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <vector>

namespace orch::testing {

class TestLog {
 public:
  explicit TestLog(spdlog::level::level_enum level = spdlog::level::info)
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(4096)),
        logger_(std::make_shared<spdlog::logger>("test", sink_)) {
    sink_->set_pattern("%l %v");
    logger_->set_level(level);
  }
  spdlog::logger& logger() { return *logger_; }
  operator spdlog::logger&() { return *logger_; }
  // Each line as "<level> <message>", e.g. "warn gate side: task 7 skipped: ...".
  std::vector<std::string> lines() const { return sink_->last_formatted(); }
  bool contains(const std::string& needle) const {
    for (const auto& l : lines())
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
  std::string all() const {
    std::string out;
    for (const auto& l : lines()) out += l;
    return out;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace orch::testing
