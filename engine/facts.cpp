#include "engine/facts.h"

namespace orch {

const char* ci_state_name(CiState s) {
  switch (s) {
    case CiState::kPending: return "pending";
    case CiState::kSuccess: return "success";
    case CiState::kFailure: return "failure";
  }
  return "unknown";
}

const char* tracker_state_name(TrackerState s) {
  switch (s) {
    case TrackerState::kOther: return "other";
    case TrackerState::kInProgress: return "in_progress";
    case TrackerState::kApproved: return "approved";
    case TrackerState::kRejected: return "rejected";
  }
  return "unknown";
}

}  // namespace orch
