#!/usr/bin/env bash
# Runs the worker pod's command exactly as the chart renders it, against a stand-in `gemmaserve`
# that records its arguments, and checks the wrapper's contract (templates/_helpers.tpl,
# gemmaserve.workerScript): pod index p starts ranks p × ranksPerPod + i on cuda:i with metrics on
# 9400 + i; SIGTERM reaches every rank; when one rank exits the others are stopped and the pod
# exits with that rank's status.
#
#   tests/helm/worker_wrapper_test.sh NODE_DIR RENDERED_MULTINODE_YAML
# NODE_DIR holds node_modules with the yaml package (scripts/test_helm.sh passes its cache).
set -euo pipefail

node_dir="$1"
rendered="$2"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The LeaderWorkerSet's container command and args, one per line, NUL-separated.
cat >"$node_dir/extract_worker_command.mjs" <<'JS'
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
const lws = parseAllDocuments(readFileSync(process.argv[2], "utf8"))
  .map((d) => d.toJS()).find((o) => o?.kind === "LeaderWorkerSet");
const c = lws.spec.leaderWorkerTemplate.workerTemplate.spec.containers[0];
process.stdout.write([...c.command, ...c.args].join("\0"));
JS
mapfile -d '' command < <(node "$node_dir/extract_worker_command.mjs" "$rendered")
# $(POD_IP) is expanded by the kubelet, not the shell.
command=("${command[@]//\$(POD_IP)/10.0.0.7}")

# Stand-in: records "rank device metrics-port" and waits; exits with $FAKE_EXIT_RANK_STATUS when
# its rank is $FAKE_EXIT_RANK.
mkdir -p "$work/bin" "$work/ranks"
cat >"$work/bin/gemmaserve" <<'SH'
#!/usr/bin/env bash
rank="" device="" port=""
while (($#)); do
  case "$1" in
    --rank) rank="$2"; shift ;;
    --device) device="$2"; shift ;;
    --metrics-port) port="$2"; shift ;;
  esac
  shift
done
trap 'echo terminated >>"$RANKS_DIR/$rank"; exit 0' TERM
echo "$device $port" >"$RANKS_DIR/$rank"
if [[ "$rank" == "${FAKE_EXIT_RANK:-}" ]]; then sleep 0.5; exit "$FAKE_EXIT_RANK_STATUS"; fi
sleep 30 & wait
SH
chmod +x "$work/bin/gemmaserve"

failures=0
fail() { echo "worker wrapper: $*" >&2; failures=$((failures + 1)); }

# wait_for_ranks N: until N rank files exist (5 s at most).
wait_for_ranks() {
  for _ in $(seq 50); do
    (($(ls "$work/ranks" | wc -l) >= $1)) && return 0
    sleep 0.1
  done
  return 1
}

# Case 1: pod 1 of an EP=8 group of 4-GPU pods; SIGTERM stops all four ranks.
PATH="$work/bin:$PATH" RANKS_DIR="$work/ranks" LWS_WORKER_INDEX=1 "${command[@]}" &
pids+=("$!")
wait_for_ranks 4 || fail "pod 1 did not start 4 ranks: $(ls "$work/ranks")"
for i in 0 1 2 3; do
  got="$(head -1 "$work/ranks/$((4 + i))" 2>/dev/null || true)"
  [[ "$got" == "cuda:$i $((9400 + i))" ]] || fail "rank $((4 + i)): got '$got', want 'cuda:$i $((9400 + i))'"
done
kill -TERM "${pids[0]}"
status=0
wait "${pids[0]}" || status=$?
for i in 4 5 6 7; do
  grep -q terminated "$work/ranks/$i" 2>/dev/null || fail "rank $i did not get SIGTERM"
done
echo "worker wrapper: SIGTERM: ranks 4-7 stopped, wrapper exited $status"

# Case 2: pod 0; rank 2 dies with status 3: the others are stopped, the pod exits 3.
rm -f "$work/ranks"/*
PATH="$work/bin:$PATH" RANKS_DIR="$work/ranks" LWS_WORKER_INDEX=0 FAKE_EXIT_RANK=2 \
  FAKE_EXIT_RANK_STATUS=3 "${command[@]}" &
pids+=("$!")
status=0
wait "${pids[1]}" || status=$?
((status == 3)) || fail "a rank exiting 3 made the wrapper exit $status, want 3"
for i in 0 1 3; do
  grep -q terminated "$work/ranks/$i" 2>/dev/null || fail "rank $i was not stopped after rank 2 exited"
done

((failures == 0)) && echo "worker wrapper: ok"
exit $((failures != 0))
