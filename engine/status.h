// engine/status.h: errors as values at every module boundary.
// Each Code tells the caller what to do next; a library's exceptions stop in the one file that calls it.
// Thread-safe: plain values.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace orch {

enum class Code {
  kOk,
  kInvalid,      // bad input; retrying will not help       -> 400, or skip the unit
  kNotFound,     // it is not there                          -> 404, or "nothing to do"
  kConflict,     // someone else won (claim, stage moved)    -> re-read; do not retry blindly
  kUnavailable,  // transient: network, 5xx, SQLITE_BUSY     -> retry later, with backoff
  kInternal,     // broken invariant or bug                  -> log loudly, skip the unit
};

const char* code_name(Code code);

struct [[nodiscard]] Status {  // Status{} is OK
  Code code = Code::kOk;
  std::string message;
  bool ok() const { return code == Code::kOk; }
  std::string to_string() const;
};

inline Status invalid(std::string m) { return {Code::kInvalid, std::move(m)}; }
inline Status not_found(std::string m) { return {Code::kNotFound, std::move(m)}; }
inline Status conflict(std::string m) { return {Code::kConflict, std::move(m)}; }
inline Status unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
inline Status internal(std::string m) { return {Code::kInternal, std::move(m)}; }

template <class T>
class [[nodiscard]] Result {  // a T, or a non-OK Status saying why not
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Status error) : v_(std::move(error)) { assert(!std::get<Status>(v_).ok()); }
  bool ok() const { return v_.index() == 0; }
  const T& value() const& { return std::get<T>(v_); }  // throws if !ok(): a bug, not a flow
  T& value() & { return std::get<T>(v_); }
  T value() && { return std::get<T>(std::move(v_)); }  // by value: `for (x : f().value())` stays safe
  Status status() const { return ok() ? Status{} : std::get<Status>(v_); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace orch
