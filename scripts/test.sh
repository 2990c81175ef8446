#!/usr/bin/env bash
# Installs what the build needs, builds gemmaserve and runs every test (ctest, all labels).
# When the build has CUDA, the compute libraries are also built without it (build-nocuda/), since
# ops/ reaches kernels/ only under GEMMASERVE_HAVE_CUDA: every file with such a branch is in them.
# Usage: scripts/test.sh [extra ctest arguments, e.g. -L unit]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/fetch_tokenizer.sh >/dev/null
scripts/build.sh
if grep -q '^GEMMASERVE_CUDA:BOOL=ON' build/CMakeCache.txt; then
  cmake -S . -B build-nocuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DGEMMASERVE_CUDA=OFF >/dev/null
  cmake --build build-nocuda -j "$(nproc)" --target gs_ops gs_kernels gs_model
fi
ctest --test-dir build --output-on-failure --timeout 900 -j "$(nproc)" "$@"
