// The runner's file outbox (app/runner_outbox.h): what it keeps survives a new RunnerOutbox over the same folder (a
// restart), an entry is replaced whole, and files it did not write never block the others.
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>

#include "app/runner_outbox.h"
#include "tests/support/temp_dir.h"

using namespace orch;
using namespace orch::testing;

namespace {

OutboxEntry entry(JobId job, const std::string& claim, const std::string& log) {
  return {job, {{"claim", claim}, {"exit_code", 0}, {"head_sha", "abc"}}, log};
}

}  // namespace

TEST_CASE("runner outbox: entries survive a restart, are replaced whole, and leave once removed") {
  TempDir tmp;
  const auto dir = tmp.path() / "outbox";
  {
    RunnerOutbox box(dir);
    CHECK(box.pending().value().empty());  // no folder yet: nothing pending, no error
    REQUIRE(box.put(entry(12, "runner:a/1", "last lines\n")).ok());
    REQUIRE(box.put(entry(3, "runner:a/2", "")).ok());
    REQUIRE(box.put(entry(12, "runner:a/1", "")).ok());  // its log was sent: the file says so
  }
  RunnerOutbox again(dir);  // as the next start of the runner
  auto pending = again.pending();
  REQUIRE(pending.ok());
  REQUIRE(pending.value().size() == 2);
  CHECK(pending.value()[0].job == 3);
  CHECK(pending.value()[1].job == 12);
  CHECK(pending.value()[1].finish["claim"] == "runner:a/1");
  CHECK(pending.value()[1].finish["head_sha"] == "abc");
  CHECK(pending.value()[1].log.empty());
  CHECK(!std::filesystem::exists(dir / "12.json.tmp"));

  again.remove(3);
  REQUIRE(again.pending().value().size() == 1);
  CHECK(again.pending().value()[0].job == 12);
  again.remove(3);  // twice: nothing
}

TEST_CASE("runner outbox: agent output that is not UTF-8 is kept, its bad bytes replaced") {
  TempDir tmp;
  RunnerOutbox box(tmp.path() / "outbox");
  REQUIRE(box.put(entry(1, "runner:a/1", "ok \xff\xfe done\n")).ok());
  auto pending = box.pending();
  REQUIRE(pending.ok());
  REQUIRE(pending.value().size() == 1);
  CHECK(pending.value()[0].log.rfind("ok ", 0) == 0);
  CHECK(pending.value()[0].log.find("done\n") != std::string::npos);
}

TEST_CASE("runner outbox: a file it did not write is set aside, and the others are still delivered") {
  TempDir tmp;
  const auto dir = tmp.path() / "outbox";
  RunnerOutbox box(dir);
  REQUIRE(box.put(entry(7, "runner:a/1", "")).ok());
  std::ofstream(dir / "8.json") << "{ not json";
  std::ofstream(dir / "9.json") << R"({"job": 10, "finish": {"claim": "runner:a/1"}, "log": ""})";  // not its name
  std::ofstream(dir / "11.json") << R"({"job": 11, "finish": {"claim": 5}, "log": ""})";            // no claim
  std::ofstream(dir / "5.json.tmp") << "half";                                                      // interrupted
  std::ofstream(dir / "notes.txt") << "an operator's";
  std::vector<std::string> skipped;
  auto pending = box.pending(&skipped);
  REQUIRE(pending.ok());
  REQUIRE(pending.value().size() == 1);
  CHECK(pending.value()[0].job == 7);
  std::sort(skipped.begin(), skipped.end());
  CHECK(skipped == std::vector<std::string>{"11.json", "8.json", "9.json"});
  CHECK(std::filesystem::exists(dir / "8.json.corrupt"));
  CHECK(!std::filesystem::exists(dir / "8.json"));
  // Set aside once: the next read is clean.
  skipped.clear();
  CHECK(box.pending(&skipped).value().size() == 1);
  CHECK(skipped.empty());
}
