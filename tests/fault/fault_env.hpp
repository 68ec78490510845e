#pragma once

// A fault-injecting I/O environment (LevelDB's Env pattern): its providers
// fail the operations that a rules file names, as a failing disk would, and
// the file may change while the daemon runs. hastd_faults runs hastd with it.
//
// The rules file, one rule a line:
//
//   <read|write|flush|discard|write_zeroes|any> <provider path> [<offset> <length>] [errno]
//
// Offsets are the provider's (metadata included), decimal or 0x hex. Without
// a range the rule covers the whole provider; a flush has no range, so any
// rule of its kind fails every flush. `write` covers zeroing too (a zeroing
// writes zeros); `discard` covers discards only. errno is a name (EIO,
// ENOSPC, ...) or a number; EIO when left out. Blank lines and lines from
// '#' on are ignored. A malformed line is reported on stderr and ignored; an
// empty or missing file means no faults. The first rule that matches wins.
//
// The file is re-read when its identity (inode, size, mtime, ctime) changed,
// checked at most every `recheck` (50 ms): write a new file and rename it
// over the old one, so that no reader sees half a file.

#include "io/io_env.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace hast::fault {

struct rule {
  uint8_t kinds = 0;   // bit (1 << io_kind) for each kind the rule fails
  std::string path;    // as written; see rules::fault for the comparison
  bool whole = true;   // no range: the whole provider
  uint64_t offset = 0; // [offset, offset + length) when !whole
  uint64_t length = 0;
  int error = 0;
};

/// A parsed rules file.
struct rules {
  std::vector<rule> list;
  /// The errno of the first rule that fails `kind` on [offset, offset +
  /// length) of the provider at `path`, or 0. Paths compare as given: the
  /// environment canonicalizes both sides.
  int fault(const std::string& path, io_kind kind, uint64_t offset, uint64_t length) const;
};

/// Parses a rules file's text. Each malformed line adds "line N: why" to
/// *complaints and is left out.
rules parse_rules(std::string_view text, std::vector<std::string>* complaints);

/// The errno named `name` ("EIO", "ENOSPC", ...) or written as a positive
/// number; 0 when it is neither.
int parse_errno(std::string_view name);

class rules_file;

class fault_env final : public io_env {
public:
  static constexpr std::chrono::milliseconds default_recheck{50};

  /// Rules from `path` (made absolute now: the daemon may change directory).
  /// Complaints go to stderr, prefixed with the file's name.
  explicit fault_env(const std::string& path,
                     std::chrono::steady_clock::duration recheck = default_recheck);

  /// provider::open, with a fault source that asks the rules in force at the
  /// time of each operation about the provider's canonical path.
  result<provider> open_provider(const std::string& path, bool writable) const override;

  /// The rules in force, re-read first if the file changed.
  std::shared_ptr<const rules> current() const;

private:
  std::shared_ptr<rules_file> file_; // shared with every provider's source
};

} // namespace hast::fault
