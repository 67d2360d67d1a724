#include "webhooks/handlers/dispatcher.h"

#include <algorithm>

#include "webhooks/payloads.h"

namespace orch {

Result<HandleOutcome> Dispatcher::handle_delivery(const DeliveryRow& delivery) {
  return delivery.source == Source::kPlane ? plane(delivery) : gitea(delivery);
}

void Dispatcher::add_plane_echo_actor(const std::string& user_id) {
  if (user_id.empty()) return;
  std::lock_guard lock(mu_);
  if (std::find(echo_actor_ids_.begin(), echo_actor_ids_.end(), user_id) == echo_actor_ids_.end())
    echo_actor_ids_.push_back(user_id);
}

bool Dispatcher::is_echo(const std::string& actor_id) const {
  if (actor_id.empty()) return false;
  std::lock_guard lock(mu_);
  return std::find(echo_actor_ids_.begin(), echo_actor_ids_.end(), actor_id) != echo_actor_ids_.end();
}

Result<HandleOutcome> Dispatcher::plane(const DeliveryRow& d) {
  if (d.event != "issue") return HandleOutcome::ignored("plane event '" + d.event + "' is not handled");
  auto parsed = parse_plane_issue(d.body);
  if (!parsed.ok()) return parsed.status();
  const PlaneIssueEvent& e = parsed.value();
  if (e.action == PlaneAction::kDeleted || e.action == PlaneAction::kOther)
    return HandleOutcome::ignored("plane issue action '" + e.action_text + "' is not handled");
  const ProjectSpec* project = config_.find_project_by_plane_id(e.item.project_id);
  if (!project) return HandleOutcome::ignored("unknown plane project " + e.item.project_id);
  if (is_echo(e.actor_id)) return HandleOutcome::ignored("our own write (orch's Plane change coming back)");
  if (!e.may_change_state()) return HandleOutcome::ignored("plane field '" + e.field + "' changed, not the state");
  return handlers_.handle_tracker_state(*project, e.item, Cause::kWebhook);
}

Result<HandleOutcome> Dispatcher::gitea(const DeliveryRow& d) {
  const GiteaEvent kind = classify_gitea_event(d.event);
  auto project_of = [&](const std::string& repo) { return config_.find_project_by_repo(repo); };
  auto unknown = [](const std::string& repo) { return HandleOutcome::ignored("unknown gitea repository " + repo); };
  switch (kind) {
    case GiteaEvent::kPush: {
      auto p = parse_gitea_push(d.body);
      if (!p.ok()) return p.status();
      const ProjectSpec* project = project_of(p.value().repo);
      if (!project) return unknown(p.value().repo);
      return handlers_.handle_push(*project, p.value().branch, p.value().after, Cause::kWebhook);
    }
    case GiteaEvent::kPullRequest:
    case GiteaEvent::kReviewApproved:
    case GiteaEvent::kReviewRejected: {
      auto p = parse_gitea_pull_request(d.body);
      if (!p.ok()) return p.status();
      const ProjectSpec* project = project_of(p.value().repo);
      if (!project) return unknown(p.value().repo);
      if (kind == GiteaEvent::kPullRequest)
        return handlers_.handle_pull_request(*project, p.value().action, p.value().pr, Cause::kWebhook);
      return handlers_.handle_review(*project, p.value().pr, kind == GiteaEvent::kReviewApproved, Cause::kWebhook,
                                     p.value().sender);
    }
    case GiteaEvent::kStatus: {
      auto s = parse_gitea_status(d.body);
      if (!s.ok()) return s.status();
      const ProjectSpec* project = project_of(s.value().repo);
      if (!project) return unknown(s.value().repo);
      return handlers_.handle_ci_status(*project, s.value().sha, s.value().state, s.value().context, Cause::kWebhook,
                                        s.value().target_url);
    }
    case GiteaEvent::kOther: break;
  }
  return HandleOutcome::ignored("gitea event '" + d.event + "' is not handled");
}

}  // namespace orch
