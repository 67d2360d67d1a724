#include "app/admin_routes.h"

#include <charconv>
#include <cstdint>
#include <optional>

#include <nlohmann/json.hpp>

#include "app/admin_actions.h"
#include "app/auth.h"
#include "app/json_answer.h"
#include "engine/budget.h"

namespace orch {
namespace {

using nlohmann::json;

void answer_error(httplib::Response& res, const Status& s) { answer(res, http_status(s.code), {{"error", s.message}}); }

// A browser that holds the admin credentials (basic auth is cached per origin) would send them with a POST that
// another site's page makes: refuse what the browser itself marks as coming from elsewhere. curl and scripts send
// no Sec-Fetch-Site and are unaffected.
httplib::Server::Handler from_this_site(httplib::Server::Handler handler) {
  return [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    const std::string site = req.get_header_value("Sec-Fetch-Site");
    if (site == "cross-site" || site == "same-site")
      return answer(res, 403, {{"error", "cross-site admin requests are refused"}});
    handler(req, res);
  };
}

httplib::Server::Handler admin_post(const Secret& token, httplib::Server::Handler handler) {
  return require_token(token, from_this_site(std::move(handler)));
}

}  // namespace

void register_admin_routes(httplib::Server& server, const Secret& admin_token, AdminDeps deps) {
  auto flip = [deps](bool enable) {
    return [deps, enable](const httplib::Request& req, httplib::Response& res) {
      std::string side = req.get_param_value("side");
      if (!side.empty() && side != "plane") return answer(res, 400, {{"error", "side must be 'plane' or absent"}});
      bool plane_only = side == "plane";
      if (Status s = set_reconcile_switch(deps.store, enable, plane_only); !s.ok()) return answer_error(res, s);
      deps.log.info("admin: reconciler{} {}", plane_only ? " tracker side" : "", enable ? "enabled" : "disabled");
      deps.reconciler.poke();
      answer(res, 200, {{plane_only ? "plane_enabled" : "enabled", enable}});
    };
  };
  server.Post("/admin/reconcile/enable", admin_post(admin_token, flip(true)));
  server.Post("/admin/reconcile/disable", admin_post(admin_token, flip(false)));

  server.Post(R"(/admin/deliveries/([^/]+)/replay)",
              admin_post(admin_token, [deps](const httplib::Request& req, httplib::Response& res) {
                std::string id = req.matches[1];
                auto result = deps.inbox.replay(id);
                if (!result.ok()) return answer_error(res, result.status());
                deps.log.info("admin: delivery {} replayed: {}", id, delivery_status_name(result.value().status));
                answer(res, 200,
                       {{"delivery_id", id},
                        {"status", delivery_status_name(result.value().status)},
                        {"detail", result.value().detail}});
              }));

  server.Post(R"(/admin/jobs/(\d+)/cancel)",
              admin_post(admin_token, [deps](const httplib::Request& req, httplib::Response& res) {
                const auto parsed = path_id(req);
                if (!parsed) return answer(res, 400, {{"error", "bad job id"}});
                auto job = cancel_job(deps.store, deps.attempts, *parsed, "by a person (/admin)", deps.clock.now());
                if (!job.ok()) return answer_error(res, job.status());
                deps.log.info("admin: job {} cancel requested", *parsed);
                answer(res, 200, {{"job_id", *parsed}, {"status", job_status_name(job.value().status)}});
              }));

  server.Post(R"(/admin/tasks/(\d+)/retry)",
              admin_post(admin_token, [deps](const httplib::Request& req, httplib::Response& res) {
                const auto parsed = path_id(req);
                if (!parsed) return answer(res, 400, {{"error", "bad task id"}});
                const TaskId id = *parsed;
                auto job = retry_blocked_task(deps.store, deps.pipeline, id, deps.clock.now());
                if (!job.ok()) return answer_error(res, job.status());
                deps.pool.poke();
                deps.log.info("admin: task {} retried as job {} (attempt {})", id, job.value().id, job.value().attempt);
                answer(res, 200,
                       {{"task_id", id},
                        {"job_id", job.value().id},
                        {"attempt", job.value().attempt},
                        {"status", job_status_name(job.value().status)}});
              }));

  server.Post(R"(/admin/tasks/(\d+)/rerun)",
              admin_post(admin_token, [deps](const httplib::Request& req, httplib::Response& res) {
                const auto parsed = path_id(req);
                if (!parsed) return answer(res, 400, {{"error", "bad task id"}});
                const TaskId id = *parsed;
                std::optional<std::string> stage;
                if (req.has_param("stage")) stage = req.get_param_value("stage");
                auto task = rerun_stage(deps.engine, deps.store, deps.pipeline, id, stage);
                if (!task.ok()) return answer_error(res, task.status());
                deps.pool.poke();
                deps.log.info("admin: task {} re-runs {} (visit {})", task.value().work_item_key, task.value().stage,
                              task.value().visit);
                answer(res, 200, {{"task_id", id}, {"stage", task.value().stage}, {"visit", task.value().visit}});
              }));

  server.Post(R"(/admin/tasks/(\d+)/resume)",
              admin_post(admin_token, [deps](const httplib::Request& req, httplib::Response& res) {
                const auto parsed = path_id(req);
                if (!parsed) return answer(res, 400, {{"error", "bad task id"}});
                const TaskId id = *parsed;
                MicroUsd raise = 0;
                if (req.has_param("raise_budget")) {
                  const std::string text = req.get_param_value("raise_budget");
                  double usd = -1;
                  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), usd);
                  const std::optional<MicroUsd> micros =
                      ec == std::errc() && end == text.data() + text.size() ? usd_to_micros(usd) : std::nullopt;
                  if (!micros)
                    return answer(res, 400, {{"error", "raise_budget must be a number of US dollars, at least 0"}});
                  raise = *micros;
                }
                auto task = resume_held_task(deps.store, deps.config, id, raise, deps.clock.now());
                if (!task.ok()) return answer_error(res, task.status());
                deps.pool.poke();
                deps.log.info("admin: task {} resumed (budget raised by {} USD)", task.value().work_item_key,
                              format_usd(raise));
                answer(res, 200,
                       {{"task_id", id},
                        {"stage", task.value().stage},
                        {"spend_usd", micros_to_usd(task.value().spend)},
                        {"budget_raise_usd", micros_to_usd(task.value().budget_raise)}});
              }));

  server.Post(R"(/admin/outbox/(\d+)/retry)",
              admin_post(admin_token, [deps](const httplib::Request& req, httplib::Response& res) {
                const auto parsed = path_id(req);
                if (!parsed) return answer(res, 400, {{"error", "bad outbox message id"}});
                const NotificationId id = *parsed;
                if (Status s = retry_outbox_message(deps.store, id, deps.clock.now()); !s.ok())
                  return answer_error(res, s);
                deps.log.info("admin: outbox message {} retried", id);
                answer(res, 200, {{"retried", id}});
              }));
}

}  // namespace orch
