// common/status.h — error values for the control path.
//
// Control-path functions return `Status` or `Result<T>` (shaped like C++23 std::expected);
// no exceptions cross module boundaries. A Status carries one sentence for the user: what
// failed, on what, and what to do. Hot paths use counts and enums instead.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace ferry {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // bad input from the user or a peer
  kProtocol,         // a stream or frame that breaks its grammar
  kIo,               // a system call failed
  kClosed,           // the peer went away
  kTimeout,
  kUnavailable,  // a backend or feature missing in this build or on this host
  kAuth,         // a peer that failed authentication, authorization or a frame's AEAD check
  kRefused,      // the peer refused what was asked (its reason in the message)
  kInternal,
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool is_ok() const { return code_ == ErrorCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status error(ErrorCode code, std::string message) { return {code, std::move(message)}; }

// Result<T>: a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit like std::expected
  Result(Status status) : v_(std::move(status)) { assert(!std::get<Status>(v_).is_ok()); }

  bool has_value() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return has_value(); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  // The error; only valid when !has_value().
  const Status& status() const { return std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace ferry

// Propagate a non-ok Status from an expression returning Status.
#define FERRY_RETURN_IF_ERROR(expr)           \
  do {                                        \
    ::ferry::Status ferry_st_ = (expr);       \
    if (!ferry_st_.is_ok()) return ferry_st_; \
  } while (0)
