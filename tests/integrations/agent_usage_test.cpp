// tests/integrations/agent_usage_test.cpp: what an agent says a run used, from a file it controls; and dollars as
// people read them.
#include "integrations/agent_usage.h"

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "engine/budget.h"
#include "tests/support/temp_dir.h"

using namespace orch;
using namespace orch::testing;
namespace fs = std::filesystem;

namespace {

Result<std::optional<AgentUsage>> usage_of(const TempDir& dir, const std::string& text) {
  std::ofstream(dir.path() / "usage.json", std::ios::binary) << text;
  return read_agent_usage(dir.path());
}

std::string error_of(const TempDir& dir, const std::string& text) {
  auto r = usage_of(dir, text);
  if (r.ok()) return "(read without error)";
  CHECK(r.status().code == Code::kInvalid);
  return r.status().message;
}

}  // namespace

TEST_CASE("usage.json: every field is optional, cost is rounded to micro-USD, tokens are whole numbers") {
  TempDir dir;
  CHECK_FALSE(read_agent_usage(dir.path()).value().has_value());  // none written
  auto full = usage_of(dir, R"({"tokens_in": 12000, "tokens_out": 3400, "model": "large-2", "cost_usd": 0.1234565})");
  REQUIRE(full.ok());
  REQUIRE(full.value());
  CHECK(full.value()->tokens_in == 12000);
  CHECK(full.value()->tokens_out == 3400);
  CHECK(full.value()->model == "large-2");
  CHECK(full.value()->cost == 123457);
  auto empty = usage_of(dir, "{}");
  REQUIRE(empty.value());
  CHECK(empty.value()->cost == 0);
  CHECK(empty.value()->model.empty());
  CHECK(usage_of(dir, R"({"cost_usd": 2, "model": null})").value()->cost == 2'000'000);
}

TEST_CASE("usage.json that is no usage report is refused with why, and nothing about it is trusted") {
  TempDir dir;
  CHECK(error_of(dir, "not json") == "usage.json is not a JSON object");
  CHECK(error_of(dir, "[1, 2]") == "usage.json is not a JSON object");
  CHECK(error_of(dir, R"({"cost_usd": -0.5})") == "usage.json: 'cost_usd' must be a number of dollars, at least 0");
  CHECK(error_of(dir, R"({"cost_usd": "1.0"})") == "usage.json: 'cost_usd' must be a number of dollars, at least 0");
  CHECK(error_of(dir, R"({"tokens_in": 1.5})") ==
        "usage.json: 'tokens_in' must be a whole number of tokens, at least 0");
  CHECK(error_of(dir, R"({"tokens_out": -3})") ==
        "usage.json: 'tokens_out' must be a whole number of tokens, at least 0");
  CHECK(error_of(dir, R"({"model": 7})") == "usage.json: 'model' must be a string");
  CHECK(error_of(dir, "{\"model\": \"" + std::string(kMaxUsageBytes, 'x') + "\"}") ==
        "usage.json is larger than 65536 bytes");

  // The model is cut at a character boundary, and invalid UTF-8 replaced.
  std::string long_model;
  for (int i = 0; i < 150; ++i) long_model += "\xC3\xA9";  // é: 300 bytes
  auto cut = usage_of(dir, "{\"model\": \"" + long_model + "\"}");
  REQUIRE(cut.value());
  CHECK(cut.value()->model.size() == kMaxModelBytes);
  CHECK(cut.value()->model == long_model.substr(0, kMaxModelBytes));
  CHECK(usage_of(dir, "{\"model\": \"a\xFF\"}").status().code == Code::kInvalid);  // not JSON's UTF-8 at all

  // A symlink (to a file the agent may not read itself) or a fifo is not followed.
  TempDir elsewhere;
  std::ofstream(elsewhere.path() / "secret.json") << R"({"cost_usd": 1})";
  fs::remove(dir.path() / "usage.json");
  fs::create_symlink(elsewhere.path() / "secret.json", dir.path() / "usage.json");
  CHECK(read_agent_usage(dir.path()).status().message == "usage.json is not a regular file");
  fs::remove(dir.path() / "usage.json");
  REQUIRE(::mkfifo((dir.path() / "usage.json").c_str(), 0600) == 0);
  CHECK(read_agent_usage(dir.path()).status().message == "usage.json is not a regular file");
}

TEST_CASE("dollars: micro-USD read as people write them, and back") {
  CHECK(format_usd(0) == "0.00");
  CHECK(format_usd(500'000) == "0.50");
  CHECK(format_usd(12'000'000) == "12.00");
  CHECK(format_usd(125) == "0.000125");
  CHECK(format_usd(1'234'567) == "1.234567");
  CHECK(format_usd(-1'500'000) == "-1.50");
  CHECK(usd_to_micros(0.5) == 500'000);
  CHECK(usd_to_micros(0.0000004) == 0);
  CHECK_FALSE(usd_to_micros(-0.01).has_value());
  CHECK_FALSE(usd_to_micros(1e10).has_value());
  CHECK_FALSE(usd_to_micros(std::numeric_limits<double>::quiet_NaN()).has_value());
  CHECK_FALSE(usd_to_micros(std::numeric_limits<double>::infinity()).has_value());
}
