#!/usr/bin/env bash
# Installs what the build needs, builds gemmaserve and runs the main job on the embedded default:
# greedy generation on the tiny Gemma-4-shaped MoE checkpoint in tests/data.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build.sh
build/tools/gemmaserve run --model tests/data/gemma4-tiny-moe --prompt-ids 2,17,40 \
  --max-tokens 16 --temperature 0 --json
