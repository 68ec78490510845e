// hastd: the daemon.
//
//   hastd [-c config] [-n node] [-F] [-d]... [-P pidfile] [--check-config]
//         [--io-engine uring|threads]

#include "cli/hastd_main.hpp"

int main(int argc, char** argv) {
  return hast::hastd_main(argc, argv, hast::default_io_env());
}
