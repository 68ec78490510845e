#pragma once

// The one way hast includes Asio (standalone, ASIO_STANDALONE): the build
// uses -Werror, and Asio's headers are not ours to fix, so whatever warnings
// a compiler or sanitizer build finds in them are silenced here and only here.
// Include this from .cpp files; headers keep Asio out (pimpl) so that other
// translation units compile fast.

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
