#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <cstdlib>
#include <regex>
#include <set>
#include <sstream>

#include "app/admin_actions.h"
#include "tests/app/app_harness.h"
#include "tests/support/exposition.h"
#include "tests/support/orch_process.h"

namespace orch {
namespace {

using namespace orch::testing;
using nlohmann::json;

json get_queue(RunningApp& app) {
  auto c = app.client();
  auto res = c.Get("/queue.json", admin());
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(res->get_header_value("Content-Type") == "application/json");
  json doc = json::parse(res->body, nullptr, false);
  REQUIRE(doc.is_object());
  return doc;
}

enum class T { kString, kInt, kNumber, kBool, kStringOrNull, kIntOrNull, kNumberOrNull, kArray, kObject };
bool has_type(const json& v, T t) {
  switch (t) {
    case T::kString: return v.is_string();
    case T::kInt: return v.is_number_integer();
    case T::kNumber: return v.is_number();
    case T::kBool: return v.is_boolean();
    case T::kStringOrNull: return v.is_string() || v.is_null();
    case T::kIntOrNull: return v.is_number_integer() || v.is_null();
    case T::kNumberOrNull: return v.is_number() || v.is_null();
    case T::kArray: return v.is_array();
    case T::kObject: return v.is_object();
  }
  return false;
}
void check_fields(const json& obj, const std::vector<std::pair<const char*, T>>& fields) {
  REQUIRE(obj.is_object());
  for (const auto& [name, type] : fields) {
    CAPTURE(name);
    REQUIRE(obj.contains(name));
    CHECK(has_type(obj[name], type));
  }
}
bool is_rfc3339(const json& v) {
  static const std::regex re(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z)");
  return v.is_string() && std::regex_match(v.get<std::string>(), re);
}

void seed(RunningApp& app) {
  TaskRow dev = app.add_task("SHOP-3", "Build the cart", {"analysis", "development"});
  app.add_task("SHOP-2", "Analyse checkout", {"analysis"});
  TaskRow blocked = app.add_task("SHOP-6", kHostileTitle, {"analysis", "development"});
  REQUIRE(app.store().set_blocked(blocked.id, true, "agent failed 3 times", SystemClock().now()).ok());
  app.add_failed_job(dev, "line one\n<script>alert(2)</script>\nlast line\n");
  app.add_failed_delivery("dlv-failed-1", "gitea unavailable");
  app.set_snapshot(R"({"last_pass_started_at":"2026-11-23T10:00:00Z","last_pass_duration_s":0.012,)"
                   R"("unblocked_total":3,"last_unblocked":"SHOP-42","last_error":null,"interval_s":60})");
}

TEST_CASE("/queue.json carries every documented field with its documented type") {
  RunningApp app;
  seed(app);
  app.start();
  json doc = get_queue(app);
  check_fields(doc, {{"generated_at", T::kString},
                     {"tasks", T::kArray},
                     {"jobs", T::kArray},
                     {"reconciler", T::kObject},
                     {"inbox", T::kObject},
                     {"transitions", T::kArray},
                     {"notifications", T::kObject},
                     {"refused_deliveries", T::kArray},
                     {"spend", T::kObject}});
  check_fields(doc["spend"], {{"projects", T::kArray}, {"stages", T::kArray}});
  CHECK(is_rfc3339(doc["generated_at"]));
  REQUIRE(doc["tasks"].size() == 3);
  for (const json& t : doc["tasks"]) {
    check_fields(t, {{"id", T::kInt},
                     {"project", T::kString},
                     {"work_item_id", T::kString},
                     {"work_item_key", T::kString},
                     {"title", T::kString},
                     {"stage", T::kString},
                     {"blocked", T::kBool},
                     {"blocked_reason", T::kStringOrNull},
                     {"branch", T::kString},
                     {"pr_number", T::kIntOrNull},
                     {"head_sha", T::kStringOrNull},
                     {"entered_stage_at", T::kString},
                     {"updated_at", T::kString},
                     {"spend_usd", T::kNumber},
                     {"budget_raise_usd", T::kNumber},
                     {"budget_hold", T::kStringOrNull}});
    CHECK(is_rfc3339(t["entered_stage_at"]));
    if (t["stage"] == "done") {
      CHECK(t["waiting"].is_null());
    } else {
      REQUIRE(t["waiting"].is_object());
      check_fields(t["waiting"], {{"reason", T::kString}, {"text", T::kString}, {"since", T::kString}});
      CHECK(std::set<std::string>{"gate_red", "job_queued", "job_running", "awaiting_human", "blocked",
                                  "budget_exhausted", "within_grace"}
                .count(t["waiting"]["reason"].get<std::string>()));
      CHECK(is_rfc3339(t["waiting"]["since"]));
    }
  }
  REQUIRE_FALSE(doc["jobs"].empty());
  bool saw_failed = false;
  for (const json& j : doc["jobs"]) {
    check_fields(j, {{"id", T::kInt},
                     {"task_id", T::kInt},
                     {"visit", T::kInt},
                     {"stage", T::kString},
                     {"agent", T::kString},
                     {"status", T::kString},
                     {"attempt", T::kInt},
                     {"started_at", T::kStringOrNull},
                     {"heartbeat_at", T::kStringOrNull},
                     {"step", T::kString},
                     {"step_attempts", T::kInt},
                     {"step_error", T::kString},
                     {"cost_usd", T::kNumber},
                     {"tokens_in", T::kInt},
                     {"tokens_out", T::kInt},
                     {"model", T::kString}});
    CHECK(std::set<std::string>{"queued", "running", "succeeded", "failed"}.count(j["status"].get<std::string>()));
    if (j["status"] == "failed" && j["error"] == "agent exited with 1") {
      saw_failed = true;
      REQUIRE(j.contains("log_tail"));
      CHECK(j["log_tail"].get<std::string>().find("<script>alert(2)</script>") != std::string::npos);
    }
  }
  CHECK(saw_failed);
  check_fields(doc["reconciler"], {{"enabled", T::kBool},
                                   {"plane_enabled", T::kBool},
                                   {"interval_s", T::kInt},
                                   {"last_pass_started_at", T::kStringOrNull},
                                   {"last_pass_duration_s", T::kNumberOrNull},
                                   {"unblocked_total", T::kInt},
                                   {"last_unblocked", T::kStringOrNull},
                                   {"last_error", T::kStringOrNull},
                                   {"leader", T::kStringOrNull},
                                   {"replica", T::kString},
                                   {"leading", T::kBool}});
  CHECK(doc["reconciler"]["unblocked_total"].get<int>() >= 3);
  CHECK(doc["reconciler"]["last_unblocked"] == "SHOP-42");
  check_fields(doc["inbox"], {{"received", T::kInt},
                              {"pending", T::kInt},
                              {"handled", T::kInt},
                              {"ignored", T::kInt},
                              {"failed", T::kInt},
                              {"failed_deliveries", T::kArray}});
  REQUIRE(doc["inbox"]["failed_deliveries"].size() == 1);
  check_fields(doc["inbox"]["failed_deliveries"][0], {{"source", T::kString},
                                                      {"delivery_id", T::kString},
                                                      {"event", T::kString},
                                                      {"error", T::kString},
                                                      {"received_at", T::kString}});
  REQUIRE_FALSE(doc["transitions"].empty());
  for (const json& t : doc["transitions"]) {
    check_fields(
        t, {{"task_id", T::kInt}, {"from", T::kString}, {"to", T::kString}, {"cause", T::kString}, {"at", T::kString}});
    CHECK(std::set<std::string>{"webhook", "agent", "reconciler", "manual"}.count(t["cause"].get<std::string>()));
  }
  check_fields(doc["notifications"], {{"pending", T::kInt}, {"sent", T::kInt}, {"failed", T::kInt}});
}

TEST_CASE("/queue.json shows a job whose follow-up step is failing: its step, its failed tries and the last error") {
  RunningApp app;
  TaskRow dev = app.add_task("SHOP-9", "Fix login", {"analysis", "development"});
  const JobRow job = app.add_job_in_failing_step(dev, "open_pr", "open_pr: HTTP 500");
  app.start();
  json doc = get_queue(app);
  const json* shown = nullptr;
  for (const json& j : doc["jobs"])
    if (j["id"] == job.id) shown = &j;
  REQUIRE(shown);
  CHECK((*shown)["status"] == "queued");
  CHECK((*shown)["attempt"] == 1);
  CHECK((*shown)["step"] == "open_pr");
  CHECK((*shown)["step_attempts"] == 1);
  CHECK((*shown)["step_error"] == "open_pr: HTTP 500");
}

TEST_CASE("replaying a failed delivery through the admin endpoint handles it again and takes it off the list") {
  RunningApp app;
  app.add_failed_delivery("dlv-failed-1", "gitea unavailable");
  app.start();
  auto c = app.client();
  auto res = c.Post("/admin/deliveries/dlv-failed-1/replay", admin(), "", "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  json body = json::parse(res->body, nullptr, false);
  CHECK(body["delivery_id"] == "dlv-failed-1");
  CHECK(body["status"] != "failed");
  json doc = get_queue(app);
  CHECK(doc["inbox"]["failed_deliveries"].empty());
  CHECK(doc["inbox"]["failed"] == 0);
}

TEST_CASE("kill switch flips through the admin endpoints show in /queue.json, the same as through the CLI code") {
  RunningApp app;
  app.start();
  auto c = app.client();
  CHECK(get_queue(app)["reconciler"]["enabled"] == true);
  auto off = c.Post("/admin/reconcile/disable", admin(), "", "application/json");
  REQUIRE(off);
  CHECK(off->status == 200);
  CHECK(json::parse(off->body)["enabled"] == false);
  CHECK(get_queue(app)["reconciler"]["enabled"] == false);
  CHECK(get_queue(app)["reconciler"]["plane_enabled"] == false);  // ORCH_RECONCILE_PLANE_ENABLED=0 in the harness
  REQUIRE(c.Post("/admin/reconcile/enable?side=plane", admin(), "", "application/json")->status == 200);
  CHECK(get_queue(app)["reconciler"]["plane_enabled"] == true);
  REQUIRE(c.Post("/admin/reconcile/enable", admin(), "", "application/json")->status == 200);
  CHECK(get_queue(app)["reconciler"]["enabled"] == true);
  CHECK(c.Post("/admin/reconcile/enable?side=gitea", admin(), "", "application/json")->status == 400);
  // The CLI goes through the same function: `orch reconcile disable --plane` on the same data, while serving.
  const std::string cli = "ORCH_DATA_DIR='" + app.dir().path().string() +
                          "' ORCH_CONFIG='" ORCH_SOURCE_DIR "/examples/orch.toml' '" ORCH_BINARY
                          "' reconcile disable --plane >/dev/null";
  CHECK(std::system(cli.c_str()) == 0);
  CHECK(get_queue(app)["reconciler"]["plane_enabled"] == false);
  REQUIRE(set_reconcile_switch(app.store(), false, false).ok());
  CHECK(get_queue(app)["reconciler"]["enabled"] == false);
  CHECK(app.log().contains("admin: reconciler enabled"));
}

TEST_CASE("retrying a blocked task unblocks it and queues the next attempt of its current visit") {
  RunningApp app;
  TaskRow task = app.add_task("SHOP-7", "Retry me", {"analysis", "development"});
  app.add_failed_job(task, "boom\n");
  REQUIRE(app.store().set_blocked(task.id, true, "agent failed", SystemClock().now()).ok());
  TaskRow other = app.add_task("SHOP-8", "Not blocked", {"analysis"});
  // Not started: the worker pool must not race the assertions on the queued job.
  auto job = retry_blocked_task(app.store(), app.app().pipeline(), task.id, SystemClock().now());
  REQUIRE(job.ok());
  CHECK(job.value().attempt == 2);
  CHECK(job.value().visit == task.visit);
  CHECK(job.value().agent == "developer");
  CHECK(job.value().status == JobStatus::kQueued);
  CHECK_FALSE(app.store().find_task(task.id).value()->blocked);
  CHECK(retry_blocked_task(app.store(), app.app().pipeline(), task.id, SystemClock().now()).status().code ==
        Code::kConflict);

  // Attempt 2 fails here, before the start, as the worker pool would fail it: left queued, a started worker
  // would run it, fail it and queue attempt 3 itself, whenever the machine's speed let it (then this retry is 4).
  auto claimed = app.store().claim_job("1/0", SystemClock().now());
  REQUIRE(claimed.ok());
  REQUIRE(claimed.value());
  REQUIRE(claimed.value()->id == job.value().id);
  REQUIRE(app.store().finish_job(job.value().id, JobStatus::kFailed, "agent exited with 1", SystemClock().now()).ok());
  REQUIRE(app.store().set_blocked(task.id, true, "agent failed again", SystemClock().now()).ok());
  app.start();
  auto c = app.client();
  auto res = c.Post("/admin/tasks/" + std::to_string(task.id) + "/retry", admin(), "", "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  json body = json::parse(res->body, nullptr, false);
  CHECK(body["task_id"] == task.id);
  CHECK(body["attempt"] == 3);
  auto not_blocked = c.Post("/admin/tasks/" + std::to_string(other.id) + "/retry", admin(), "", "application/json");
  REQUIRE(not_blocked);
  CHECK(not_blocked->status == 409);
}

TEST_CASE("orch explain and orch status say why a task waits, from the database, while the server is not running") {
  RunningApp app;
  TaskRow task = app.add_task("SHOP-7", "Explain \x1b[2Jme", {"analysis", "development"});  // an escape
  const JobRow failed = app.add_failed_job(task, "boom\n");
  REQUIRE(app.store().record_usage(failed.id, AgentUsage{900, 80, "large \x1b[1m", 420'000}).ok());
  REQUIRE(app.store().set_blocked(task.id, true, "agent failed", SystemClock().now()).ok());
  // Deliveries about it (one handled, then re-sent: a duplicate) and one about nothing, which it does not list.
  const TimePoint now = SystemClock().now();
  auto store_delivery = [&](const std::string& id, Source source) {
    auto ins = app.store().insert_delivery(
        NewDelivery{source, id, source == Source::kPlane ? "issue" : "push", "digest-" + id, "{}", now}, false);
    REQUIRE(ins.ok());
    return ins.value();
  };
  const InboxInsert about = store_delivery("dlv-about", Source::kPlane);
  REQUIRE(app.store().finish_delivery(about.seq, {DeliveryStatus::kHandled, "", task.id, "moved \x1b[31m"}, now).ok());
  REQUIRE(store_delivery("dlv-about", Source::kPlane).duplicate);
  const InboxInsert unrelated = store_delivery("dlv-unrelated", Source::kGitea);
  REQUIRE(app.store().finish_delivery(unrelated.seq, {DeliveryStatus::kIgnored, "no task", 0, ""}, now).ok());
  const std::map<std::string, std::string> env = {{"ORCH_DATA_DIR", app.dir().path().string()},
                                                  {"ORCH_CONFIG", ORCH_SOURCE_DIR "/examples/orch.toml"}};
  std::string out;
  REQUIRE(run_capture({ORCH_BINARY, "explain", "SHOP-7"}, env, &out) == 0);
  CAPTURE(out);
  CHECK(out.find("SHOP-7: Explain ?[2Jme\n") == 0);  // the terminal never gets the escape
  CHECK(out.find("\nstage: development (since ") != std::string::npos);
  CHECK(out.find("\nwaiting: blocked: blocked in development after 1 attempt: agent failed;") != std::string::npos);
  CHECK(out.find(" created -> analysis (webhook): seeded\n") != std::string::npos);
  CHECK(out.find(" analysis -> development (webhook): seeded\n") != std::string::npos);
  CHECK(out.find("attempt 1: failed: agent exited with 1 (0.42 USD, 900 tokens in, 80 out, large ?[1m)\n") !=
        std::string::npos);
  CHECK(out.find("\nspend: 0.42 USD\n") != std::string::npos);
  CHECK(out.find(" plane issue dlv-about: duplicate: of dlv-about\n") != std::string::npos);
  CHECK(out.find(" plane issue dlv-about: handled: moved ?[31m\n") != std::string::npos);
  CHECK(out.find("dlv-unrelated") == std::string::npos);

  REQUIRE(run_capture({ORCH_BINARY, "explain", "SHOP-7", "--json"}, env, &out) == 0);
  json doc = json::parse(out, nullptr, false);
  REQUIRE(doc.is_object());
  CHECK(doc["task"]["work_item_key"] == "SHOP-7");
  CHECK(doc["task"]["waiting"]["reason"] == "blocked");
  CHECK(doc["transitions"].size() == 2);
  CHECK(doc["transitions"][0]["work_item_key"] == "SHOP-7");  // /queue.json's transitions and jobs, as they are there
  CHECK(doc["jobs"][0]["error"] == "agent exited with 1");
  CHECK(doc["jobs"].size() >= 1);
  CHECK(doc["gate"].is_null());
  REQUIRE(doc["deliveries"].size() == 2);
  CHECK(doc["deliveries"][0]["outcome"] == "duplicate");
  CHECK(doc["deliveries"][1]["outcome"] == "handled");
  CHECK(doc["deliveries"][1]["work_item_key"] == "SHOP-7");

  CHECK(run_capture({ORCH_BINARY, "explain", "SHOP-404"}, env, &out) == 1);
  REQUIRE(run_capture({ORCH_BINARY, "status"}, env, &out) == 0);
  CHECK(out.find("  blocked: SHOP-7 in development: agent failed\n") != std::string::npos);
}

TEST_CASE("re-running a stage never kills the running job: the re-run's job follows it, both in the audit log") {
  RunningApp app;
  TaskRow task = app.add_task("SHOP-9", "Re-run me", {"analysis", "development"});
  const JobRow running = app.claim_new_job(task, SystemClock().now());
  // Not started: no worker races the claims below.
  auto rerun = rerun_stage(app.app().engine(), app.store(), app.app().pipeline(), task.id, std::nullopt);
  REQUIRE_MESSAGE(rerun.ok(), rerun.status().message);
  CHECK(rerun.value().stage == "development");
  CHECK(rerun.value().visit == task.visit + 1);
  auto audit = app.store().transitions_for_task(task.id).value();
  REQUIRE(audit.size() == 3);
  CHECK(audit.back().from == "development");
  CHECK(audit.back().to == "development");
  CHECK(audit.back().cause == Cause::kManual);
  CHECK(audit.back().detail == "re-run by a person");
  CHECK(app.store().find_job(running.id).value()->status == JobStatus::kRunning);  // untouched
  // The re-run's job is queued, held while the earlier one runs, and says so.
  std::optional<JobRow> queued;
  for (const JobRow& j : app.store().jobs_for_task(task.id).value())
    if (j.visit == task.visit + 1) queued = j;
  REQUIRE(queued);
  CHECK(queued->status == JobStatus::kQueued);
  CHECK(queued->agent == "developer");
  CHECK_FALSE(app.store().claim_job("1/1", SystemClock().now()).value().has_value());
  json doc = queue_document(app.store(), SystemClock().now(), QueueDefaults{},
                            waiting_rules(app.app().settings(), app.app().pipeline()))
                 .value();
  for (const json& t : doc["tasks"])
    if (t["id"] == task.id) {
      CHECK(t["waiting"]["reason"] == "job_queued");
      CHECK(t["waiting"]["text"].get<std::string>().find("after the task's job of an earlier visit") !=
            std::string::npos);
    }
  REQUIRE(app.store().finish_job(running.id, JobStatus::kFailed, "superseded", SystemClock().now()).ok());
  auto next = app.store().claim_job("1/1", SystemClock().now()).value();
  REQUIRE(next);
  CHECK(next->id == queued->id);

  // Refused, with the reason: a later stage, a human stage, a done task, an unknown one.
  auto later = rerun_stage(app.app().engine(), app.store(), app.app().pipeline(), task.id, std::string("review"));
  CHECK(later.status().code == Code::kInvalid);
  CHECK(later.status().message.find("re-run development or an earlier stage, not review") != std::string::npos);
  auto human = rerun_stage(app.app().engine(), app.store(), app.app().pipeline(), task.id, std::string("analysis"));
  CHECK(human.status().code == Code::kInvalid);
  CHECK(human.status().message.find("human stage") != std::string::npos);
  TaskRow done = app.add_task("SHOP-10", "Done already", {"analysis", "development", "review", "done"});
  CHECK(rerun_stage(app.app().engine(), app.store(), app.app().pipeline(), done.id, std::nullopt).status().code ==
        Code::kConflict);
  CHECK(app.store().transitions_for_task(task.id).value().size() == 3);  // the refusals wrote nothing

  // The CLI and the admin endpoint are the same action.
  const std::map<std::string, std::string> env = {{"ORCH_DATA_DIR", app.dir().path().string()},
                                                  {"ORCH_CONFIG", ORCH_SOURCE_DIR "/examples/orch.toml"}};
  std::string out;
  CHECK(run_capture({ORCH_BINARY, "task", "rerun", "SHOP-10"}, env, &out) == 1);
  REQUIRE(run_capture({ORCH_BINARY, "task", "rerun", "SHOP-9"}, env, &out) == 0);
  CHECK(out == "SHOP-9 re-runs development (visit " + std::to_string(task.visit + 2) +
                   "): its agent starts after any job of the task still running\n");
  app.start();
  auto c = app.client();
  const std::string url = "/admin/tasks/" + std::to_string(task.id) + "/rerun";
  CHECK(c.Post(url + "?stage=analysis", admin(), "", "application/json")->status == 400);
  CHECK(c.Post("/admin/tasks/" + std::to_string(done.id) + "/rerun", admin(), "", "application/json")->status == 409);
  CHECK(c.Post("/admin/tasks/987654/rerun", admin(), "", "application/json")->status == 404);
  CHECK(c.Post(url, httplib::Headers{}, "", "application/json")->status == 401);
  auto ok = c.Post(url + "?stage=development", admin(), "", "application/json");
  REQUIRE(ok);
  CHECK(ok->status == 200);
  json body = json::parse(ok->body, nullptr, false);
  CHECK(body["stage"] == "development");
  CHECK(body["visit"].get<int>() >= task.visit + 3);  // the started workers may have moved it meanwhile
  CHECK(app.log().contains("admin: task SHOP-9 re-runs development"));
}

TEST_CASE("a task held for its budget is resumed by the CLI or the admin endpoint only with a raise that lifts it") {
  RunningApp app;
  TaskRow task = app.add_task("SHOP-11", "Costly", {"analysis", "development"});
  const TimePoint now = SystemClock().now();
  REQUIRE(app.store().hold_task(task.id, "spent 3.00 USD of project shop's budget (3.00 USD)", now, {}).ok());
  TaskRow free = app.add_task("SHOP-12", "Not held", {"analysis"});
  const std::map<std::string, std::string> env = {{"ORCH_DATA_DIR", app.dir().path().string()},
                                                  {"ORCH_CONFIG", ORCH_SOURCE_DIR "/examples/orch.toml"}};
  std::string out;
  CHECK(run_capture({ORCH_BINARY, "task", "resume", "SHOP-12"}, env, &out) == 1);  // not held, no raise
  CHECK(run_capture({ORCH_BINARY, "task", "resume", "SHOP-404"}, env, &out) == 1);
  CHECK(run_capture({ORCH_BINARY, "task", "resume", "SHOP-11", "--raise-budget", "-1"}, env, &out) == 2);
  REQUIRE(run_capture({ORCH_BINARY, "task", "resume", "SHOP-11", "--raise-budget", "2.5"}, env, &out) == 0);
  CHECK(out == "SHOP-11 resumed in development (spent 0.00 USD, budget raised by 2.50 USD in all)\n");
  const TaskRow resumed = *app.store().find_task(task.id).value();
  CHECK(resumed.budget_hold.empty());
  CHECK(resumed.budget_raise == 2'500'000);
  CHECK(app.store().transitions_for_task(task.id).value().back().detail ==
        "budget raised by 2.50 USD and resumed by a person");

  REQUIRE(app.store().hold_task(task.id, "held again", now, {}).ok());
  app.start();
  auto c = app.client();
  const std::string url = "/admin/tasks/" + std::to_string(task.id) + "/resume";
  CHECK(c.Post(url, httplib::Headers{}, "", "application/json")->status == 401);
  CHECK(c.Post(url + "?raise_budget=lots", admin(), "", "application/json")->status == 400);
  CHECK(c.Post(url + "?raise_budget=-2", admin(), "", "application/json")->status == 400);
  CHECK(c.Post("/admin/tasks/" + std::to_string(free.id) + "/resume", admin(), "", "application/json")->status == 409);
  CHECK(c.Post("/admin/tasks/987654/resume", admin(), "", "application/json")->status == 404);
  auto ok = c.Post(url + "?raise_budget=1", admin(), "", "application/json");
  REQUIRE(ok);
  CHECK(ok->status == 200);
  json body = json::parse(ok->body, nullptr, false);
  CHECK(body["budget_raise_usd"] == 3.5);
  CHECK(app.store().find_task(task.id).value()->budget_hold.empty());
  CHECK(app.log().contains("admin: task SHOP-11 resumed (budget raised by 1.00 USD)"));
}

TEST_CASE("/readyz names each dependency and is ready when all are") {
  RunningApp app;
  app.start();
  auto c = app.client();
  auto res = c.Get("/readyz");
  REQUIRE(res);
  CHECK(res->status == 200);
  json body = json::parse(res->body, nullptr, false);
  CHECK(body["ready"] == true);
  for (const char* name : {"database", "inbox_processor", "worker_pool", "reconciler", "outbox"}) {
    CAPTURE(name);
    CHECK(body["checks"][name] == "ok");
  }
}

TEST_CASE("/readyz fails, naming the inbox processor, when a delivery has waited far too long") {
  RunningApp app;
  app.start();
  app.app().inbox().stop();  // the processor is wedged: nothing takes the delivery below
  NewDelivery d{.source = Source::kPlane,
                .delivery_id = "stuck-1",
                .event = "issue",
                .body_digest = "d",
                .body = "{}",
                .received_at = SystemClock().now() - std::chrono::minutes(10)};
  REQUIRE(app.store().insert_delivery(d, false).ok());
  auto res = app.client().Get("/readyz");
  REQUIRE(res);
  CHECK(res->status == 503);
  json body = json::parse(res->body, nullptr, false);
  CHECK(body["ready"] == false);
  CHECK(body["checks"]["inbox_processor"].get<std::string>().find("stuck-1") != std::string::npos);
  CHECK(body["checks"]["database"] == "ok");
}

TEST_CASE("the exposition checker refuses what Prometheus would") {
  CHECK(parse_exposition("# TYPE a counter\na 1\n").errors.empty());
  CHECK(parse_exposition("# TYPE a gauge\na{x=\"1\",y=\"q\\\"\"} 2.5\n").errors.empty());
  CHECK_FALSE(parse_exposition("a 1\n").errors.empty());                         // no TYPE
  CHECK_FALSE(parse_exposition("# TYPE a counter\na{x=1} 1\n").errors.empty());  // unquoted label
  CHECK_FALSE(parse_exposition("# TYPE a counter\na one\n").errors.empty());
  CHECK_FALSE(parse_exposition("# TYPE a counter\n#bogus\n").errors.empty());
}

TEST_CASE("/metrics is valid exposition text with deliveries, transitions, jobs, inbox, outbox and reconciler") {
  RunningApp app;
  seed(app);
  const std::vector<JobRow> failed = app.store().recent_failed_jobs(1).value();  // SHOP-3's, in development
  REQUIRE(failed.size() == 1);
  REQUIRE(app.store().record_usage(failed[0].id, AgentUsage{1, 1, "", 750'000}).ok());
  app.start();
  auto c = app.client();
  auto stored =
      c.Post("/webhooks/gitea", {{"X-Gitea-Delivery", "m-1"}, {"X-Gitea-Event-Type", "push"}},
             R"({"ref":"refs/heads/main","after":"abc","repository":{"full_name":"acme/shop"}})", "application/json");
  REQUIRE(stored);
  CHECK(stored->status == 202);
  auto refused = c.Post("/webhooks/gitea", {{"X-Gitea-Event-Type", "push"}}, "{}", "application/json");
  REQUIRE(refused);
  CHECK(refused->status >= 400);
  // A transition after start-up goes through the bus (the seeded ones were written to the store directly).
  TaskRow fresh = app.add_task("SHOP-9", "Fresh", {});
  auto moved = app.app().engine().advance_stage(fresh.id, AdvanceRequest{.cause = Cause::kManual,
                                                                         .to = "analysis",
                                                                         .expected_from = std::nullopt,
                                                                         .finished_agent = std::nullopt,
                                                                         .rejection_reason = std::nullopt,
                                                                         .detail = "test"});
  REQUIRE_MESSAGE(moved.ok(), moved.status().message);
  REQUIRE(c.Post("/admin/reconcile/disable", admin(), "", "application/json")->status == 200);

  auto res = c.Get("/metrics");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(res->get_header_value("Content-Type").rfind("text/plain", 0) == 0);
  Exposition e = parse_exposition(res->body);
  for (const std::string& err : e.errors) FAIL_CHECK(err);
  CHECK(e.types["orch_webhook_deliveries_received_total"] == "counter");
  CHECK(e.samples[R"(orch_webhook_deliveries_received_total{outcome="stored",source="gitea"})"] == 1);
  CHECK(e.samples[R"(orch_webhook_deliveries_received_total{outcome="refused",source="gitea"})"] == 1);
  CHECK(e.types["orch_http_request_duration_seconds"] == "histogram");
  CHECK(e.samples[R"(orch_http_request_duration_seconds_count{route="/webhooks/gitea"})"] == 2);
  CHECK(e.types["orch_inbox_commit_duration_seconds"] == "histogram");
  CHECK(e.samples["orch_inbox_commit_duration_seconds_count"] == 1);  // the stored one; the refused one wrote nothing
  CHECK(e.samples["orch_inbox_commit_duration_seconds_sum"] > 0);
  CHECK(e.samples["orch_inbox_commit_deliveries_sum"] == 1);
  CHECK(e.types["orch_inbox_commit_queue_wait_seconds"] == "histogram");
  CHECK(e.samples["orch_inbox_commit_queue_wait_seconds_count"] == 1);
  // The SQLite store's checkpoint thread (this small a run never wakes it: the series exist, at 0).
  CHECK(e.types["orch_store_checkpoints_total"] == "counter");
  for (const char* kind : {"round", "restart", "in_place"})
    CHECK(e.samples.count("orch_store_checkpoints_total{kind=\"" + std::string(kind) + "\"}"));
  CHECK(e.types["orch_store_checkpoint_hold_seconds_total"] == "counter");
  CHECK(e.samples.count("orch_store_checkpoint_hold_seconds_total"));
  CHECK(e.types["orch_store_checkpoint_hold_max_seconds"] == "gauge");
  CHECK(e.types["orch_transitions_total"] == "counter");
  CHECK(e.samples[R"(orch_transitions_total{cause="manual",from="created",to="analysis"})"] == 1);
  CHECK(e.types["orch_spend_usd"] == "gauge");
  CHECK(e.samples[R"(orch_spend_usd{project="shop",stage="development"})"] == 0.75);
  CHECK(e.types["orch_jobs"] == "gauge");
  CHECK(e.samples.count(R"(orch_jobs{status="queued"})"));
  CHECK(e.samples.count(R"(orch_jobs{status="running"})"));
  CHECK(e.samples[R"(orch_inbox_deliveries{status="failed"})"] == 1);
  CHECK(e.types["orch_notification_outbox_depth"] == "gauge");
  CHECK(e.samples.count("orch_notification_outbox_depth"));
  CHECK(e.samples["orch_reconcile_enabled"] == 0);
  CHECK(e.samples["orch_reconcile_unblocks_total"] >= 3);
  CHECK(e.types["orch_reconcile_pass_duration_seconds"] == "histogram");
  CHECK(e.types["orch_reconcile_passes_total"] == "counter");
  for (const char* outcome : {"ok", "error", "interrupted"})  // present before the first pass, whenever it runs
    CHECK(e.samples.count(std::string(R"(orch_reconcile_passes_total{outcome=")") + outcome + "\"}"));
  CHECK(e.samples["orch_reconcile_last_pass_timestamp_seconds"] > 0);
  CHECK(e.samples["orch_store_up"] == 1);
}

TEST_CASE("/metrics counts and times every reconcile pass this replica runs, not the dry runs nor switched-off ones") {
  RunningApp app;
  app.start();
  app.app().reconciler().stop();  // its thread's passes (a first one may have run) are all counted before `before`
  auto c = app.client();
  auto scrape = [&] {
    auto res = c.Get("/metrics");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    Exposition e = parse_exposition(res->body);
    for (const std::string& err : e.errors) FAIL_CHECK(err);
    return e;
  };
  const std::string ok = R"(orch_reconcile_passes_total{outcome="ok"})";
  Exposition before = scrape();
  ReconcilePass& pass = app.app().reconcile_pass();
  // Two passes between two scrapes: both counted (a snapshot read at scrape time would see only the last).
  REQUIRE(pass.run_once({}).ran);
  REQUIRE(pass.run_once({}).ran);
  REQUIRE(pass.run_once(PassOptions{.dry_run = true, .full_sweep = false}).ran);
  REQUIRE(app.store().set_setting(kSettingReconcileEnabled, "0").ok());
  REQUIRE_FALSE(pass.run_once({}).ran);
  Exposition after = scrape();
  CHECK(after.types["orch_reconcile_passes_total"] == "counter");
  CHECK(after.samples[ok] == before.samples[ok] + 2);
  CHECK(after.samples[R"(orch_reconcile_passes_total{outcome="error"})"] ==
        before.samples[R"(orch_reconcile_passes_total{outcome="error"})"]);
  CHECK(after.samples["orch_reconcile_pass_duration_seconds_count"] ==
        before.samples["orch_reconcile_pass_duration_seconds_count"] + 2);
  CHECK(after.samples["orch_reconcile_pass_duration_seconds_sum"] >=
        before.samples["orch_reconcile_pass_duration_seconds_sum"]);
}

}  // namespace
}  // namespace orch

namespace orch {
namespace {
using namespace orch::testing;
using namespace std::chrono_literals;

TEST_CASE("/metrics counts API calls by client and outcome, agent runs, delivery handling and unblocks by stage") {
  RunningApp app;
  app.start();
  Metrics& m = app.app().metrics();
  m.api_call("gitea", ApiOutcome::kOk, 0.02);
  m.api_call("gitea", ApiOutcome::kServerError, 0.5);
  m.api_call("plane", ApiOutcome::kRateLimited, 0.01);
  m.agent_run("developer", "development", AgentOutcome::kSucceeded, 42);
  m.agent_run("developer", "development", AgentOutcome::kFailed, 3);
  m.delivery_handled(Source::kGitea, "status", DeliveryStatus::kHandled, 0.004);
  // The event name comes from a request header: an unexpected one is folded into "other", never a new series.
  m.delivery_handled(Source::kGitea, "x-made-up-event-1", DeliveryStatus::kIgnored, 0.001);
  m.delivery_handled(Source::kGitea, "x-made-up-event-2", DeliveryStatus::kIgnored, 0.001);
  m.unblocked("gate", "development");
  m.unblocked("tracker", "analysis");
  m.unblocked("tracker", "analysis");

  // A delivery through the real route and inbox thread is timed too (its Gitea call fails fast: a closed port).
  auto c = app.client();
  auto stored =
      c.Post("/webhooks/gitea", {{"X-Gitea-Delivery", "h-1"}, {"X-Gitea-Event-Type", "push"}},
             R"({"ref":"refs/heads/main","after":"abc","repository":{"full_name":"acme/shop"}})", "application/json");
  REQUIRE(stored);
  REQUIRE(stored->status == 202);
  REQUIRE(eventually([&] { return app.store().inbox_counts().value().pending == 0; }, 10s));

  auto res = c.Get("/metrics");
  REQUIRE(res);
  Exposition e = parse_exposition(res->body);
  for (const std::string& err : e.errors) FAIL_CHECK(err);
  CHECK(e.types["orch_api_calls_total"] == "counter");
  CHECK(e.samples[R"(orch_api_calls_total{client="gitea",outcome="ok"})"] == 1);
  CHECK(e.samples[R"(orch_api_calls_total{client="gitea",outcome="server_error"})"] == 1);
  CHECK(e.samples[R"(orch_api_calls_total{client="plane",outcome="rate_limited"})"] == 1);
  CHECK(e.types["orch_api_call_duration_seconds"] == "histogram");
  CHECK(e.samples[R"(orch_api_call_duration_seconds_count{client="gitea"})"] == 2);
  CHECK(e.types["orch_agent_run_duration_seconds"] == "histogram");
  CHECK(e.samples
            [R"(orch_agent_run_duration_seconds_count{agent="developer",outcome="succeeded",stage="development"})"] ==
        1);
  CHECK(e.samples[R"(orch_agent_run_duration_seconds_sum{agent="developer",outcome="failed",stage="development"})"] ==
        3);
  CHECK(e.types["orch_delivery_handling_duration_seconds"] == "histogram");
  CHECK(
      e.samples[R"(orch_delivery_handling_duration_seconds_count{event="status",outcome="handled",source="gitea"})"] ==
      1);
  CHECK(e.samples[R"(orch_delivery_handling_duration_seconds_count{event="other",outcome="ignored",source="gitea"})"] ==
        2);
  CHECK(e.samples[R"(orch_delivery_handling_duration_seconds_count{event="push",outcome="handled",source="gitea"})"] ==
        1);
  CHECK(e.types["orch_reconcile_unblocks_by_stage_total"] == "counter");
  CHECK(e.samples[R"(orch_reconcile_unblocks_by_stage_total{side="gate",stage="development"})"] == 1);
  CHECK(e.samples[R"(orch_reconcile_unblocks_by_stage_total{side="tracker",stage="analysis"})"] == 2);
}

TEST_CASE("/readyz names a stopped inbox processor and a stopped worker pool") {
  RunningApp app;
  app.start();
  auto c = app.client();
  REQUIRE(c.Get("/readyz")->status == 200);
  app.app().inbox().stop();
  app.app().pool().stop();
  auto res = c.Get("/readyz");
  REQUIRE(res);
  CHECK(res->status == 503);
  json body = json::parse(res->body, nullptr, false);
  CHECK(body["checks"]["inbox_processor"] == "inbox processor thread is not running");
  CHECK(body["checks"]["worker_pool"] == "worker pool is not running");
  CHECK(body["checks"]["database"] == "ok");
}

}  // namespace
}  // namespace orch

namespace orch {
namespace {
using namespace orch::testing;

TEST_CASE("/queue.json and /metrics say which replica leads: on SQLite the one node always does") {
  RunningApp app(Env{{"ORCH_REPLICA_ID", "node-7"}});
  app.start();
  json doc = get_queue(app);
  CHECK(doc["reconciler"]["replica"] == "node-7");
  CHECK(doc["reconciler"]["leader"] == "node-7");
  CHECK(doc["reconciler"]["leading"] == true);
  auto res = app.client().Get("/metrics");
  REQUIRE(res);
  Exposition e = parse_exposition(res->body);
  for (const std::string& err : e.errors) FAIL_CHECK(err);
  CHECK(e.samples[R"(orch_leader{replica="node-7"})"] == 1);
  CHECK(e.samples[R"(orch_leader_info{leader="node-7"})"] == 1);
}

TEST_CASE("a replica id that could not name a worker or a claim is refused at start-up") {
  auto settings = make_settings(default_config(), [](const std::string& name) -> std::optional<std::string> {
    if (name == "ORCH_REPLICA_ID") return std::string("a b/c");
    return std::nullopt;
  });
  REQUIRE_FALSE(settings.ok());
  CHECK(settings.status().message.find("ORCH_REPLICA_ID") != std::string::npos);
}

TEST_CASE("refused deliveries are counted on /metrics by source and reason and listed on /queue.json") {
  RunningApp app;  // unsigned webhooks allowed: the refusals below are for other reasons
  app.start();
  auto c = app.client();
  auto post = [&](const char* path, httplib::Headers h, const std::string& body, const char* type) {
    auto r = c.Post(path, h, body, type);
    REQUIRE(r);
    return r->status;
  };
  CHECK(post("/webhooks/gitea", {{"X-Gitea-Event-Type", "push"}}, "{}", "application/json") == 400);
  CHECK(post("/webhooks/plane", {{"X-Plane-Delivery", "p-1"}, {"X-Plane-Event", "issue"}}, "{}", "text/plain") == 415);
  CHECK(post("/webhooks/plane", {{"X-Plane-Delivery", "p-2"}, {"X-Plane-Event", "issue"}}, "{", "application/json") ==
        400);
  CHECK(post("/webhooks/plane", {{"X-Plane-Delivery", "p-3"}, {"X-Plane-Event", "issue"}}, "[", "application/json") ==
        400);

  auto res = c.Get("/metrics");
  REQUIRE(res);
  Exposition e = parse_exposition(res->body);
  for (const std::string& err : e.errors) FAIL_CHECK(err);
  CHECK(e.types["orch_webhook_refused_total"] == "counter");
  CHECK(e.samples[R"(orch_webhook_refused_total{reason="missing_header",source="gitea"})"] == 1);
  CHECK(e.samples[R"(orch_webhook_refused_total{reason="unsupported_media_type",source="plane"})"] == 1);
  CHECK(e.samples[R"(orch_webhook_refused_total{reason="malformed",source="plane"})"] == 2);
  // Every reason is exposed from the start, so an alert on rate() sees the series before the first refusal.
  CHECK(e.samples.count(R"(orch_webhook_refused_total{reason="too_large",source="plane"})"));
  CHECK(e.samples[R"(orch_webhook_refused_total{reason="too_large",source="plane"})"] == 0);

  json doc = get_queue(app);
  REQUIRE(doc["refused_deliveries"].is_array());
  REQUIRE(doc["refused_deliveries"].size() == 3);
  std::map<std::string, json> by_kind;
  for (const json& r : doc["refused_deliveries"]) {
    check_fields(r, {{"source", T::kString},
                     {"reason", T::kString},
                     {"count", T::kInt},
                     {"last_at", T::kString},
                     {"last_error", T::kString}});
    CHECK(is_rfc3339(r["last_at"]));
    by_kind[r["source"].get<std::string>() + ":" + r["reason"].get<std::string>()] = r;
  }
  CHECK(by_kind["plane:malformed"]["count"] == 2);
  CHECK(by_kind["plane:malformed"]["last_error"] == "malformed JSON at byte 2");
  CHECK(by_kind["plane:unsupported_media_type"]["count"] == 1);
  CHECK(by_kind["gitea:missing_header"]["last_error"] == "missing or oversized X-Gitea-Delivery header");
  CHECK(app.store().inbox_counts().value().received == 0);  // and nothing of it was stored
}

}  // namespace
}  // namespace orch

namespace orch {
namespace {
using namespace orch::testing;

// A Plane comment whose text carries a hostile title and a long agent summary: none of it may reach the listing.
const std::string kHostileWrite = std::string(R"({"kind":"comment","project":"shop","work_item_id":"wi-SHOP-3",)") +
                                  R"("text":")" + kHostileTitle + " " + std::string(5000, 'x') + R"("})";

TEST_CASE("/queue.json's write_back block sums the Plane and Gitea writes and lists them without their text") {
  RunningApp app;
  const NotificationId failed = app.add_write("plane", "3:7:comment", kHostileWrite, "plane answered 422");
  const NotificationId pending =
      app.add_write("gitea", "3:7:status",
                    R"({"kind":"status","repo":"acme/shop","branch":"orch/shop-3","state":"pending"})", std::nullopt);
  const NotificationId newer_failed = app.add_write(
      "gitea", "3:8:review", R"({"kind":"review","repo":"acme/shop","pr":12,"event":"COMMENT"})", "gitea answered 500");
  // A Telegram notification is not a write-back: counted under notifications only.
  REQUIRE(app.store().enqueue_notification("tg-1", "hello", SystemClock().now()).ok());
  app.start();
  json doc = get_queue(app);
  REQUIRE(doc.contains("write_back"));
  const json& wb = doc["write_back"];
  check_fields(wb, {{"enabled", T::kBool},
                    {"pending", T::kInt},
                    {"failed", T::kInt},
                    {"failed_writes", T::kArray},
                    {"pending_writes", T::kArray}});
  CHECK(wb["enabled"] == true);
  CHECK(wb["pending"] == 1);
  CHECK(wb["failed"] == 2);
  REQUIRE(wb["failed_writes"].size() == 2);
  REQUIRE(wb["pending_writes"].size() == 1);
  for (const json& w : wb["failed_writes"]) {
    check_fields(w, {{"id", T::kInt},
                     {"channel", T::kString},
                     {"kind", T::kString},
                     {"key", T::kString},
                     {"attempts", T::kInt},
                     {"error", T::kString},
                     {"created_at", T::kString},
                     {"next_attempt_at", T::kString}});
    CHECK(is_rfc3339(w["created_at"]));
    CHECK(is_rfc3339(w["next_attempt_at"]));
    CHECK_FALSE(w.contains("text"));
  }
  // Newest first, across both channels.
  CHECK(wb["failed_writes"][0]["id"] == newer_failed);
  CHECK(wb["failed_writes"][0]["channel"] == "gitea");
  CHECK(wb["failed_writes"][0]["kind"] == "review");
  const json& plane = wb["failed_writes"][1];
  CHECK(plane["id"] == failed);
  CHECK(plane["channel"] == "plane");
  CHECK(plane["kind"] == "comment");
  CHECK(plane["key"] == "3:7:comment");
  CHECK(plane["attempts"] == 1);
  CHECK(plane["error"] == "plane answered 422");
  CHECK(wb["pending_writes"][0]["id"] == pending);
  CHECK(wb["pending_writes"][0]["kind"] == "status");
  CHECK(wb["pending_writes"][0]["attempts"] == 0);
  const std::string whole = doc.dump();
  CHECK(whole.find(kHostileTitle) == std::string::npos);
  CHECK(whole.find(std::string(100, 'x')) == std::string::npos);
  // (pending, or sent already by the Telegram drainer; never in write_back's sums above)
  CHECK(doc["notifications"]["pending"].get<int>() + doc["notifications"]["sent"].get<int>() == 1);
}

TEST_CASE("/queue.json's write_back says enabled false when the kill switch ORCH_PLANE_WRITE_BACK is off") {
  RunningApp app(Env{{"ORCH_PLANE_WRITE_BACK", "0"}});
  app.start();
  json doc = get_queue(app);
  REQUIRE(doc.contains("write_back"));
  CHECK(doc["write_back"]["enabled"] == false);
  CHECK(doc["write_back"]["failed_writes"].empty());
}

TEST_CASE("retrying a failed write through POST /admin/outbox/<id>/retry makes it pending with a fresh budget") {
  RunningApp app;
  const NotificationId failed = app.add_write("plane", "5:9:comment", kHostileWrite, "plane answered 422");
  const NotificationId pending =
      app.add_write("gitea", "5:9:status",
                    R"({"kind":"status","repo":"acme/shop","branch":"orch/shop-5","state":"pending"})", std::nullopt);
  app.start();
  auto c = app.client();
  const std::string path = "/admin/outbox/" + std::to_string(failed) + "/retry";

  auto anonymous = c.Post(path, "", "application/json");
  REQUIRE(anonymous);
  CHECK(anonymous->status == 401);
  CHECK(get_queue(app)["write_back"]["failed"] == 1);

  auto res = c.Post(path, admin(), "", "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(json::parse(res->body, nullptr, false) == json{{"retried", failed}});
  auto rows = app.store().all_notifications();
  REQUIRE(rows.ok());
  bool seen = false;
  for (const NotificationRow& r : rows.value())
    if (r.id == failed) {
      seen = true;
      CHECK(r.status == NotificationStatus::kPending);
      CHECK(r.attempts == 0);
    }
  CHECK(seen);
  json wb = get_queue(app)["write_back"];
  CHECK(wb["failed"] == 0);
  CHECK(wb["failed_writes"].empty());
  CHECK(wb["pending"] == 2);
  CHECK(app.log().contains("admin: outbox message " + std::to_string(failed) + " retried"));

  auto again = c.Post(path, admin(), "", "application/json");  // pending now, not failed
  REQUIRE(again);
  CHECK(again->status == 409);
  auto not_failed = c.Post("/admin/outbox/" + std::to_string(pending) + "/retry", admin(), "", "application/json");
  REQUIRE(not_failed);
  CHECK(not_failed->status == 409);
  auto unknown = c.Post("/admin/outbox/987654/retry", admin(), "", "application/json");
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  CHECK(json::parse(unknown->body, nullptr, false).contains("error"));
  // Timed under a bounded route label, not the path with its id (the logger runs just after each answer).
  CHECK(eventually([&] {
    auto m = c.Get("/metrics");
    if (!m || m->status != 200) return false;
    return parse_exposition(m->body)
               .samples[R"(orch_http_request_duration_seconds_count{route="/admin/outbox/retry"})"] == 5;
  }));
}

TEST_CASE("/metrics has orch_outbox_messages by channel and status, beside the Telegram-only gauges") {
  RunningApp app;
  app.add_write("plane", "1:1:comment", R"({"kind":"comment"})", "plane answered 422");
  app.add_write("plane", "1:1:state", R"({"kind":"state"})", std::nullopt);
  app.add_write("gitea", "1:1:status", R"({"kind":"status"})", std::nullopt);
  app.add_write("gitea", "1:2:status", R"({"kind":"status"})", std::nullopt);
  REQUIRE(app.store().enqueue_notification("tg-1", "hello", SystemClock().now()).ok());
  app.start();
  auto res = app.client().Get("/metrics");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  Exposition e = parse_exposition(res->body);
  for (const std::string& err : e.errors) FAIL_CHECK(err);
  CHECK(e.types["orch_outbox_messages"] == "gauge");
  CHECK(e.samples[R"(orch_outbox_messages{channel="plane",status="failed"})"] == 1);
  CHECK(e.samples[R"(orch_outbox_messages{channel="plane",status="pending"})"] == 1);
  CHECK(e.samples[R"(orch_outbox_messages{channel="plane",status="sent"})"] == 0);
  CHECK(e.samples[R"(orch_outbox_messages{channel="gitea",status="pending"})"] == 2);
  CHECK(e.samples[R"(orch_outbox_messages{channel="gitea",status="failed"})"] == 0);
  // Every channel and status is a series from the start; the Telegram one may be sent already by its drainer.
  for (const char* channel : {"telegram", "plane", "gitea"})
    for (const char* status : {"pending", "sent", "failed"}) {
      CAPTURE(channel);
      CAPTURE(status);
      CHECK(e.samples.count(std::string(R"(orch_outbox_messages{channel=")") + channel + R"(",status=")" + status +
                            "\"}"));
    }
  CHECK(sum_samples(e, "orch_outbox_messages", {R"(channel="telegram")"}) == 1);
  // The Telegram-only gauges stay as they were.
  CHECK(e.types["orch_notifications"] == "gauge");
  CHECK(e.samples.count("orch_notification_outbox_depth"));
  CHECK(sum_samples(e, "orch_notifications") == 1);
}

}  // namespace
}  // namespace orch
