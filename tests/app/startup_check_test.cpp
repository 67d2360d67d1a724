// tests/app/startup_check_test.cpp: the start-up check of the Plane state names write-back moves items to (issue 20):
// a name Plane does not have refuses to start, naming the config line; an unreachable Plane only says so.
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>

#include "app/commands.h"
#include "app/settings.h"
#include "app/wiring.h"
#include "tests/fakes/fake_plane.h"
#include "tests/support/pipelines.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_log.h"

using namespace orch;
using namespace orch::testing;

namespace {

const std::string kApiKey = "plane_api_0123456789abcdef0123456789abcdef";

Result<std::unique_ptr<App>> open_app(const TempDir& dir, Config config, const std::string& plane_url, TestLog& log) {
  std::map<std::string, std::string> vars = {{"ORCH_DATA_DIR", dir.path().string()},
                                             {"ORCH_LISTEN", "127.0.0.1:0"},
                                             {"ORCH_PLANE_BASE_URL", plane_url},
                                             {"ORCH_PLANE_API_KEY", kApiKey},
                                             {"ORCH_GITEA_BASE_URL", "http://127.0.0.1:9/gitea"},
                                             {"ORCH_RECONCILE_ENABLED", "0"},
                                             {"ORCH_ALLOW_UNSIGNED_WEBHOOKS", "1"}};
  auto settings = make_settings(std::move(config), [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  });
  REQUIRE(settings.ok());
  return App::open(std::move(settings).value(), log.logger());
}

Config with_states(const std::string& review_state) {
  Config c = default_config();
  c.source_path = "/etc/orch/orch.toml";
  for (StageSpec& s : c.stages)
    if (s.name == "review") {
      s.plane_state = review_state;
      s.plane_state_line = 57;
    }
  c.plane_done_state = "Done";
  c.plane_done_state_line = 12;
  return c;
}

}  // namespace

TEST_CASE("start-up refuses a plane_state that Plane does not have, naming the config line") {
  FakePlane plane;
  plane.add_project("acme", default_config().projects.front().plane_project_id, "SHOP");
  plane.add_state(default_config().projects.front().plane_project_id, "In Review", "started");
  TempDir dir;
  TestLog log;
  {
    auto app = open_app(dir, with_states("In Reveiw"), plane.base_url(), log);
    REQUIRE(app.ok());
    Status s = app.value()->start();
    CHECK(s.code == Code::kInvalid);
    CHECK(s.message ==
          "orch.toml:57: 'plane_state' in [[stages]] \"review\": Plane project shop has no state "
          "'In Reveiw'");
  }
  auto good = open_app(dir, with_states("In Review"), plane.base_url(), log);
  REQUIRE(good.ok());
  CHECK(good.value()->start().ok());
  good.value()->stop();
}

TEST_CASE("start-up with Plane unreachable starts and says the state names could not be checked") {
  TempDir dir;
  TestLog log;
  auto app = open_app(dir, with_states("In Reveiw"), "http://127.0.0.1:9/plane", log);
  REQUIRE(app.ok());
  CHECK(app.value()->start().ok());
  app.value()->stop();
  CHECK(log.contains("write-back: cannot check the Plane states of shop"));
}

TEST_CASE("orch check-config with an API key looks the state names up in Plane and refuses a typo") {
  FakePlane plane;
  const std::string project_id = "4af0c6c4-5b8e-4d2a-9c61-0d3e7f2a91b5";  // examples/orch.toml's
  plane.add_project("acme", project_id, "SHOP");
  plane.add_state(project_id, "In Review", "started");
  std::ifstream in(std::string(ORCH_SOURCE_DIR) + "/examples/orch.toml");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto at = text.find("plane_state = \"In Review\"");
  REQUIRE(at != std::string::npos);
  TempDir dir;
  auto write = [&](const std::string& body) {
    std::ofstream(dir.file("orch.toml")) << body;
    return dir.file("orch.toml");
  };
  ::setenv("ORCH_PLANE_BASE_URL", plane.base_url().c_str(), 1);
  ::setenv("ORCH_PLANE_API_KEY", kApiKey.c_str(), 1);
  CHECK(cmd_check_config(write(text)) == 0);
  std::string typo = text;
  typo.replace(at, std::string("plane_state = \"In Review\"").size(), "plane_state = \"In Reveiw\"");
  CHECK(cmd_check_config(write(typo)) != 0);  // stderr: orch.toml:LINE: 'plane_state' in [[stages]] "review": ...
  std::string gone = text;
  plane.remove_state(project_id, "Done");
  CHECK(cmd_check_config(write(gone)) != 0);  // done_state names a state the project no longer has
  ::setenv("ORCH_PLANE_BASE_URL", "http://127.0.0.1:9/plane", 1);
  CHECK(cmd_check_config(write(typo)) == 0);  // Plane unreachable: a warning, serve checks again at start-up
  ::unsetenv("ORCH_PLANE_BASE_URL");
  ::unsetenv("ORCH_PLANE_API_KEY");
}
