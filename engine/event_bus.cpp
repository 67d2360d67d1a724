#include "engine/event_bus.h"

#include <exception>

namespace orch {

void EventBus::publish(const TransitionFired& event) const {
  for (const Entry& s : subscribers_) {
    Status st;
    try {
      st = s.fn(event);
    } catch (const std::exception& e) {
      st = internal(e.what());
    }
    if (!st.ok())
      log_.warn("bus: subscriber {} failed for {} {} -> {}: {}", s.name, event.task.work_item_key, event.from, event.to,
                st.to_string());
  }
}

}  // namespace orch
