#!/usr/bin/env bash
# Installs what hast needs on Debian 12 (as root) and builds it into ./build.
# Every dependency is a Debian package; nothing is downloaded from elsewhere.
#
#   scripts/bootstrap.sh          the programs: installs what hastd, hastctl
#                                 and scripts/demo.sh need, builds hastd and
#                                 hastctl only (the README's first command)
#   scripts/bootstrap.sh --all    everything: also the test, fuzzing,
#                                 benchmark and packaging tools, and builds
#                                 the tests, fuzz targets and benchmarks too
#                                 (.ci/run, the README's second command)
set -euo pipefail
cd "$(dirname "$0")/.."

all=0
case "${1:-}" in
  "") ;;
  --all) all=1 ;;
  *) echo "usage: scripts/bootstrap.sh [--all]" >&2; exit 2 ;;
esac

# Building hastd and hastctl, and running them with /dev/hast/<name>
# (nbdfuse, FUSE, loop devices) as scripts/demo.sh does.
packages=(
  g++ make cmake pkg-config
  libcaf-dev libasio-dev libspdlog-dev libfmt-dev libtoml11-dev nlohmann-json3-dev
  liblz4-dev libssl-dev liburing-dev libxxhash-dev libsystemd-dev libcpp-httplib-dev
  libnbd-bin fuse3 mount e2fsprogs util-linux python3 procps
)
# The tests, the fuzzers, the benchmarks and the package's checks.
extras=()
if ((all)); then
  extras+=(
    libgtest-dev libbenchmark-dev
    nbdkit qemu-utils fio
    python3-matplotlib python3-yaml postgresql
    clang libfuzzer-14-dev
    prometheus mandoc lintian dpkg-dev curl systemd
  )
fi
# Installs those of "$@" that are missing.
install_missing() {
  local missing=() p
  for p in "$@"; do
    [[ $p == --* ]] && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  export DEBIAN_FRONTEND=noninteractive
  if ! ((updated)); then
    apt-get update -qq
    updated=1
  fi
  apt-get install -y -qq "$@"
}
updated=0
# The programs need no recommended package: on a minimal Debian 12 that
# leaves out 77 of 283 packages and about half of apt's time (README).
install_missing --no-install-recommends "${packages[@]}"
if ((all)); then
  install_missing "${extras[@]}"
fi

# The programs alone build as Release (-O3, no debug information: about a
# third less compile time than -O2 -g); everything builds RelWithDebInfo,
# so that a failing test's backtrace has lines. BUILD_TYPE overrides both.
build_type=${BUILD_TYPE:-$( ((all)) && echo RelWithDebInfo || echo Release)}
# HAST_WERROR=ON (warnings are errors) is for developers and CI; .ci/run sets it.
cmake -S . -B build -DCMAKE_BUILD_TYPE="$build_type" \
  -DHAST_WERROR="${HAST_WERROR:-OFF}" -DHAST_BUILD_TESTS="$( ((all)) && echo ON || echo OFF)"
if ((all)); then
  cmake --build build -j"$(nproc)"
else
  cmake --build build -j"$(nproc)" --target hastd hastctl
fi
