// Issue 20 end to end against the real binary: one work item through the whole pipeline of the e2e world
// (analysis -> human approval -> development -> CI -> review -> done) with write-back on. What a person sees in
// Plane is read back from the fake Plane: exactly the expected comments, in order, each once, and the state moves the
// config declares; on Gitea, the orch/pipeline status of the PR's head.
#include <doctest/doctest.h>

#include "tests/e2e/pipeline_run.h"

using namespace orch::testing;
using namespace orch::testing::e2e;

TEST_CASE(
    "e2e write-back: one item through the pipeline leaves exactly the expected comments and state moves in Plane") {
  PipelineOptions run;
  run.world.write_back = true;
  run.at_end = [](World& w, const RunResult&) {
    REQUIRE(eventually([&] { return w.count("SELECT COUNT(*) FROM notifications WHERE status <> 'sent'") == 0; }, 60s));
    const auto rows = w.rows("SELECT work_item_id, head_sha FROM tasks");
    REQUIRE(rows.size() == 1);
    const std::string item = rows[0][0];
    std::vector<std::string> kinds, texts;
    for (const auto& c : w.plane.comments(item)) {
      CHECK(c["external_source"] == "orch");
      const std::string id = c["external_id"];
      kinds.push_back(id.substr(id.find(':', id.find(':') + 1) + 1));
      texts.push_back(c["comment_html"]);
      MESSAGE(id << ": " << c["comment_html"].get<std::string>());
    }
    CHECK(kinds == std::vector<std::string>{"analysis", "pr_opened", "review_approved", "done"});
    REQUIRE(texts.size() == 4);
    // The analyst's summary (tests/e2e/agents/analyst.sh) carries markup: it arrives as text, with the next step.
    CHECK(texts[0].find("Plan for SHOP-1: &lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=alert(2)&gt;") !=
          std::string::npos);
    CHECK(texts[0].find("<script") == std::string::npos);
    CHECK(texts[0].find("<img") == std::string::npos);
    CHECK(texts[0].find("Move this work item to Approved") != std::string::npos);
    CHECK(texts[1].find("/acme/shop/pulls/1") != std::string::npos);
    CHECK(w.plane.state_history(item) == std::vector<std::string>{"In Review", "Done"});
    // On Gitea: the PR head's orch/pipeline status went pending in review and success at the end.
    std::vector<std::string> pipeline;
    for (const auto& s : w.gitea.status_history(kRepo, rows[0][1]))
      if (s["context"] == "orch/pipeline") pipeline.push_back(s["status"]);
    CHECK(pipeline == std::vector<std::string>{"pending", "pending", "success"});
  };
  RunResult r = run_pipeline(1, Loss{.drop = 0.0, .twice = 0.0, .stale = 0.0}, run);
  CHECK(r.done == 1);
}
