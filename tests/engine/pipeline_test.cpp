#include <doctest/doctest.h>

#include "engine/layout.h"
#include "engine/pipeline.h"
#include "tests/support/pipelines.h"

using namespace orch;

TEST_CASE("the default pipeline runs created -> analysis -> development -> review -> done") {
  Pipeline p(testing::default_config());
  CHECK(p.first_working_stage() == "analysis");
  CHECK(p.next("created") == "analysis");
  CHECK(p.next("analysis") == "development");
  CHECK(p.next("development") == "review");
  CHECK(p.next("review") == "done");
  CHECK_FALSE(p.next("done"));
  CHECK_FALSE(p.next("nowhere"));
  CHECK(p.is_terminal("done"));
  CHECK_FALSE(p.is_terminal("review"));
}

TEST_CASE("rollback edges are declared, not special-cased") {
  Pipeline p(testing::default_config());
  CHECK(p.rollback_target("analysis", Rollback::kReject) == "analysis");
  CHECK(p.rollback_target("review", Rollback::kChangesRequested) == "development");
  CHECK_FALSE(p.rollback_target("development", Rollback::kReject));
  CHECK(p.allowed("review", "development"));
  CHECK(p.allowed("analysis", "analysis"));
  CHECK_FALSE(p.allowed("development", "analysis"));  // no edge declared
  CHECK_FALSE(p.allowed("analysis", "review"));       // no skipping
  CHECK_FALSE(p.allowed("done", "analysis"));
}

TEST_CASE("grace comes from the stage, else the fallback") {
  Pipeline p(testing::default_config());
  CHECK(p.grace("development", std::chrono::seconds(60)) == std::chrono::minutes(30));
  CHECK(p.grace("review", std::chrono::seconds(60)) == std::chrono::seconds(60));
}

TEST_CASE("branch and path names come from the key alone and cannot escape") {
  CHECK(branch_for("SHOP-42", "9a28bd00") == "orch/shop-42");
  CHECK(branch_for("", "9A28BD00-ed9c") == "orch/9a28bd00-ed9c");
  CHECK(sanitize_component("../../etc/passwd") == "etc-passwd");
  CHECK(sanitize_component("$(touch pwned)") == "touch-pwned");
  CHECK(sanitize_component("") == "item");
  CHECK(sanitize_component(std::string(200, 'a')).size() == 64);
}
