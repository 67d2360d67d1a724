#include "app/runner_dispatch.h"

#include <algorithm>
#include <utility>

namespace orch {

void RunnerDispatch::wake_one(std::list<Poll*>& polls) {
  auto it = std::find_if(polls.begin(), polls.end(), [](const Poll* p) { return !p->woken_; });
  if (it == polls.end()) return;  // every poll of the scope claims again anyway
  (*it)->woken_ = true;
  (*it)->cv_.notify_one();  // under mu_: the poll cannot end (and destroy its cv_) before this returns
}

void RunnerDispatch::jobs_enqueued() {
  {
    std::lock_guard lock(mu_);
    for (auto& [scope, polls] : scopes_) wake_one(polls);
  }
  next_.jobs_enqueued();
}

void RunnerDispatch::close() {
  std::lock_guard lock(mu_);
  closed_ = true;
  for (auto& [scope, polls] : scopes_)
    for (Poll* p : polls) p->cv_.notify_one();
}

RunnerDispatch::Poll::Poll(RunnerDispatch& dispatch, std::string scope)
    : dispatch_(dispatch), scope_(std::move(scope)) {
  std::lock_guard lock(dispatch_.mu_);
  dispatch_.scopes_[scope_].push_back(this);
}

RunnerDispatch::Poll::~Poll() {
  std::lock_guard lock(dispatch_.mu_);
  auto group = dispatch_.scopes_.find(scope_);
  group->second.remove(this);
  if (woken_ || took_job_) wake_one(group->second);
  if (group->second.empty()) dispatch_.scopes_.erase(group);
}

void RunnerDispatch::Poll::claiming() {
  std::lock_guard lock(dispatch_.mu_);
  woken_ = false;
}

bool RunnerDispatch::Poll::wait(std::chrono::steady_clock::time_point until) {
  std::unique_lock lock(dispatch_.mu_);
  cv_.wait_until(lock, until, [&] { return dispatch_.closed_ || woken_; });
  return !dispatch_.closed_;
}

}  // namespace orch
