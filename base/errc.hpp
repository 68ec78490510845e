#pragma once

// The one error vocabulary of hast. Every layer returns these as values;
// nothing throws across an actor boundary. This header has no CAF in it so
// that io/ and config/ can use it; messages/types.hpp registers it with CAF.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace hast {

enum class errc : uint8_t {
  none = 0,
  io_error,          // a system call on the provider failed
  not_created,       // the provider carries no hast metadata
  bad_metadata,      // metadata present but corrupt or of another format
  wrong_resource,    // metadata belongs to another resource
  invalid_argument,  // a request or option out of range
  not_primary,       // the resource is not in the primary role
  busy,              // refused because the resource is in use
  no_such_resource,  // the name is not in the configuration
  protocol_error,    // a peer or client broke the protocol
  disconnected,      // the peer connection is gone
  timeout,           // an operation did not finish in time
  shutting_down,     // the daemon is stopping
};

/// A short sentence for an error code, used in logs and on hastctl's stderr.
std::string_view describe(errc code);

/// An error code with the detail a user needs to act on it: what, where, why.
class status {
public:
  status() = default;
  status(errc code, std::string detail) : code_(code), detail_(std::move(detail)) {}

  static status ok() { return {}; }

  bool is_ok() const { return code_ == errc::none; }
  explicit operator bool() const { return is_ok(); }
  errc code() const { return code_; }
  const std::string& detail() const { return detail_; }

  /// "<detail>" if present, else the sentence for the code.
  std::string message() const;

private:
  errc code_ = errc::none;
  std::string detail_;
};

/// A value or the status that explains why there is none.
template <class T>
class result {
public:
  result(T value) : data_(std::move(value)) {}
  result(status error) : data_(std::move(error)) {}

  bool has_value() const { return data_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& value() { return std::get<0>(data_); }
  const T& value() const { return std::get<0>(data_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const status& error() const { return std::get<1>(data_); }

private:
  std::variant<T, status> data_;
};

} // namespace hast
