#include "tests/fakes/signing.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace orch::testing {

namespace {

std::string hex(const unsigned char* p, unsigned int n) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (unsigned int i = 0; i < n; ++i) {
    out += kHex[p[i] >> 4];
    out += kHex[p[i] & 15];
  }
  return out;
}

std::string hmac_hex(const EVP_MD* md, std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(md, key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()), data.size(),
       out, &len);
  return hex(out, len);
}

}  // namespace

std::string hmac_sha256_hex(std::string_view key, std::string_view data) { return hmac_hex(EVP_sha256(), key, data); }

std::string hmac_sha1_hex(std::string_view key, std::string_view data) { return hmac_hex(EVP_sha1(), key, data); }

std::string sha256_hex(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr);
  return hex(out, len);
}

}  // namespace orch::testing
