#include <doctest/doctest.h>

#include <string>

#include "tests/fakes/signing.h"
#include "webhooks/signature.h"

using namespace orch;

TEST_CASE("HMAC-SHA256 and SHA-256 match the reference test vector and an independent implementation") {
  // gitea.md §1.3: secret s3cr3t, body {"ref":"refs/heads/main"}.
  const std::string body = R"({"ref":"refs/heads/main"})";
  CHECK(hmac_sha256_hex("s3cr3t", body) == "8588fd50c04ac2c191575340c4c0fe284157898def8e4d10af822f05dd7c9bb5");
  CHECK(hmac_sha256_hex("another key", "x") == orch::testing::hmac_sha256_hex("another key", "x"));
  CHECK(hmac_sha256_hex("k", "") == orch::testing::hmac_sha256_hex("k", ""));
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex(body) == orch::testing::sha256_hex(body));
}

TEST_CASE("a Plane signature verifies over the exact bytes only") {
  const std::string secret = "plane_wh_0123456789abcdef0123456789abcdef";
  const std::string body = R"({"event": "issue", "action": "updated"})";
  const std::string sig = orch::testing::hmac_sha256_hex(secret, body);
  CHECK(verify_plane_signature(secret, body, sig));
  std::string upper = sig;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  CHECK(verify_plane_signature(secret, body, upper));  // hex case carries no meaning

  std::string altered = body;
  altered[10] ^= 1;  // one bit of one byte
  CHECK_FALSE(verify_plane_signature(secret, altered, sig));
  CHECK_FALSE(verify_plane_signature(secret + "x", body, sig));
  CHECK_FALSE(verify_plane_signature(secret, body, ""));
  CHECK_FALSE(verify_plane_signature(secret, body, sig.substr(0, 63)));
  CHECK_FALSE(verify_plane_signature(secret, body, "sha256=" + sig));                       // Plane sends no prefix
  CHECK_FALSE(verify_plane_signature("", body, orch::testing::hmac_sha256_hex("", body)));  // no secret, no trust
}

TEST_CASE("a Gitea signature is X-Gitea-Signature, else X-Hub-Signature-256 without its sha256= prefix") {
  const std::string body = "{\n  \"ref\": \"refs/heads/main\"\n}";
  const std::string sig = orch::testing::hmac_sha256_hex("s3cr3t", body);
  CHECK(verify_gitea_signature("s3cr3t", body, sig, ""));
  CHECK(verify_gitea_signature("s3cr3t", body, "", "sha256=" + sig));
  CHECK(verify_gitea_signature("s3cr3t", body, sig, "sha256=" + sig));
  CHECK_FALSE(verify_gitea_signature("s3cr3t", body, "", sig));        // the hub header needs its prefix
  CHECK_FALSE(verify_gitea_signature("s3cr3t", body, "", "sha256="));  // what Gitea sends without a secret
  CHECK_FALSE(verify_gitea_signature("s3cr3t", body, "", ""));
  // A present X-Gitea-Signature decides: a valid hub header does not rescue a wrong one.
  CHECK_FALSE(verify_gitea_signature("s3cr3t", body, std::string(64, '0'), "sha256=" + sig));
  CHECK_FALSE(verify_gitea_signature("s3cr3t", body + " ", sig, ""));
}
