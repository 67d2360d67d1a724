// app/json_answer.h: how the JSON endpoints of app/ (admin, runner API) answer: a status code and a JSON body, and
// the Status code -> HTTP status mapping they share.
#pragma once

#include <httplib.h>

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/status.h"

namespace orch {

inline int http_status(Code c) {
  switch (c) {
    case Code::kOk: return 200;
    case Code::kInvalid: return 400;
    case Code::kNotFound: return 404;
    case Code::kConflict: return 409;
    case Code::kUnavailable: return 503;
    case Code::kInternal: return 500;
  }
  return 500;
}

// The path's numeric {id} (its first match); nullopt when it does not fit the id's type.
inline std::optional<std::int64_t> path_id(const httplib::Request& req) {
  const std::string raw = req.matches[1];
  std::int64_t id = 0;
  auto [p, ec] = std::from_chars(raw.data(), raw.data() + raw.size(), id);
  if (ec != std::errc() || p != raw.data() + raw.size()) return std::nullopt;
  return id;
}

inline void answer(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

}  // namespace orch
