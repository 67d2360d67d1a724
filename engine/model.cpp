#include "engine/model.h"

#include <array>
#include <utility>

namespace orch {
namespace {

template <class E, size_t N>
const char* name_of(const std::array<std::pair<E, const char*>, N>& table, E e) {
  for (const auto& [value, name] : table)
    if (value == e) return name;
  return "?";
}

template <class E, size_t N>
std::optional<E> parse_of(const std::array<std::pair<E, const char*>, N>& table, std::string_view s) {
  for (const auto& [value, name] : table)
    if (s == name) return value;
  return std::nullopt;
}

constexpr std::array<std::pair<Cause, const char*>, 4> kCauses{{{Cause::kWebhook, "webhook"},
                                                                {Cause::kAgent, "agent"},
                                                                {Cause::kReconciler, "reconciler"},
                                                                {Cause::kManual, "manual"}}};
constexpr std::array<std::pair<JobStatus, const char*>, 4> kJobStatuses{{{JobStatus::kQueued, "queued"},
                                                                         {JobStatus::kRunning, "running"},
                                                                         {JobStatus::kSucceeded, "succeeded"},
                                                                         {JobStatus::kFailed, "failed"}}};
constexpr std::array<std::pair<Source, const char*>, 2> kSources{
    {{Source::kPlane, "plane"}, {Source::kGitea, "gitea"}}};
constexpr std::array<std::pair<DeliveryStatus, const char*>, 4> kDeliveryStatuses{
    {{DeliveryStatus::kPending, "pending"},
     {DeliveryStatus::kHandled, "handled"},
     {DeliveryStatus::kIgnored, "ignored"},
     {DeliveryStatus::kFailed, "failed"}}};
constexpr std::array<std::pair<NotificationStatus, const char*>, 3> kNotificationStatuses{
    {{NotificationStatus::kPending, "pending"},
     {NotificationStatus::kSent, "sent"},
     {NotificationStatus::kFailed, "failed"}}};
constexpr std::array<std::pair<PrState, const char*>, 4> kPrStates{
    {{PrState::kNone, "none"}, {PrState::kOpen, "open"}, {PrState::kClosed, "closed"}, {PrState::kMerged, "merged"}}};
constexpr std::array<std::pair<ReviewState, const char*>, 3> kReviewStates{
    {{ReviewState::kNone, "none"},
     {ReviewState::kApproved, "approved"},
     {ReviewState::kChangesRequested, "changes_requested"}}};

}  // namespace

const char* cause_name(Cause c) { return name_of(kCauses, c); }
std::optional<Cause> parse_cause(std::string_view s) { return parse_of(kCauses, s); }
const char* job_status_name(JobStatus s) { return name_of(kJobStatuses, s); }
std::optional<JobStatus> parse_job_status(std::string_view s) { return parse_of(kJobStatuses, s); }
const char* source_name(Source s) { return name_of(kSources, s); }
std::optional<Source> parse_source(std::string_view s) { return parse_of(kSources, s); }
const char* delivery_status_name(DeliveryStatus s) { return name_of(kDeliveryStatuses, s); }
std::optional<DeliveryStatus> parse_delivery_status(std::string_view s) { return parse_of(kDeliveryStatuses, s); }
const char* notification_status_name(NotificationStatus s) { return name_of(kNotificationStatuses, s); }
std::optional<NotificationStatus> parse_notification_status(std::string_view s) {
  return parse_of(kNotificationStatuses, s);
}
const char* pr_state_name(PrState s) { return name_of(kPrStates, s); }
std::optional<PrState> parse_pr_state(std::string_view s) { return parse_of(kPrStates, s); }
const char* review_state_name(ReviewState s) { return name_of(kReviewStates, s); }
std::optional<ReviewState> parse_review_state(std::string_view s) { return parse_of(kReviewStates, s); }

std::string resolve_outbox_key(std::string_view key, std::int64_t transition_id) {
  std::string out(key);
  if (auto at = out.find(kTransitionPlaceholder); at != std::string::npos)
    out.replace(at, kTransitionPlaceholder.size(), std::to_string(transition_id));
  return out;
}

}  // namespace orch
