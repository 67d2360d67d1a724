// tests/integrations/job_summary_test.cpp: the text a successful run reports, from files an agent controls.
#include "integrations/job_summary.h"

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/temp_dir.h"

using namespace orch;
using namespace orch::testing;
namespace fs = std::filesystem;

namespace {

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

// A log as LogPump writes it: a header per run, the output, orch's exit line.
std::string run_log(const std::string& output, int job = 7) {
  return "[orch] job " + std::to_string(job) + ": analyst for SHOP-1 in analysis, attempt 1, started now\n" + output +
         "[orch] exit 0\n";
}

bool valid(const std::string& s) { return valid_utf8(s) == s; }

struct Dirs {
  TempDir tmp;
  fs::path out = tmp.path() / "out";
  fs::path log = tmp.path() / "job.log";
  Dirs() { fs::create_directories(out); }
};

}  // namespace

TEST_CASE("job_summary: summary.md as written, else the log's last run without orch's lines, else nothing") {
  Dirs d;
  CHECK(job_summary(d.out, d.log) == "");  // neither exists
  write(d.log, run_log("old attempt\n") + run_log("first\n\nsecond\n\n\n") + "\n[orch: 12 bytes of output omitted]\n");
  CHECK(job_summary(d.out, d.log) == "first\n\nsecond\n");
  write(d.out / "summary.md", "  \n\t\n");  // only white space: as if there were none
  CHECK(job_summary(d.out, d.log) == "first\n\nsecond\n");
  write(d.out / "summary.md", "# Done\n\n- one <b>thing</b>\n");
  CHECK(job_summary(d.out, d.log) == "# Done\n\n- one <b>thing</b>\n");  // plain text: escaping is the sender's
  CHECK(job_summary(d.tmp.path() / "missing", d.log) == "first\n\nsecond\n");
}

TEST_CASE("job_summary: the log gives at most 40 lines and 64 KiB") {
  Dirs d;
  std::string output;
  for (int i = 1; i <= 100; ++i) output += "line " + std::to_string(i) + "\n";
  write(d.log, run_log(output));
  std::string want;
  for (int i = 61; i <= 100; ++i) want += "line " + std::to_string(i) + "\n";
  CHECK(job_summary(d.out, d.log) == want);

  // Long lines: as many whole last lines as fit in 64 KiB.
  const std::string long_line(30 * 1024, 'x');
  write(d.log, run_log("first\n" + long_line + "\n" + long_line + "\n" + long_line + "\n"));
  CHECK(job_summary(d.out, d.log) == long_line + "\n" + long_line + "\n");
  // One line longer than the limit: its end, cut at a character boundary.
  std::string huge;
  for (int i = 0; i < 40000; ++i) huge += "\xC3\xA9";  // é, 80,000 bytes
  write(d.log, run_log(huge + "\n"));
  const std::string s = job_summary(d.out, d.log);
  CHECK(s.size() <= kMaxSummaryBytes);
  CHECK(s.size() > kMaxSummaryBytes - 4);
  CHECK(valid(s));
  CHECK(s.back() == '\n');
}

TEST_CASE("job_summary: a summary.md past 64 KiB is cut at a character boundary and says so") {
  Dirs d;
  std::string text;
  while (text.size() < 100 * 1024) text += "\xE2\x82\xAC";  // €, three bytes: the limit falls inside one
  write(d.out / "summary.md", text);
  const std::string s = job_summary(d.out, d.log);
  CHECK(s.size() <= kMaxSummaryBytes);
  CHECK(valid(s));
  CHECK(s.find("\xEF\xBF\xBD") == std::string::npos);  // no character was broken
  CHECK(s.ends_with("\n[orch: the summary was cut here: summary.md is longer than 64 KiB]\n"));
  CHECK(s.starts_with("\xE2\x82\xAC\xE2\x82\xAC"));

  // Exactly 64 KiB is not cut.
  write(d.out / "summary.md", std::string(kMaxSummaryBytes, 'a'));
  CHECK(job_summary(d.out, d.log) == std::string(kMaxSummaryBytes, 'a'));
  // One more byte is.
  write(d.out / "summary.md", std::string(kMaxSummaryBytes + 1, 'a'));
  CHECK(job_summary(d.out, d.log).ends_with("longer than 64 KiB]\n"));
  CHECK(job_summary(d.out, d.log).size() <= kMaxSummaryBytes);
}

TEST_CASE("job_summary: a symlink, a directory or a fifo named summary.md is never read, nor a symlinked directory") {
  Dirs d;
  write(d.log, run_log("from the log\n"));
  write(d.tmp.path() / "secret", "SECRET\n");
  fs::create_symlink(d.tmp.path() / "secret", d.out / "summary.md");
  CHECK(job_summary(d.out, d.log) == "from the log\n");
  fs::remove(d.out / "summary.md");

  fs::create_directory(d.out / "summary.md");
  CHECK(job_summary(d.out, d.log) == "from the log\n");
  fs::remove(d.out / "summary.md");

  // Nobody ever writes this fifo: opening it must not wait for a writer.
  REQUIRE(::mkfifo((d.out / "summary.md").c_str(), 0600) == 0);
  CHECK(job_summary(d.out, d.log) == "from the log\n");
  fs::remove(d.out / "summary.md");

  // The output directory itself replaced by a symlink to a directory holding a summary.md.
  fs::create_directories(d.tmp.path() / "elsewhere");
  write(d.tmp.path() / "elsewhere" / "summary.md", "SECRET\n");
  fs::remove(d.out);
  fs::create_directory_symlink(d.tmp.path() / "elsewhere", d.out);
  CHECK(job_summary(d.out, d.log) == "from the log\n");
}

TEST_CASE("job_summary: invalid UTF-8 in summary.md or the log is replaced, so the result is valid UTF-8") {
  Dirs d;
  write(d.log, run_log("bad \xFF byte\n"));
  CHECK(job_summary(d.out, d.log) == "bad \xEF\xBF\xBD byte\n");
  write(d.out / "summary.md", "ok \xC3\xA9, overlong \xC0\xAF, surrogate \xED\xA0\x80, cut \xE2\x82");
  const std::string s = job_summary(d.out, d.log);
  CHECK(valid(s));
  CHECK(s.starts_with("ok \xC3\xA9, overlong \xEF\xBF\xBD\xEF\xBF\xBD, surrogate "));
  CHECK(s.ends_with("cut \xEF\xBF\xBD\xEF\xBF\xBD"));
}

TEST_CASE("valid_utf8 keeps well-formed text and replaces each bad byte") {
  CHECK(valid_utf8("") == "");
  CHECK(valid_utf8("plain ascii\n") == "plain ascii\n");
  CHECK(valid_utf8("\xF0\x9F\x98\x80 \xE2\x82\xAC \xC3\xA9") == "\xF0\x9F\x98\x80 \xE2\x82\xAC \xC3\xA9");
  CHECK(valid_utf8("\x80") == "\xEF\xBF\xBD");
  CHECK(valid_utf8("\xF4\x90\x80\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // past U+10FFFF
  CHECK(valid_utf8("a\xE2\x82") == "a\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(valid_utf8(std::string("a\0b", 3)) == std::string("a\0b", 3));
}
