// tests/fakes/signing.h: the HMACs webhook senders put in their signature headers, computed with OpenSSL.
// Thread-safe: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace orch::testing {

std::string hmac_sha256_hex(std::string_view key, std::string_view data);  // lowercase hex, 64 chars
std::string hmac_sha1_hex(std::string_view key, std::string_view data);    // lowercase hex, 40 chars
std::string sha256_hex(std::string_view data);

}  // namespace orch::testing
