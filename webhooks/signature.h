// webhooks/signature.h: HMAC-SHA256 webhook signatures (OpenSSL), always over the raw body bytes as received.
// Plane sends X-Plane-Signature (lowercase hex, no prefix); Gitea sends X-Gitea-Signature (the same form) and
// X-Hub-Signature-256 ("sha256=<hex>"). Comparison is constant-time (CRYPTO_memcmp). Thread-safe: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace orch {

// Lowercase hex of HMAC-SHA256(key, data).
std::string hmac_sha256_hex(std::string_view key, std::string_view data);
// Lowercase hex of SHA-256(data): the body digest the inbox deduplicates Plane retries on.
std::string sha256_hex(std::string_view data);

// True iff `received_hex` (either case) equals HMAC-SHA256(secret, body) in hex; compared in constant time.
// An empty signature or an empty secret never verifies.
bool verify_hex_signature(std::string_view secret, std::string_view body, std::string_view received_hex);

// Plane: the X-Plane-Signature value.
bool verify_plane_signature(std::string_view secret, std::string_view body, std::string_view x_plane_signature);
// Gitea: X-Gitea-Signature when present and non-empty, else X-Hub-Signature-256 after stripping "sha256=".
bool verify_gitea_signature(std::string_view secret, std::string_view body, std::string_view x_gitea_signature,
                            std::string_view x_hub_signature_256);

}  // namespace orch
