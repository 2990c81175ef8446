#!/usr/bin/env bash
# Fails when the forward pass touches tensor memory itself instead of calling an op: in the given
# files (default: everything in model/ but the checkpoint file formats, which read and write bytes
# by definition), any .data<T>(), raw_data(), or memcpy/memset/memmove. The forward must run
# unchanged on any device, and only ops know where their tensors live.
set -euo pipefail
cd "$(dirname "$0")/../.."

files=("$@")
if ((${#files[@]} == 0)); then
  for f in model/*.h model/*.cc; do
    case "$f" in
      model/checkpoint.*|model/safetensors_writer.*|model/random_checkpoint.*) ;;
      *) files+=("$f") ;;
    esac
  done
fi

if grep -nE '\.data<|->data<|raw_data\(|\bmem(cpy|set|move)\(' "${files[@]}"; then
  echo "forward_uses_only_ops: the lines above touch tensor memory; call an op (ops/) instead" >&2
  exit 1
fi
echo "forward_uses_only_ops: ${#files[@]} files call only ops"
