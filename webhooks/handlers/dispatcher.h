// webhooks/handlers/dispatcher.h: routes one stored delivery to its handler. Plane `issue` events whose state may
// have changed go through Handlers::handle_tracker_state; Gitea events are dispatched on X-Gitea-Event-Type (as
// stored). Everything else, unknown projects and our own echoes are ignored with a reason. Parsing errors are
// kInvalid naming the field. Thread-safe if the Handlers are (they are); the echo filter may grow while it runs.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "engine/config.h"
#include "engine/model.h"
#include "webhooks/handlers/handlers.h"

namespace orch {

// The seam between the inbox processor and what a delivery means; tests substitute a scripted one.
struct DeliveryHandler {
  virtual ~DeliveryHandler() = default;
  virtual Result<HandleOutcome> handle_delivery(const DeliveryRow& delivery) = 0;
};

struct DispatcherOptions {
  // Plane user ids whose changes are orch's own writes coming back (the API key's user): ignored as echoes.
  std::vector<std::string> plane_echo_actor_ids;
};

class Dispatcher final : public DeliveryHandler {
 public:
  Dispatcher(Handlers& handlers, const Config& config, DispatcherOptions options = {})
      : handlers_(handlers), config_(config), echo_actor_ids_(std::move(options.plane_echo_actor_ids)) {}
  Result<HandleOutcome> handle_delivery(const DeliveryRow& delivery) override;
  // orch learns its Plane user from the API key (GET /api/v1/users/me/) before its first write: from then on the
  // webhooks that write causes are ignored as "our own write".
  void add_plane_echo_actor(const std::string& user_id);

 private:
  Result<HandleOutcome> plane(const DeliveryRow& delivery);
  Result<HandleOutcome> gitea(const DeliveryRow& delivery);

  bool is_echo(const std::string& actor_id) const;

  Handlers& handlers_;
  const Config& config_;
  mutable std::mutex mu_;
  std::vector<std::string> echo_actor_ids_;  // guarded by mu_
};

}  // namespace orch
