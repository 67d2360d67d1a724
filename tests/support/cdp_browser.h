// tests/support/cdp_browser.h: headless chromium driven through a minimal Chrome DevTools Protocol client over
// --remote-debugging-pipe (chromium reads NUL-terminated JSON commands on fd 3 and writes answers and events on
// fd 4), for the browser tests of /queue and of the sandbox's page. Not thread-safe: one test thread drives it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/temp_dir.h"

namespace orch::testing {

inline constexpr const char* kChromium = "/usr/bin/chromium";

class DevTools {
 public:
  explicit DevTools(const TempDir& profile);  // starts chromium on a fresh profile, showing about:blank
  ~DevTools();                                // SIGKILLs and reaps it
  DevTools(const DevTools&) = delete;
  DevTools& operator=(const DevTools&) = delete;

  // Sends one command and returns its `result` (or the error object as {"error": ...}).
  nlohmann::json call(const std::string& method, nlohmann::json params, const std::string& session = "");
  // Evaluates a JS expression in the page and returns its value.
  nlohmann::json eval(const std::string& session, const std::string& expression);
  // Opens `url` in a new tab and attaches to it; returns the session id ("" if chromium refused).
  std::string open(const std::string& url);
  // Page.captureScreenshot of the session's page, written as a PNG file; false if chromium gave none.
  bool screenshot(const std::string& session, const std::string& png_path);

 private:
  std::optional<nlohmann::json> next_message();

  pid_t pid_ = -1;
  int write_fd_ = -1, read_fd_ = -1;
  int next_id_ = 0;
  std::string buffer_;
};

}  // namespace orch::testing
