#!/usr/bin/env bash
# The soak test (tests/integration/soak_test.cc) for SECONDS (default 600): a real `gemmaserve
# serve` on the tiny MoE under 64 concurrent streams with random aborts, cancels and disconnects;
# fails on any unexpected error, coordinator RSS moving more than 10 % after warm-up, or a KV
# block still in use at the end. Prints one "soak: ..." summary line. ctest runs 60 s of it.
#
#   scripts/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."

binary=build/tests/integration/serve_integration_test
[[ -x "$binary" ]] || { echo "soak.sh: $binary not built (scripts/build.sh)" >&2; exit 1; }
GEMMASERVE_SOAK_SECONDS="${1:-600}" OMP_NUM_THREADS=1 exec "$binary" --gtest_filter='SoakTest.*'
