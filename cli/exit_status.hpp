#pragma once

// The exit statuses of hastd and hastctl: FreeBSD's, from <sysexits.h>
// (the table is in hastd(8) and hastctl(8), EXIT STATUS). A request to hastd
// that names resources exits instead with the first resource's error number,
// as FreeBSD's hastctl does (messages/actors.hpp: 1 is no such resource).

#include <sysexits.h>

#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace hast::cli {

/// The exit status for a configuration that failed to load from `path`:
/// EX_OSFILE when the file cannot be read at all (FreeBSD: "Unable to open
/// configuration file"), EX_CONFIG when it was read and is wrong.
inline int config_failure_status(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return EX_OSFILE;
  struct stat st {};
  bool directory = ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
  ::close(fd);
  return directory ? EX_OSFILE : EX_CONFIG;
}

} // namespace hast::cli
