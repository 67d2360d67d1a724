// tests/support/temp_dir.h: a fresh directory per test, removed at the end (kept when ORCH_KEEP_TEST_TMP is set).
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

namespace orch::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// The whole file, as bytes; "" when it cannot be read (not there yet).
std::string read_file(const std::filesystem::path& path);

// Waits on a predicate until it holds or the deadline passes, polling with a short backoff. For threads and
// processes we do not own (a server under test); our own threads are tested through their run_once().
bool eventually(const std::function<bool()>& predicate, std::chrono::milliseconds deadline = std::chrono::seconds(20));

}  // namespace orch::testing
