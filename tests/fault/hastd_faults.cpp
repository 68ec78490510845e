// hastd_faults: hastd whose providers fail what a rules file says
// (tests/fault/fault_env.hpp), for tests of a failing local disk.
//
//   hastd_faults --faults FILE [hastd's options]
//
// --faults FILE (or --faults=FILE) is taken out of the command line; the rest
// goes to hastd unchanged.

#include "cli/hastd_main.hpp"
#include "tests/fault/fault_env.hpp"

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::string rules;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--faults") == 0) {
      if (i + 1 == argc) {
        std::fprintf(stderr, "hastd_faults: --faults needs a file\n");
        return 2;
      }
      rules = argv[++i];
    } else if (std::strncmp(argv[i], "--faults=", 9) == 0) {
      rules = argv[i] + 9;
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (rules.empty()) {
    std::fprintf(stderr, "usage: hastd_faults --faults FILE [hastd options]\n");
    return 2;
  }
  auto env = std::make_shared<const hast::fault::fault_env>(rules);
  rest.push_back(nullptr);
  return hast::hastd_main(static_cast<int>(rest.size() - 1), rest.data(), env);
}
