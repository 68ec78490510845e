#include "base/errc.hpp"

namespace hast {

std::string_view describe(errc code) {
  switch (code) {
    case errc::none: return "success";
    case errc::io_error: return "input/output error on the provider";
    case errc::not_created: return "the provider has no hast metadata (run 'hastctl create')";
    case errc::bad_metadata: return "the provider's metadata is corrupt";
    case errc::wrong_resource: return "the provider belongs to another resource";
    case errc::invalid_argument: return "invalid argument";
    case errc::not_primary: return "the resource is not primary";
    case errc::busy: return "the resource is busy";
    case errc::no_such_resource: return "no such resource in the configuration";
    case errc::protocol_error: return "protocol error";
    case errc::disconnected: return "the peer is disconnected";
    case errc::timeout: return "timed out";
    case errc::shutting_down: return "the daemon is shutting down";
  }
  return "unknown error";
}

std::string status::message() const {
  if (!detail_.empty())
    return detail_;
  return std::string{describe(code_)};
}

} // namespace hast
