#!/usr/bin/env bash
# Installs what hast needs on Debian 12 (as root) and builds it into ./build.
# Every dependency is a Debian package; nothing is downloaded from elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libcaf-dev libasio-dev libspdlog-dev libfmt-dev libtoml11-dev nlohmann-json3-dev
  libgtest-dev libbenchmark-dev liblz4-dev libssl-dev liburing-dev libxxhash-dev
  libnbd-bin nbdkit qemu-utils fio fuse3 e2fsprogs util-linux python3 procps
  python3-matplotlib python3-yaml postgresql
  clang libfuzzer-14-dev
  libsystemd-dev libcpp-httplib-dev prometheus mandoc lintian dpkg-dev curl systemd
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

# HAST_WERROR=ON (warnings are errors) is for developers and CI; .ci/run sets it.
cmake -S . -B build -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" -DHAST_WERROR="${HAST_WERROR:-OFF}"
cmake --build build -j"$(nproc)"
