#!/usr/bin/env bash
# Installs what the build needs, builds gemmaserve and runs the main job on the embedded default:
# `gemmaserve serve` on the tiny Gemma-4-shaped MoE checkpoint in tests/data, its experts split
# over two worker processes. OpenAI-compatible HTTP on :8000, gRPC on :50051; Ctrl-C drains and
# stops. Extra arguments go to `gemmaserve serve` (e.g. --http-port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build.sh
exec build/tools/gemmaserve serve --model tests/data/gemma4-tiny-moe --ep 2 "$@"
