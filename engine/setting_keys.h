// engine/setting_keys.h: keys of the settings table shared by the reconciler (writer), the CLI and /queue.json.
#pragma once

namespace orch {

// The reconciler's persisted kill switches ("1" / "0") and its last-pass snapshot (a JSON object).
inline constexpr const char* kSettingReconcileEnabled = "reconciler.enabled";
inline constexpr const char* kSettingReconcilePlaneEnabled = "reconciler.plane_enabled";
inline constexpr const char* kSettingReconcileSnapshot = "reconciler.snapshot";

}  // namespace orch
