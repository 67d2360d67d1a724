#include "webhooks/signature.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace orch {
namespace {

std::string to_hex(const unsigned char* bytes, unsigned int n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(static_cast<size_t>(n) * 2, '0');
  for (unsigned int i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0x0f];
  }
  return out;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  // An empty key is legal HMAC; OpenSSL wants a non-null pointer for it.
  static const unsigned char kEmpty = 0;
  const void* k = key.empty() ? static_cast<const void*>(&kEmpty) : static_cast<const void*>(key.data());
  const unsigned char* d = data.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(data.data());
  if (!HMAC(EVP_sha256(), k, static_cast<int>(key.size()), d, data.size(), mac, &len)) return {};
  return to_hex(mac, len);
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr)) return {};
  return to_hex(md, len);
}

bool verify_hex_signature(std::string_view secret, std::string_view body, std::string_view received_hex) {
  if (secret.empty() || received_hex.empty()) return false;
  const std::string expected = hmac_sha256_hex(secret, body);
  // The length of a SHA-256 hex digest is public; only the content must not leak through timing.
  if (expected.empty() || received_hex.size() != expected.size()) return false;
  std::string received(received_hex);
  for (char& c : received) c = lower(c);
  return CRYPTO_memcmp(received.data(), expected.data(), expected.size()) == 0;
}

bool verify_plane_signature(std::string_view secret, std::string_view body, std::string_view x_plane_signature) {
  return verify_hex_signature(secret, body, x_plane_signature);
}

bool verify_gitea_signature(std::string_view secret, std::string_view body, std::string_view x_gitea_signature,
                            std::string_view x_hub_signature_256) {
  if (!x_gitea_signature.empty()) return verify_hex_signature(secret, body, x_gitea_signature);
  constexpr std::string_view kPrefix = "sha256=";
  if (x_hub_signature_256.substr(0, kPrefix.size()) != kPrefix) return false;
  return verify_hex_signature(secret, body, x_hub_signature_256.substr(kPrefix.size()));
}

}  // namespace orch
