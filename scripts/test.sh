#!/usr/bin/env bash
# Installs what the build needs, builds gemmaserve and runs every test (ctest, all labels).
# Usage: scripts/test.sh [extra ctest arguments, e.g. -L unit]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/fetch_tokenizer.sh >/dev/null
scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 900 -j "$(nproc)" "$@"
