#!/usr/bin/env bash
# The GPU checks of the CUDA backend in one prepared run (CUDA.md §4), for a GPU machine reached
# for a few minutes: at most 520 s (run it with a 590 s limit). Phases, each under `timeout`:
#
#   0 probe       nvidia-smi; the nvcc, cmake and g++ versions; the OS (all to env.txt); finds the
#                 CUDA libraries the binaries need (in /usr/local/cuda, else python's
#                 nvidia/*/lib) and puts them on LD_LIBRARY_PATH
#   1 stage       build-gpu-stage/ (scripts/stage_gpu.sh) was built from these sources, its
#                 libraries resolve and gpu_test lists its tests; else Plan B: build gpu_test here
#                 (-DGEMMASERVE_GPU_ONLY=ON) if the dependencies are present; else FAIL
#   2 kernels     GpuOps*: every kernel against its CPU op, a graph of ops against the ops
#                                                                              -> kernels.xml
#   3 sanitizer   compute-sanitizer memcheck on GpuOpsSanitizer* (small shapes) -> sanitizer.log
#   4 golden      GpuGolden*, GpuVsCpuIntermediates*; decode graphs against the same steps
#                 run op by op, bitwise                                        -> golden.xml
#   5 serve       the stage's gemmaserve (serve.tar.xz, unpacked to a temporary folder) under
#                 scripts/serve_check.py --device cuda: golden logits and greedy tokens with one
#                 worker, TP=2 and EP=2 (two workers on the GPU); `serve` answering the README's
#                 curl and 64 concurrent greedy requests                       -> serve_check.txt
#   6 throughput  the same gemmaserve: `serve_check.py --throughput`, `gemmaserve bench` at
#                 concurrency 1, 32 and 128 on a 31B-shaped random checkpoint (2 of its 60 layers),
#                 then at 1 and 32 with --enforce-eager (no decode graphs)
#                                                                              -> throughput_check.txt
#   7 bench       the disabled *Bench* tests                                   -> bench.txt
#
# Everything goes under $OUT (./gpu_check_out when $OUT is unset): the log gpu_check.log, one
# PASS/FAIL/SKIP line per phase in summary.txt, and the files above. Stdout ends with the
# benchmarks' own lines and the summary table. Exit status 1 when a phase failed. --only 2,5
# runs those test phases alone (0 and 1 always run): a rerun of what failed.
#
# --dry-run (CI, any machine): checks that the stage is fresh or that the GPU-only build
# configures, lists the tests each phase would run, runs phases 5 and 6 on the CPU with
# $GEMMASERVE_BUILD_DIR's gemmaserve (6 on the tiny model), so that a broken check fails here,
# not on the GPU, reports every phase SKIP with the reason, and exits 0 (1 when neither a fresh
# stage nor a configurable GPU-only build exists, or the serve checks fail on the CPU). It lists
# the tests from the stage's gpu_test, else from $GEMMASERVE_BUILD_DIR (default build/) or
# build-gpu/.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

dry_run=0
only=""  # --only 2,5: the test phases to run (0 and 1 always run), for a rerun of what failed
while (($#)); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --only) only="${2:-}"; shift ;;
    *) echo "usage: scripts/gpu_check.sh [--dry-run] [--only PHASE,PHASE...]" >&2; exit 2 ;;
  esac
  shift
done
if [[ -n "$only" && ! "$only" =~ ^[2-7](,[2-7])*$ ]]; then
  echo "gpu_check: --only takes test phases 2-7, comma-separated, e.g. --only 2,5" >&2
  exit 2
fi

# selected PHASE: whether --only (when given) names it.
selected() { [[ -z "$only" || ",$only," == *",$1,"* ]]; }

repo="$(pwd -P)"
readonly repo
readonly stage=build-gpu-stage
out="${OUT:-gpu_check_out}"
mkdir -p "$out" && out="$(cd "$out" && pwd -P)"
readonly out log="$out/gpu_check.log" summary="$out/summary.txt"
: >"$log"
: >"$summary"

readonly total_budget_s=520  # of the 590 s the run is given; the rest is slack
readonly -a phase_names=(probe stage kernels sanitizer golden serve throughput bench)
readonly -a phase_budget_s=(10 5 90 60 45 90 125 95)
readonly plan_b_budget_s=240
readonly filter_kernels='GpuOps*:*/GpuOps*'
readonly filter_sanitizer='GpuOpsSanitizer*:*/GpuOpsSanitizer*'
readonly filter_golden='GpuGolden*:*/GpuGolden*:GpuVsCpuIntermediates*:*/GpuVsCpuIntermediates*'
readonly filter_bench='*Bench*'

declare -a phase_result phase_note phase_time_s
any_failed=0
gpu_found=0
serve_missing=""  # libraries phases 5 and 6 need that phase 0 did not find
binary=""  # the gpu_test that phases 2-4 and 7 run

log() { echo "$*" >>"$log"; }

# record PHASE RESULT NOTE STARTED_AT_S: one line in summary.txt and on stdout.
record() {
  local phase=$1 result=$2 note=$3 took=$((SECONDS - $4))
  phase_result[$phase]=$result
  phase_note[$phase]=$note
  phase_time_s[$phase]=$took
  [[ "$result" == FAIL ]] && any_failed=1
  printf '%d %-10s %-4s %4ss  %s\n' "$phase" "${phase_names[$phase]}" "$result" "$took" "$note" |
    tee -a "$summary" "$log"
}

# limit_s PHASE: the phase's budget, cut to what is left of the total.
limit_s() {
  local left=$((total_budget_s - SECONDS)) budget=${phase_budget_s[$1]}
  ((budget < left)) && echo "$budget" || echo "$left"
}

# run_limited SECONDS CMD...: CMD with its output in the log; its exit status, 124 on timeout.
run_limited() {
  local seconds=$1
  shift
  log "+ (limit ${seconds}s) $*"
  # In a subshell, so that a crash is reported in the log, not on stdout.
  (timeout --kill-after=10 "$seconds" "$@") >>"$log" 2>&1
}

# list_tests BINARY FILTER [FLAGS...]: Suite.Test per line, disabled tests only with
# --gtest_also_run_disabled_tests among FLAGS (gtest lists them either way).
list_tests() {
  local binary=$1 filter=$2
  shift 2
  timeout 30 "$binary" --gtest_list_tests --gtest_filter="$filter" "$@" 2>>"$log" |
    awk '/^[^ ].*\.$/ {suite = $1} /^  [^ ]/ && suite != "" {print suite $1}' |
    if [[ " $* " == *" --gtest_also_run_disabled_tests "* ]]; then cat; else grep -v 'DISABLED_'; fi
}

# xml_counts XML: "tests failed skipped first_problem" of a gtest XML report.
xml_counts() {
  python3 - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
tests = failed = skipped = 0
first_failure = first_skip = ""
for case in cases:
    if case.get("status") != "run":
        continue
    tests += 1
    name = case.get("classname") + "." + case.get("name")
    failure = case.find("failure")
    if failure is not None:
        failed += 1
        message = (failure.get("message") or "").strip().splitlines()
        first_failure = first_failure or name + ": " + (message[-1] if message else "")
    elif case.get("result") == "skipped":
        skipped += 1
        message = (case.find("skipped").get("message") or "").strip().splitlines()
        first_skip = first_skip or name + " skipped: " + (message[-1] if message else "")
print(tests, failed, skipped, (first_failure or first_skip)[:160])
PY
}

# gtest_result XML STATUS LIMIT: the phase's result and note from a gtest run.
gtest_result() {
  local xml=$1 status=$2 limit=$3 tests failed skipped first
  if ((status == 124 || status == 137)); then
    echo "FAIL timed out after ${limit}s"
  elif [[ ! -s "$xml" ]]; then
    echo "FAIL exit $status and no XML report (crashed? see gpu_check.log)"
  else
    read -r tests failed skipped first < <(xml_counts "$xml")
    if ((tests == 0)); then
      echo "SKIP no test matches the filter"
    elif ((failed > 0 || status != 0)); then
      echo "FAIL $failed of $tests failed (exit $status); $first"
    elif ((skipped == tests)); then
      echo "FAIL all $tests skipped; $first"
    else
      echo "PASS $((tests - skipped)) passed, $skipped skipped"
    fi
  fi
}

# --- 0: probe -------------------------------------------------------------------------------

# find_library SONAME: the first folder that has it: the CUDA toolkit, the loader's cache, then
# the pip wheels (nvidia/cublas/lib, ...) of python's site-packages.
find_library() {
  local soname=$1 dir site
  for dir in ${CUDA_HOME:+"$CUDA_HOME/lib64"} /usr/local/cuda/lib64 \
             /usr/local/cuda/targets/x86_64-linux/lib $(ls -d /usr/local/cuda-*/lib64 2>/dev/null | sort -rV); do
    [[ -e "$dir/$soname" ]] && echo "$dir" && return 0
  done
  dir="$(ldconfig -p 2>/dev/null | awk -v n="$soname" '$1 == n {print $NF; exit}')"
  [[ -n "$dir" ]] && dirname "$dir" && return 0
  for site in $(timeout 10 python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
    for dir in "$site"/nvidia/*/lib; do
      [[ -e "$dir/$soname" ]] && echo "$dir" && return 0
    done
  done
  return 1
}

probe() {
  local started=$SECONDS env="$out/env.txt" needed serve_needed soname dir missing="" found=""
  [[ -d /usr/local/cuda/bin ]] && PATH="$PATH:/usr/local/cuda/bin"
  {
    echo "== nvidia-smi"; timeout 10 nvidia-smi
    echo "== versions"
    timeout 5 nvcc --version | tail -2; timeout 5 cmake --version | head -1
    timeout 5 g++ --version | head -1; timeout 5 ninja --version; ldd --version | head -1
    timeout 5 python3 --version
    echo "== OS"; cat /etc/os-release
  } >"$env" 2>&1
  cat "$env" >>"$log"
  needed="$(sed -n 's/^from_gpu_machine: //p' "$stage/MANIFEST" 2>/dev/null)"
  [[ -n "$needed" ]] || needed="libcublas.so.13 libcublasLt.so.13"
  # What only the staged gemmaserve needs (NCCL): missing, it fails phases 5 and 6 alone.
  serve_needed="$(sed -n 's/^serve_from_gpu_machine: //p' "$stage/MANIFEST" 2>/dev/null)"
  [[ -n "$serve_needed" ]] || serve_needed="libcublas.so.13 libcublasLt.so.13 libnccl.so.2"
  for soname in $needed $serve_needed; do
    [[ " $found " == *" $soname:"* || " $missing $serve_missing " == *" $soname "* ]] && continue
    if dir="$(find_library "$soname")"; then
      found+=" $soname:$dir"
      [[ ":${LD_LIBRARY_PATH:-}:" == *":$dir:"* ]] || LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$dir"
    elif [[ " $needed " == *" $soname "* ]]; then
      missing+=" $soname"
    else
      serve_missing+=" $soname"
    fi
  done
  export LD_LIBRARY_PATH
  echo "== libraries:$found; missing:${missing:- none}; missing for phases 5-6:${serve_missing:- none}" |
    tee -a "$env" >>"$log"

  local gpu
  gpu="$(timeout 10 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  [[ -n "$gpu" ]] && gpu_found=1 && gpu+=" ($(grep -o 'CUDA Version: [0-9.]*' "$env" | head -1))"
  if ((dry_run)); then
    record 0 SKIP "dry run: ${gpu:-no GPU}; libraries:$found; missing:${missing:- none}${serve_missing:+; missing for phases 5-6:$serve_missing}" "$started"
  elif ((!gpu_found)); then
    record 0 FAIL "nvidia-smi sees no GPU (env.txt)" "$started"
  elif [[ -n "$missing" ]]; then
    record 0 FAIL "$gpu; not found:$missing" "$started"
  else
    record 0 PASS "$gpu;$found${serve_missing:+; missing for phases 5-6:$serve_missing}" "$started"
  fi
}

# --- 1: stage -------------------------------------------------------------------------------

# stage_problem: why the stage cannot be used here, or nothing.
stage_problem() {
  local want have unresolved
  [[ -f "$stage/MANIFEST" ]] || { echo "no stage ($stage/MANIFEST missing)"; return; }
  want="$(sed -n 's/^source_hash: //p' "$stage/MANIFEST")"
  have="$(bash scripts/stage_gpu.sh --source-hash)"
  if [[ "$want" != "$have" ]]; then
    echo "stale stage: built from sources ${want:0:12}, these are ${have:0:12}"
    return
  fi
  [[ -x "$stage/gpu_test" ]] || chmod +x "$stage/gpu_test"  # in case the carry lost the mode
  unresolved="$(LD_LIBRARY_PATH="$stage_library_path" ldd "$stage/gpu_test" 2>&1 |
                grep -E 'not found|No such' | head -2 | tr -s ' \t\n' ' ')"
  if [[ -n "$unresolved" ]]; then
    echo "stage's gpu_test does not load here (needs glibc $(sed -n 's/^needs_glibc: //p' "$stage/MANIFEST"), GLIBCXX $(sed -n 's/^needs_glibcxx: //p' "$stage/MANIFEST")): $unresolved"
    return
  fi
  if ! LD_LIBRARY_PATH="$stage_library_path" run_limited 20 "$stage/gpu_test" --gtest_list_tests; then
    echo "stage's gpu_test --gtest_list_tests failed (gpu_check.log)"
  fi
}

# configure_gpu_only BUILD_DIR: configures the GPU-only build; on failure prints CMake's error.
configure_gpu_only() {
  local build_dir=$1 limit=$2 status
  run_limited "$limit" cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGEMMASERVE_GPU_ONLY=ON
  status=$?
  if ((status != 0)); then
    grep -A2 'CMake Error' "$log" | tail -3 | tr -s ' \n' ' ' | cut -c1-200
    return 1
  fi
}

stage_phase() {
  local started=$SECONDS problem error limit note
  problem="$(stage_problem)"
  if [[ -z "$problem" ]]; then
    binary="$stage/gpu_test"
    export LD_LIBRARY_PATH="$stage_library_path"
    note="stage $(sed -n 's/^source_hash: //p' "$stage/MANIFEST" | cut -c1-12) is fresh and loads"
    if ((dry_run)); then record 1 SKIP "dry run: $note" "$started"; else record 1 PASS "$note" "$started"; fi
    return
  fi
  log "stage: $problem"
  if ((dry_run)); then
    # Whether Plan B could build it: configure only (a build takes minutes).
    if ! error="$(configure_gpu_only "$out/build-gpu-configure" 120)"; then
      record 1 FAIL "$problem; the GPU-only build does not configure: $error" "$started"
    elif ! ninja -C "$out/build-gpu-configure" -t query gpu_test >/dev/null 2>&1; then
      record 1 SKIP "dry run: $problem; the GPU-only build configures, but has no gpu_test target yet" "$started"
    else
      record 1 SKIP "dry run: $problem; the GPU-only build configures here (Plan B would build it)" "$started"
    fi
    return
  fi
  if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
    record 1 FAIL "$problem; Plan B impossible: no cmake or ninja" "$started"
    return
  fi
  if ! error="$(configure_gpu_only build-gpu 60)"; then
    record 1 FAIL "$problem; Plan B: the dependencies are missing here: $error" "$started"
    return
  fi
  limit=$((plan_b_budget_s - (SECONDS - started)))
  if ! run_limited "$limit" ninja -C build-gpu -j "$(nproc)" gpu_test; then
    record 1 FAIL "$problem; Plan B: building gpu_test failed or took over ${plan_b_budget_s}s" "$started"
    return
  fi
  binary=build-gpu/tests/kernels/gpu_test
  record 1 PASS "Plan B: built here ($problem)" "$started"
}

# The gpu_test to list tests from in a dry run: the stage's when it is usable, else a build's.
dry_run_binary() {
  local candidate
  [[ -n "$binary" ]] && echo "$binary" && return
  for candidate in "${GEMMASERVE_BUILD_DIR:-build}/tests/kernels/gpu_test" build-gpu/tests/kernels/gpu_test; do
    [[ -x "$candidate" ]] && echo "$candidate" && return
  done
}

# --- 2-4, 7: the tests ----------------------------------------------------------------------

# gtest_phase PHASE FILTER XML [FLAGS...]: runs the tests FILTER selects.
gtest_phase() {
  local phase=$1 filter=$2 xml=$3 started=$SECONDS limit status result note
  shift 3
  limit=$(limit_s "$phase")
  rm -f "$xml"
  run_limited "$limit" "$binary" --gtest_filter="$filter" --gtest_output="xml:$xml" "$@"
  status=$?
  read -r result note < <(gtest_result "$xml" "$status" "$limit")
  record "$phase" "$result" "$note" "$started"
}

sanitizer_phase() {
  local started=$SECONDS limit status sanitizer errors result note
  sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer \
               /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)"
  if [[ -z "$sanitizer" ]]; then
    record 3 FAIL "compute-sanitizer not found" "$started"
    return
  fi
  limit=$(limit_s 3)
  rm -f "$out/sanitizer.xml"
  run_limited "$limit" "$sanitizer" --tool memcheck --error-exitcode 86 \
    --log-file "$out/sanitizer.log" "$binary" --gtest_filter="$filter_sanitizer" \
    --gtest_output="xml:$out/sanitizer.xml"
  status=$?
  errors="$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) error.*/\1/p' "$out/sanitizer.log" 2>/dev/null | tail -1)"
  # 86 is memcheck's own verdict; the tests' is in the XML.
  read -r result note < <(gtest_result "$out/sanitizer.xml" "$((status == 86 ? 0 : status))" "$limit")
  if ((status == 86 || ${errors:-0} > 0)); then
    result=FAIL
    note="${errors:-some} errors (sanitizer.log); $note"
  fi
  record 3 "$result" "memcheck: $note" "$started"
}

bench_phase() {
  local started=$SECONDS limit status result note
  limit=$(limit_s 7)
  rm -f "$out/bench.xml"
  log "+ (limit ${limit}s) $binary --gtest_also_run_disabled_tests --gtest_filter=$filter_bench"
  (timeout --kill-after=10 "$limit" "$binary" --gtest_also_run_disabled_tests \
    --gtest_filter="$filter_bench" --gtest_output="xml:$out/bench.xml") >"$out/bench.txt" 2>&1
  status=$?
  cat "$out/bench.txt" >>"$log"
  read -r result note < <(gtest_result "$out/bench.xml" "$status" "$limit")
  record 7 "$result" "$note (bench.txt)" "$started"
}

# --- 5: serve, 6: throughput ------------------------------------------------------------------

# serve_problem: why the stage's serve.tar.xz cannot be used, or nothing.
serve_problem() {
  local want have
  [[ -f "$stage/MANIFEST" ]] || { echo "no stage ($stage/MANIFEST missing)"; return; }
  want="$(sed -n 's/^serve_source_hash: //p' "$stage/MANIFEST")"
  if [[ -z "$want" || ! -f "$stage/serve.tar.xz" ]]; then
    echo "the stage has no serve.tar.xz"
    return
  fi
  have="$(bash scripts/stage_gpu.sh --serve-source-hash)"
  [[ "$want" == "$have" ]] ||
    echo "stale serve.tar.xz: built from sources ${want:0:12}, these are ${have:0:12}"
}

serve_root=""            # where serve.tar.xz is unpacked (outside $out: 68 MB need not travel back)
serve_unusable="unset"   # why phases 5 and 6 cannot run gemmaserve, or empty
serve_stage_note=""      # in a dry run: whether serve.tar.xz is fresh
trap '[[ -n "$serve_root" ]] && rm -rf "$serve_root"' EXIT

# unpack_serve: unpacks the stage's gemmaserve once, for phases 5 and 6; sets serve_unusable.
unpack_serve() {
  [[ "$serve_unusable" != unset ]] && return
  local problem status unresolved
  if ! problem="$(serve_problem)" || [[ -n "$problem" ]]; then
    serve_unusable="$problem; run scripts/stage_gpu.sh"
    return
  fi
  serve_root="$(mktemp -d)"
  if command -v xz >/dev/null; then
    timeout 60 tar -C "$serve_root" -xJf "$stage/serve.tar.xz" 2>>"$log"
  else
    timeout 60 python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$stage/serve.tar.xz" "$serve_root" 2>>"$log"
  fi
  status=$?
  unresolved="$(LD_LIBRARY_PATH="$serve_root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
                ldd "$serve_root/bin/gemmaserve" 2>&1 | grep -E 'not found|No such' | head -2 |
                tr -s ' \t\n' ' ')"
  if ((status != 0)); then
    serve_unusable="unpacking serve.tar.xz failed (exit $status)"
  elif [[ -n "$unresolved" ]]; then
    serve_unusable="gemmaserve does not load here (needs glibc $(sed -n 's/^serve_needs_glibc: //p' "$stage/MANIFEST")${serve_missing:+; phase 0 found no$serve_missing}): $unresolved"
  else
    serve_unusable=""
  fi
}

# serve_check PHASE BINARY DEVICE REPORT [ARGS...]: scripts/serve_check.py -> REPORT (and the log);
# records the phase from its PASS/FAIL lines, SKIP instead of PASS in a dry run.
serve_check() {
  local phase=$1 binary=$2 device=$3 report=$4 started=$SECONDS limit status passed failed first
  shift 4
  limit=$(limit_s "$phase")
  log "+ (limit ${limit}s) scripts/serve_check.py --gemmaserve $binary --device $device $*"
  (timeout --kill-after=10 "$limit" python3 scripts/serve_check.py --gemmaserve "$binary" \
    --device "$device" --out "$out/${phase_names[$phase]}" --budget-s $((limit - 10)) "$@") \
    >"$report" 2>&1
  status=$?
  cat "$report" >>"$log"
  passed=$(grep -c '^PASS' "$report")
  failed=$(grep -c '^FAIL' "$report")
  first="$(grep -m1 '^FAIL' "$report" | cut -c1-160)"
  local where="${report##*/}"
  ((dry_run)) && where="on the CPU with $binary"
  if ((status == 124 || status == 137)); then
    record "$phase" FAIL "timed out after ${limit}s; $passed passed, $failed failed ($where)" "$started"
  elif ((failed > 0 || status != 0 || passed == 0)); then
    record "$phase" FAIL "$failed of $((passed + failed)) failed (exit $status, $where); $first" "$started"
  elif ((dry_run)); then
    record "$phase" SKIP "dry run; ${serve_stage_note}; its $passed checks pass $where" "$started"
  else
    record "$phase" PASS "$passed checks passed ($where)" "$started"
  fi
}

# Phase 5 or 6 with the stage's gemmaserve on the GPU; in a dry run, with this machine's build on
# the CPU (phase 6 on the tiny model: the plumbing, not the numbers).
serve_phase() {
  local phase=$1 started=$SECONDS binary library_path device=cuda
  local -a args=()
  if ((phase == 6)); then
    args=(--throughput)
    ((dry_run)) && args+=(--preset tiny-dense --layers 0)
  fi
  if ((dry_run)); then
    serve_stage_note="$(serve_problem)"
    serve_stage_note="${serve_stage_note:-serve.tar.xz is fresh}"
    binary="${GEMMASERVE_BUILD_DIR:-build}/tools/gemmaserve"
    if [[ ! -x "$binary" ]]; then
      record "$phase" SKIP "dry run; $serve_stage_note; no $binary to run the checks with" "$started"
      return
    fi
    serve_check "$phase" "$binary" cpu "$out/${phase_names[$phase]}_check.txt" "${args[@]}"
    return
  fi
  unpack_serve
  if [[ -n "$serve_unusable" ]]; then
    record "$phase" FAIL "$serve_unusable" "$started"
    return
  fi
  library_path="$serve_root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  LD_LIBRARY_PATH="$library_path" serve_check "$phase" "$serve_root/bin/gemmaserve" "$device" \
    "$out/${phase_names[$phase]}_check.txt" "${args[@]}"
}

# --- the run --------------------------------------------------------------------------------

echo "gpu_check: $( ((dry_run)) && echo 'dry run, ')logs in $out"
probe
# The stage's own libraries come first, for the stage's binary only (not a Plan B build's).
readonly stage_library_path="$repo/$stage/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
stage_phase

readonly -a test_phases=(2 3 4 5 6 7)
readonly -a test_filters=("$filter_kernels" "$filter_sanitizer" "$filter_golden" "" "" "$filter_bench")
if ((dry_run)); then
  list_binary="$(dry_run_binary)"
  for i in "${!test_phases[@]}"; do
    phase=${test_phases[$i]}
    started=$SECONDS
    if ! selected "$phase"; then
      record "$phase" SKIP "not in --only $only" "$started"
      continue
    fi
    if ((phase == 5 || phase == 6)); then
      serve_phase "$phase"
      continue
    fi
    if [[ -z "$list_binary" ]]; then
      record "$phase" SKIP "dry run; no gpu_test binary here to list tests from" "$started"
      continue
    fi
    flags=()
    ((phase == 7)) && flags=(--gtest_also_run_disabled_tests)
    tests="$(list_tests "$list_binary" "${test_filters[$i]}" "${flags[@]}")"
    {
      echo "phase $phase (${phase_names[$phase]}) would run $(grep -c . <<<"$tests") tests, ${test_filters[$i]}:"
      sed 's/^/  /' <<<"$tests"
    } | tee -a "$log"
    record "$phase" SKIP "dry run; $(grep -c . <<<"$tests") tests from $list_binary" "$started"
  done
else
  for i in "${!test_phases[@]}"; do
    phase=${test_phases[$i]}
    started=$SECONDS
    if ! selected "$phase"; then
      record "$phase" SKIP "not in --only $only" "$started"
    elif ((!gpu_found)); then
      record "$phase" SKIP "no GPU (phase 0)" "$started"
    elif [[ -z "$binary" ]] && ((phase != 5 && phase != 6)); then
      record "$phase" SKIP "no gpu_test (phase 1)" "$started"
    elif ((phase == 3 && total_budget_s - SECONDS < phase_budget_s[3] + phase_budget_s[4] +
           phase_budget_s[5] + phase_budget_s[6] + phase_budget_s[7])); then
      # The one phase to drop when a Plan B build took the time (CUDA.md §4).
      record "$phase" SKIP "too little time left for it and phases 4-7" "$started"
    elif (($(limit_s "$phase") < 10)); then
      record "$phase" SKIP "out of time" "$started"
    else
      case $phase in
        2) gtest_phase 2 "$filter_kernels" "$out/kernels.xml" ;;
        3) sanitizer_phase ;;
        4) gtest_phase 4 "$filter_golden" "$out/golden.xml" ;;
        5 | 6) serve_phase "$phase" ;;
        7) bench_phase ;;
      esac
    fi
  done
fi

# The end of stdout is what a remote run returns: the benchmarks' own lines, then the table.
if ((!dry_run)); then
  if [[ -s "$out/throughput_check.txt" ]]; then
    echo "--- throughput_check.txt (BENCH lines)"
    grep '^BENCH' "$out/throughput_check.txt"
  fi
  if [[ -s "$out/bench.txt" ]]; then
    echo "--- bench.txt (without gtest's lines)"
    grep -v -E '^(\[|Running main\(\) from|Note: Google Test filter)' "$out/bench.txt" | tail -40
  fi
fi
echo "--- gpu_check summary ($( ((dry_run)) && echo 'dry run; ')${SECONDS}s; logs in $out)"
for phase in "${!phase_names[@]}"; do
  printf '%d %-10s %-4s %4ss  %s\n' "$phase" "${phase_names[$phase]}" "${phase_result[$phase]:-SKIP}" \
    "${phase_time_s[$phase]:-0}" "${phase_note[$phase]:-}"
done
exit "$any_failed"
