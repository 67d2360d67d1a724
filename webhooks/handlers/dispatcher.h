// webhooks/handlers/dispatcher.h: routes one stored delivery to its handler. Plane `issue` events whose state may
// have changed go through Handlers::handle_tracker_state; Gitea events are dispatched on X-Gitea-Event-Type (as
// stored). Everything else, unknown projects and our own echoes are ignored with a reason. Parsing errors are
// kInvalid naming the field. Thread-safe if the Handlers are (they are).
#pragma once

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
      : handlers_(handlers), config_(config), options_(std::move(options)) {}
  Result<HandleOutcome> handle_delivery(const DeliveryRow& delivery) override;

 private:
  Result<HandleOutcome> plane(const DeliveryRow& delivery);
  Result<HandleOutcome> gitea(const DeliveryRow& delivery);

  Handlers& handlers_;
  const Config& config_;
  const DispatcherOptions options_;
};

}  // namespace orch
