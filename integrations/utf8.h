// integrations/utf8.h: making untrusted bytes (agent output, tracker text) valid UTF-8 before they go into JSON,
// HTML or a message.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace orch {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// `bytes` with every byte that does not start a well-formed UTF-8 sequence (overlong forms, surrogates and code
// points past U+10FFFF are not well-formed) replaced by U+FFFD.
std::string valid_utf8(std::string_view bytes);

// The first `n` bytes of valid UTF-8 `s`, cut back to a character boundary (all of `s` when it is shorter).
inline std::string_view utf8_prefix(std::string_view s, std::size_t n) {
  if (n >= s.size()) return s;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

}  // namespace orch
