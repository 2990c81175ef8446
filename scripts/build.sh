#!/usr/bin/env bash
# Configures and builds gemmaserve into build/ (Release; CUDA kernels and the NCCL communicator
# when the toolkit and NCCL are found, see CMakeLists.txt). Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$(nproc)"
