#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang under ASan and UBSan into a separate tree
# and runs each for a bounded time on a scratch copy of its seed corpus (tests/fuzz/corpus/<t>/).
# Any finding (crash, sanitizer report, leak, a one-input timeout, running out of memory) fails
# the run; the input that caused it is kept under <build dir>/findings/<target>/ and printed.
#
#   scripts/fuzz.sh                       build, then run every target for 30 s
#   scripts/fuzz.sh --seconds 300 tokenizer_fuzz
#   scripts/fuzz.sh --build-only          (ctest: the fixture the per-target tests need)
#   scripts/fuzz.sh --no-build --seconds 30 config_fuzz
#
# Options: --build-dir DIR (default build-fuzz), --seconds N, --build-only, --no-build.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build-fuzz
seconds=30
build=1
run=1
targets=()
while (($#)); do
  case "$1" in
    --build-dir) build_dir="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --build-only) run=0; shift ;;
    --no-build) build=0; shift ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if ((${#targets[@]} == 0)); then
  targets=(safetensors_fuzz config_fuzz tokenizer_fuzz openai_request_fuzz chat_template_fuzz
           output_parser_fuzz)
fi

if ((build)); then
  CC=clang CXX=clang++ cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DGEMMASERVE_FUZZ=ON >/dev/null
  cmake --build "$build_dir" --target fuzzers -j "$(nproc)"
fi
((run)) || exit 0

failed=()
for target in "${targets[@]}"; do
  binary="$build_dir/tests/fuzz/$target"
  [[ -x "$binary" ]] || { echo "fuzz.sh: $binary not built" >&2; exit 1; }
  corpus="$(mktemp -d)"
  findings="$build_dir/findings/$target"
  mkdir -p "$findings"
  # New inputs go to the scratch corpus; the seeds in the repository are only read.
  status=0
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$findings/" "$corpus" "tests/fuzz/corpus/$target" \
    >"$corpus.log" 2>&1 || status=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$corpus.log")"
  if ((status)); then
    failed+=("$target")
    echo "FAIL $target (exit $status); findings in $findings:"
    ls "$findings"
    tail -n 60 "$corpus.log"
  else
    echo "PASS $target: ${runs:-?} inputs in ${seconds} s, no finding"
  fi
  rm -rf "$corpus" "$corpus.log"
done
if ((${#failed[@]})); then
  echo "fuzz.sh: findings in ${failed[*]}"
  exit 1
fi
