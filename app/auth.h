// app/auth.h: who may read /queue and call /admin/...: ORCH_ADMIN_TOKEN as `Authorization: Bearer TOKEN`, or as the
// password of HTTP basic auth (any user name), compared in constant time. Without a configured token the protected
// routes refuse everyone (503): an operator who forgot the token gets a clear answer, never an open admin API.
// Stateless and thread-safe: the guarded handlers run on any server thread.
#pragma once

#include <httplib.h>

#include <string_view>

#include "engine/secret.h"

namespace orch {

enum class AuthDecision { kAllowed, kMissing, kWrong, kNotConfigured };

// Equal lengths or not, the time taken does not depend on where the two strings differ (both are hashed first).
bool constant_time_equal(std::string_view a, std::string_view b);

// The credential a request presents: the bearer token, or the basic-auth password; "" when there is none.
std::string presented_token(const httplib::Request& req);

AuthDecision authorize(const httplib::Request& req, const Secret& token);

// Wraps a handler: 401 (with `WWW-Authenticate: Basic realm="orch"`, so a browser asks) for a missing or wrong
// credential, 503 when no token is configured; otherwise runs `handler`.
httplib::Server::Handler require_token(const Secret& token, httplib::Server::Handler handler);

// The same for /metrics: open when `token` is empty, bearer/basic like the admin routes otherwise.
httplib::Server::Handler require_token_if_set(const Secret& token, httplib::Server::Handler handler);

}  // namespace orch
