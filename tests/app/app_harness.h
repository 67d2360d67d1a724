// tests/app/app_harness.h: a real App (the one `orch serve` builds) on 127.0.0.1:0 over a fresh data directory,
// seeded through its own Store before start(), and a cpp-httplib client for it. Plane and Gitea point at a closed
// port (connections fail fast) and the tracker side is off, so nothing leaves the machine.
#pragma once

#include <httplib.h>

#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <doctest/doctest.h>

#include "app/settings.h"
#include "app/wiring.h"
#include "engine/layout.h"
#include "engine/setting_keys.h"
#include "tests/support/pipelines.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_log.h"

namespace orch::testing {

inline constexpr const char* kAdminToken = "s3cret-admin-token";
inline constexpr const char* kPlaneBase = "http://127.0.0.1:9/plane";
inline constexpr const char* kGiteaBase = "http://127.0.0.1:9/gitea";
inline constexpr const char* kHostileTitle = "<img src=x onerror=alert(1)>";

using Env = std::map<std::string, std::string>;

class RunningApp {
 public:
  // `env` is added over the defaults; a value of "" removes a default (e.g. {"ORCH_ADMIN_TOKEN", ""}).
  explicit RunningApp(Env env = {}) {
    std::map<std::string, std::string> vars = {
        {"ORCH_DATA_DIR", dir_.path().string()}, {"ORCH_LISTEN", "127.0.0.1:0"},
        {"ORCH_ADMIN_TOKEN", kAdminToken},       {"ORCH_PLANE_BASE_URL", kPlaneBase},
        {"ORCH_GITEA_BASE_URL", kGiteaBase},     {"ORCH_RECONCILE_PLANE_ENABLED", "0"},
        {"ORCH_ALLOW_UNSIGNED_WEBHOOKS", "1"}};
    for (auto& [k, v] : env) vars[k] = v;
    auto settings = make_settings(default_config(), [vars](const std::string& name) -> std::optional<std::string> {
      auto it = vars.find(name);
      if (it == vars.end() || it->second.empty()) return std::nullopt;
      return it->second;
    });
    REQUIRE(settings.ok());
    auto app = App::open(std::move(settings).value(), log_);
    REQUIRE_MESSAGE(app.ok(), app.status().message);
    app_ = std::move(app).value();
  }
  ~RunningApp() { app_->stop(); }

  void start() { REQUIRE(app_->start().ok()); }
  App& app() { return *app_; }
  Store& store() { return app_->store(); }
  TestLog& log() { return log_; }
  const TempDir& dir() const { return dir_; }
  std::string origin() const { return "http://127.0.0.1:" + std::to_string(app_->port()); }
  httplib::Client client() const {
    httplib::Client c(origin());
    c.set_connection_timeout(5);
    c.set_read_timeout(10);
    return c;
  }

  // Seeding, before start().
  TaskRow add_task(const std::string& key, const std::string& title, const std::vector<std::string>& path) {
    TimePoint now = SystemClock().now();
    NewTask t{.project = "shop",
              .work_item_id = "wi-" + key,
              .work_item_key = key,
              .title = title,
              .description = "",
              .branch = "orch/" + lower(key)};
    auto claim = store().create_task_atomic(t, now);
    REQUIRE(claim.ok());
    TaskRow row = claim.value().task;
    std::string from = row.stage;
    for (const std::string& to : path) {
      auto moved = store().apply_transition(TransitionRequest{.task_id = row.id,
                                                              .from = from,
                                                              .to = to,
                                                              .cause = Cause::kWebhook,
                                                              .detail = "seeded",
                                                              .rejection_reason = std::nullopt,
                                                              .now = now});
      REQUIRE(moved.ok());
      row = moved.value();
      from = to;
    }
    return row;
  }
  void add_failed_delivery(const std::string& id, const std::string& error) {
    TimePoint now = SystemClock().now();
    NewDelivery d{.source = Source::kGitea,
                  .delivery_id = id,
                  .event = "status",
                  .body_digest = "digest-" + id,
                  .body = R"({"sha":"0000000000000000000000000000000000000000","state":"success",)"
                          R"("context":"ci","repository":{"full_name":"acme/unknown"}})",
                  .received_at = now};
    auto ins = store().insert_delivery(d, false);
    REQUIRE(ins.ok());
    REQUIRE(store().finish_delivery(ins.value().seq, {DeliveryStatus::kFailed, error, 0, ""}, now).ok());
  }
  // The first attempt of the developer's job for `task`, enqueued and claimed by worker "1/0" (so it is running).
  JobRow claim_new_job(const TaskRow& task, TimePoint now) {
    auto job = store().enqueue_job(NewJob{.task_id = task.id,
                                          .visit = task.visit,
                                          .stage = task.stage,
                                          .agent = "developer",
                                          .attempt = 1,
                                          .run_after = now},
                                   now);
    REQUIRE(job.ok());
    REQUIRE(job.value());
    auto claimed = store().claim_job("1/0", now);
    REQUIRE(claimed.ok());
    REQUIRE(claimed.value());
    REQUIRE(claimed.value()->id == job.value()->id);
    return *claimed.value();
  }
  // A job that ran and failed, with a log file.
  JobRow add_failed_job(const TaskRow& task, const std::string& log_text) {
    TimePoint now = SystemClock().now();
    const JobRow job = claim_new_job(task, now);
    REQUIRE(store().finish_job(job.id, JobStatus::kFailed, "agent exited with 1", now).ok());
    auto path = DataLayout(dir_.path()).job_log(job.id);
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << log_text;
    return job;
  }
  // A job whose agent succeeded and whose follow-up `step` failed once with `error`; it waits to retry in an hour,
  // so no worker of the running app claims it meanwhile.
  JobRow add_job_in_failing_step(const TaskRow& task, const std::string& step, const std::string& error) {
    TimePoint now = SystemClock().now();
    const JobRow job = claim_new_job(task, now);
    REQUIRE(store().begin_job_step(job.id, step, now).ok());
    REQUIRE(store().fail_job_step(job.id, error, now + std::chrono::hours(1), now).ok());
    return job;
  }
  // An outbox message of `channel` (a write-back: plane / gitea) stored pending and, with `error`, failed after one
  // attempt, as a drainer that gave up leaves it. Returns its id.
  NotificationId add_write(const std::string& channel, const std::string& key, const std::string& text,
                           const std::optional<std::string>& error) {
    TimePoint now = SystemClock().now();
    auto added = store().enqueue_messages(
        {OutboxMessage{
            .channel = channel, .dedup_key = key, .text = text, .lane = channel + ":lane-" + key, .task_id = 0}},
        now);
    REQUIRE(added.ok());
    REQUIRE(added.value() == 1);
    auto rows = store().messages(channel, NotificationStatus::kPending, 1000);
    REQUIRE(rows.ok());
    NotificationId id = 0;
    for (const NotificationRow& r : rows.value())
      if (r.dedup_key == key) id = r.id;
    REQUIRE(id != 0);
    if (error) REQUIRE(store().mark_notification_failed(id, *error).ok());
    return id;
  }
  void set_snapshot(const std::string& json) { REQUIRE(store().set_setting(kSettingReconcileSnapshot, json).ok()); }

  static std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

 private:
  TempDir dir_;
  TestLog log_;
  std::unique_ptr<App> app_;
};

inline httplib::Headers bearer(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }
inline httplib::Headers admin() { return bearer(kAdminToken); }

}  // namespace orch::testing
