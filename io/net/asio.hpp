#pragma once

// The one way hast includes Asio (standalone, ASIO_STANDALONE): the build
// uses -Werror, and Asio's headers are not ours to fix, so whatever warnings
// a compiler or sanitizer build finds in them are silenced here and only here.
// Include this from .cpp files; headers keep Asio out (pimpl) so that other
// translation units compile fast.

// Asio decides between std::aligned_alloc/free and operator new/delete for
// its handler memory from _GLIBCXX_HAVE_ALIGNED_ALLOC, which only a standard
// header defines. A translation unit that includes Asio before any standard
// header would choose differently from the others, and the linker would then
// pair one TU's allocation with another's deallocation (ASan:
// alloc-dealloc-mismatch). Including a standard header first makes every TU
// agree.
#include <cstddef>

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Weverything"
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wnull-dereference"
#endif

#include <asio.hpp>

#if defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <exception>
#include <string_view>
#include <system_error>

namespace hast {

/// A completion condition for asio::async_read and async_write that lets
/// each system call move as much as the buffers hold. Asio's own conditions
/// (transfer_all, the default, included) cap every call at 64 KiB: a 2 MiB
/// payload then costs 32 system calls and as many wakeups, which held the
/// peer link to a tenth of loopback's speed.
inline std::size_t whole_buffers(const std::error_code& ec, std::size_t) {
  return ec ? 0 : std::size_t{64} << 20;
}

/// io.run() until the context stops, for an I/O thread: an exception that
/// escapes a handler (the connections catch their own and close, see
/// io/net/peer_transport.cpp) is reported through `log` and the thread goes on
/// running the context: it costs that handler's work, never the daemon.
template <class Log>
void run_catching(asio::io_context& io, Log&& log) {
  for (;;) {
    try {
      io.run();
      return;
    } catch (const std::exception& e) {
      log(std::string_view(e.what()));
    } catch (...) {
      log(std::string_view("unknown exception"));
    }
  }
}

} // namespace hast
