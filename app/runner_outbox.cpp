#include "app/runner_outbox.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>

#include "integrations/unique_fd.h"

namespace orch {
namespace {

namespace fs = std::filesystem;

Status errno_status(const std::string& what) { return unavailable(what + ": " + std::strerror(errno)); }

// Writes `text` to `path` and flushes it to the disk.
Status write_synced(const fs::path& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.ok()) return errno_status("cannot create " + path.string());
  for (std::size_t at = 0; at < text.size();) {
    const ssize_t n = ::write(fd.get(), text.data() + at, text.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status("cannot write " + path.string());
    at += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return errno_status("cannot sync " + path.string());
  if (fd.close() != 0) return errno_status("cannot close " + path.string());
  return {};
}

// The rename itself is durable only once the folder is synced.
Status sync_dir(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.ok()) return errno_status("cannot open " + dir.string());
  if (::fsync(fd.get()) != 0) return errno_status("cannot sync " + dir.string());
  return {};
}

}  // namespace

fs::path RunnerOutbox::file_of(JobId job) const { return dir_ / (std::to_string(job) + ".json"); }

Status RunnerOutbox::put(const OutboxEntry& entry) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return unavailable("cannot create " + dir_.string() + ": " + ec.message());
  const nlohmann::json doc = {{"job", entry.job}, {"finish", entry.finish}, {"log", entry.log}};
  const fs::path file = file_of(entry.job);
  const fs::path tmp = file.string() + ".tmp";
  // Agent output is not guaranteed to be UTF-8: replace bad bytes rather than lose the report.
  if (Status s = write_synced(tmp, doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)); !s.ok())
    return s;
  fs::rename(tmp, file, ec);
  if (ec) return unavailable("cannot write " + file.string() + ": " + ec.message());
  return sync_dir(dir_);
}

void RunnerOutbox::remove(JobId job) {
  std::error_code ec;
  fs::remove(file_of(job), ec);
}

Result<std::vector<OutboxEntry>> RunnerOutbox::pending(std::vector<std::string>* skipped) const {
  static const std::regex name(R"([0-9]{1,18}\.json)");
  std::vector<OutboxEntry> out;
  std::error_code ec;
  if (!fs::exists(dir_, ec)) return out;
  fs::directory_iterator it(dir_, ec);
  if (ec) return unavailable("cannot list " + dir_.string() + ": " + ec.message());
  for (const auto& e : it) {
    const std::string file = e.path().filename().string();
    if (!std::regex_match(file, name)) continue;  // `.tmp` of an interrupted write, `.corrupt`
    std::ifstream in(e.path(), std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    const JobId expected = std::stoll(file.substr(0, file.size() - 5));
    const bool good = doc.is_object() && doc.contains("job") && doc["job"].is_number_integer() &&
                      doc["job"].get<JobId>() == expected && doc.contains("finish") && doc["finish"].is_object() &&
                      doc["finish"].value("claim", nlohmann::json()).is_string() &&
                      doc.value("log", nlohmann::json()).is_string();
    if (!good) {
      fs::rename(e.path(), e.path().string() + ".corrupt", ec);
      if (skipped) skipped->push_back(file);
      continue;
    }
    out.push_back({expected, doc["finish"], doc["log"].get<std::string>()});
  }
  std::sort(out.begin(), out.end(), [](const OutboxEntry& a, const OutboxEntry& b) { return a.job < b.job; });
  return out;
}

}  // namespace orch
