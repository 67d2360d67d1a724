// DESIGN: the output directory is the agent's, and the agent runs attacker-influenced work: whatever is named
// summary.md there may be a symlink to a file of ours, a fifo nobody will ever write, or a directory. So the directory
// and then the file are opened without following symlinks (O_NOFOLLOW, openat on the directory's descriptor) and
// without blocking (O_NONBLOCK: opening a fifo for reading returns at once), and only a regular file is read, and no
// more of it than the limit. The log is orch's own file (LogPump in worker_pool.cpp), opened the same careful way.
#include "integrations/job_summary.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "integrations/unique_fd.h"

namespace orch {
namespace {

constexpr std::string_view kCutNote = "[orch: the summary was cut here: summary.md is longer than 64 KiB]\n";
// Enough of the log's end for 40 lines within 64 KiB, after orch's own lines are left out.
constexpr std::size_t kLogTailBytes = 2 * kMaxSummaryBytes;

// Up to `limit` bytes of the regular file `fd`, its first ones or (from_end) its last ones starting at a line;
// nullopt when it is not a regular file or cannot be read.
std::optional<std::string> read_regular(int fd, std::size_t limit, bool from_end) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  const auto size = static_cast<std::size_t>(st.st_size);
  const std::size_t offset = from_end && size > limit ? size - limit : 0;
  std::string out;
  out.resize(std::min(limit, size - offset));
  std::size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::pread(fd, out.data() + got, out.size() - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;  // shrank meanwhile
    got += static_cast<std::size_t>(n);
  }
  out.resize(got);
  // From the middle of the file: the first line is a fragment of one.
  if (offset > 0) {
    const auto nl = out.find('\n');
    out.erase(0, nl == std::string::npos ? out.size() : nl + 1);
  }
  return out;
}

constexpr int kOpenFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;

// The last `n` bytes of valid UTF-8 `s`, cut forward to a character boundary.
std::string_view tail_at_boundary(std::string_view s, std::size_t n) {
  if (n >= s.size()) return s;
  std::size_t from = s.size() - n;
  while (from < s.size() && (static_cast<unsigned char>(s[from]) & 0xC0) == 0x80) ++from;
  return s.substr(from);
}

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

std::optional<std::string> summary_file(const std::filesystem::path& output_dir) {
  UniqueFd dir(::open(output_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir.ok()) return std::nullopt;
  UniqueFd file(::openat(dir.get(), "summary.md", kOpenFlags));
  if (!file.ok()) return std::nullopt;  // absent, or a symlink (ELOOP)
  auto raw = read_regular(file.get(), kMaxSummaryBytes + 1, /*from_end=*/false);
  if (!raw || blank(*raw)) return std::nullopt;
  const bool cut = raw->size() > kMaxSummaryBytes;
  if (cut) {
    raw->resize(kMaxSummaryBytes);
    // A character split by the limit is dropped, not replaced: only the file's own bad bytes become U+FFFD.
    std::size_t last = raw->size() - 1;
    while (last > 0 && raw->size() - last < 4 && (static_cast<unsigned char>((*raw)[last]) & 0xC0) == 0x80) --last;
    const auto lead = static_cast<unsigned char>((*raw)[last]);
    const std::size_t len = (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 1;
    if (last + len > raw->size()) raw->resize(last);
  }
  std::string text = valid_utf8(*raw);
  if (!cut && text.size() <= kMaxSummaryBytes) return text;
  std::string out(utf8_prefix(text, kMaxSummaryBytes - kCutNote.size() - 1));
  if (!out.empty() && out.back() != '\n') out += '\n';
  out += kCutNote;
  return out;
}

std::string log_tail(const std::filesystem::path& log_file) {
  UniqueFd file(::open(log_file.c_str(), kOpenFlags));
  if (!file.ok()) return "";
  auto raw = read_regular(file.get(), kLogTailBytes, /*from_end=*/true);
  if (!raw) return "";
  std::vector<std::string_view> lines;
  std::string_view rest = *raw;
  while (!rest.empty()) {
    const auto nl = rest.find('\n');
    lines.push_back(rest.substr(0, nl));
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
  }
  // Backwards from the end, up to the header of the latest run (the log holds every attempt of the job).
  std::vector<std::string> kept;
  std::size_t bytes = 0;
  for (auto it = lines.rbegin(); it != lines.rend() && kept.size() < kMaxSummaryLogLines; ++it) {
    const std::string_view line = *it;
    if (line.starts_with("[orch] job ")) break;
    if (line.starts_with("[orch] ") || line.starts_with("[orch: ")) continue;  // the exit line, the cap marker
    if (kept.empty() && blank(line)) continue;                                 // trailing blank lines
    std::string text = valid_utf8(line);
    if (bytes + text.size() + 1 > kMaxSummaryBytes) {
      if (kept.empty()) kept.emplace_back(tail_at_boundary(text, kMaxSummaryBytes - 1));
      break;
    }
    bytes += text.size() + 1;
    kept.push_back(std::move(text));
  }
  while (!kept.empty() && blank(kept.back())) kept.pop_back();  // leading blank lines
  std::string out;
  for (auto it = kept.rbegin(); it != kept.rend(); ++it) out += *it + "\n";
  return out;
}

}  // namespace

std::string job_summary(const std::filesystem::path& output_dir, const std::filesystem::path& log_file) {
  if (auto summary = summary_file(output_dir)) return *std::move(summary);
  return log_tail(log_file);
}

}  // namespace orch
