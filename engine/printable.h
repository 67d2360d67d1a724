// engine/printable.h: text for a terminal. Titles, comments, block reasons and agent errors come from Plane users and
// agents: a terminal must not receive their control characters (escape sequences), so human-readable output (the
// CLI's, orch-sandbox's) shows each as '?'. JSON output needs none of this: the encoder escapes them.
#pragma once

#include <string>
#include <string_view>

namespace orch {

inline std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) out += (c < 0x20 && c != '\t') || c == 0x7f ? '?' : static_cast<char>(c);
  return out;
}

}  // namespace orch
