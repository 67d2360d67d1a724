// engine/secret.h: a token or key read from the environment. It has no fmt::formatter and no operator<<,
// so log.info("{}", secret) does not compile; reveal() is called only where the value goes on the wire.
#pragma once

#include <string>
#include <utility>

namespace orch {

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  bool empty() const { return value_.empty(); }
  const std::string& reveal() const { return value_; }

 private:
  std::string value_;
};

}  // namespace orch
