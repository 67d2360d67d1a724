// integrations/utf8.h: making untrusted bytes (agent output, tracker text) valid UTF-8 before they go into JSON,
// HTML or a message.
#pragma once

#include <string>
#include <string_view>

namespace orch {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// `bytes` with every byte that does not start a well-formed UTF-8 sequence (overlong forms, surrogates and code
// points past U+10FFFF are not well-formed) replaced by U+FFFD.
std::string valid_utf8(std::string_view bytes);

}  // namespace orch
