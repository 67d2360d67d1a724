// integrations/write_back_sender.h: the senders of the outbox's Plane and Gitea channels (docs/adr/0013). Each
// reads one stored write (engine/write_back.h, write_kind) and makes it over the clients; an OutboxDrainer per
// channel claims the rows, retries and backs off. The texts are plain and attacker-influenced (agent output,
// titles, CI descriptions): they are escaped here, for the one destination they go to.
//
// Never twice: a Plane comment carries external_source "orch" + external_id = the row's dedup key, so a retry after
// a lost answer meets 409, which counts as delivered; a state move and a commit status are idempotent; a Gitea
// review carries a hidden marker with the key and is not posted again when a review with that marker exists.
// Thread-safe as their clients are; used by one drainer thread each.
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include <spdlog/logger.h>

#include "engine/config.h"
#include "engine/write_back.h"
#include "integrations/gitea_client.h"
#include "integrations/outbox_drainer.h"
#include "integrations/plane_client.h"
#include "integrations/worker_pool.h"

namespace orch {

// What a client's Status means for the outbox: kUnavailable (network, 5xx, 429) is tried again; anything else
// is permanent.
SendResult send_result_of(const Status& s);

class PlaneWriteSender final : public NotificationSender {
 public:
  // `learned_user` is told orch's Plane user id (from the API key) before the first write: the dispatcher's echo
  // filter, so that the webhooks orch's own writes cause are recognised.
  PlaneWriteSender(PlaneClient& plane, const Config& config, std::function<void(const std::string&)> learned_user,
                   spdlog::logger& log);
  SendResult send(const std::string& text) override;  // refused: a Plane write needs its row
  SendResult send_row(const NotificationRow& row) override;
  // GET /api/v1/users/me/ once; later calls return what was learned. kUnavailable while Plane cannot be asked.
  Result<std::string> learn_user();

 private:
  PlaneClient& plane_;
  const Config& config_;
  const std::function<void(const std::string&)> learned_user_;
  spdlog::logger& log_;
  std::mutex mu_;
  std::optional<std::string> user_id_;  // guarded by mu_
};

class GiteaWriteSender final : public NotificationSender {
 public:
  // `reviewer` posts the reviews: a client on a second Gitea user's token (ORCH_GITEA_REVIEW_TOKEN), since Gitea
  // refuses a verdict by the PR's author and orch opens the PRs; without one, pass `gitea` (verdicts become comments).
  GiteaWriteSender(GiteaClient& gitea, GiteaClient& reviewer, spdlog::logger& log)
      : gitea_(gitea), reviewer_(reviewer), log_(log) {}
  SendResult send(const std::string& text) override;  // refused: a Gitea write needs its row
  SendResult send_row(const NotificationRow& row) override;

 private:
  GiteaClient& gitea_;
  GiteaClient& reviewer_;
  spdlog::logger& log_;
};

// The JobReporter of the app: an agent's successful run is said where people work (WriteBackPlan::agent_succeeded).
class WriteBackReporter final : public JobReporter {
 public:
  explicit WriteBackReporter(WriteBack& write_back) : write_back_(write_back) {}
  Status agent_succeeded(const JobRow& job, const TaskRow& task, const AgentResult& result) override;

 private:
  WriteBack& write_back_;
};

// The hidden line that makes a posted review recognisable: "<!-- orch:KEY -->" (KEY is a dedup key, digits and
// punctuation of our own making).
std::string review_marker(const std::string& dedup_key);

}  // namespace orch
