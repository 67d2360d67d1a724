#include "app/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>
#include <cctype>
#include <optional>
#include <string>

namespace orch {
namespace {

std::array<unsigned char, SHA256_DIGEST_LENGTH> digest(std::string_view s) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> out{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), out.data());
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  std::string out;
  unsigned int buffer = 0;
  int bits = 0;
  for (char c : in) {
    int v = value(c);
    if (v < 0) return std::nullopt;
    buffer = (buffer << 6) | static_cast<unsigned int>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  return out;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

void refuse(httplib::Response& res, AuthDecision d) {
  if (d == AuthDecision::kNotConfigured) {
    res.status = 503;
    res.set_content(R"({"error":"admin access is disabled: ORCH_ADMIN_TOKEN is not set"})", "application/json");
    return;
  }
  res.status = 401;
  res.set_header("WWW-Authenticate", R"(Basic realm="orch")");
  res.set_content(
      d == AuthDecision::kMissing ? R"({"error":"authentication required"})" : R"({"error":"wrong credentials"})",
      "application/json");
}

}  // namespace

bool constant_time_equal(std::string_view a, std::string_view b) {
  auto da = digest(a);
  auto db = digest(b);
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

std::string presented_token(const httplib::Request& req) {
  std::string header = req.get_header_value("Authorization");
  std::string_view h = header;
  while (!h.empty() && h.front() == ' ') h.remove_prefix(1);
  if (starts_with_ci(h, "Bearer ")) {
    h.remove_prefix(7);
    while (!h.empty() && h.front() == ' ') h.remove_prefix(1);
    while (!h.empty() && h.back() == ' ') h.remove_suffix(1);
    return std::string(h);
  }
  if (starts_with_ci(h, "Basic ")) {
    h.remove_prefix(6);
    while (!h.empty() && h.front() == ' ') h.remove_prefix(1);
    while (!h.empty() && h.back() == ' ') h.remove_suffix(1);
    auto decoded = base64_decode(h);
    if (!decoded) return "";
    auto colon = decoded->find(':');
    return colon == std::string::npos ? "" : decoded->substr(colon + 1);
  }
  return "";
}

AuthDecision authorize(const httplib::Request& req, const Secret& token) {
  if (token.empty()) return AuthDecision::kNotConfigured;
  std::string presented = presented_token(req);
  if (presented.empty()) return AuthDecision::kMissing;
  return constant_time_equal(presented, token.reveal()) ? AuthDecision::kAllowed : AuthDecision::kWrong;
}

httplib::Server::Handler require_token(const Secret& token, httplib::Server::Handler handler) {
  return [token, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    AuthDecision d = authorize(req, token);
    if (d != AuthDecision::kAllowed) return refuse(res, d);
    handler(req, res);
  };
}

httplib::Server::Handler require_token_if_set(const Secret& token, httplib::Server::Handler handler) {
  if (token.empty()) return handler;
  return require_token(token, std::move(handler));
}

}  // namespace orch
