#!/usr/bin/env bash
# Builds the GPU-only configuration (-DGEMMASERVE_GPU_ONLY=ON) into build-gpu/ and the full one
# (gemmaserve itself, with CUDA) into build-gpu-serve/, and stages build-gpu-stage/, which travels
# with the repository to a GPU machine that has the CUDA toolkit but none of our Debian packages;
# scripts/gpu_check.sh runs it there (CUDA.md §3, Plan A):
#
#   gpu_test       the GPU tests of tests/kernels, stripped (absl, GoogleTest, OpenBLAS, spdlog and
#                  fmt linked in: cmake/static_dependencies.cmake)
#   lib/           every shared library gpu_test needs except the system's (glibc, libstdc++,
#                  libgcc_s), the CUDA driver's, and those too large to carry (cuBLAS, cuBLASLt,
#                  NCCL), which gpu_check.sh finds on the GPU machine
#   serve.tar.xz   bin/gemmaserve, stripped, and lib/ with every shared library it needs but the
#                  system's and the CUDA toolkit's (gRPC, protobuf, abseil, Gloo, prometheus-cpp,
#                  OpenSSL, OpenBLAS, ...: 68 MB, 13 MB compressed), for gpu_check.sh's serve phase
#   MANIFEST       the hashes of the sources each was built from, what they need from the GPU
#                  machine, and the glibc and libstdc++ versions they need
#
# Fails when the stage would exceed 50 MiB (the repository plus carried paths must stay under
# 64 MiB, and the tree is ~10 MB). Extra arguments go to cmake, e.g. -DCMAKE_CUDA_ARCHITECTURES=90.
#
#   scripts/stage_gpu.sh                        build and stage
#   scripts/stage_gpu.sh --source-hash          print the hash of gpu_test's sources
#   scripts/stage_gpu.sh --serve-source-hash    print the hash of gemmaserve's sources
set -euo pipefail
cd "$(dirname "$0")/.."

readonly build_dir=build-gpu
readonly serve_build_dir=build-gpu-serve
readonly stage_dir=build-gpu-stage
readonly max_stage_bytes=$((50 * 1024 * 1024))
# The CUDA toolkit's large libraries, which the GPU machine has (cuBLAS is 52 MB, cuBLASLt 517 MB,
# NCCL 208 MB) and gpu_check.sh finds there; every other library is carried.
readonly gpu_machine_library_pattern='^(libcublas|libcublasLt|libnccl)\.so'
# Everything the GPU-only build reads from the repository; checked against the build's own
# dependency records after each build.
readonly source_paths=(CMakeLists.txt cmake common ops kernels parallel model
                       tests/CMakeLists.txt tests/kernels tests/model tests/ops/sampling_cases.h)
# What the full build reads: every library, the tools, and the tests' CMakeLists (it configures
# them all, though it builds gemmaserve alone).
readonly serve_source_paths=(CMakeLists.txt cmake common proto text ops kernels parallel model
                             worker coordinator tools tests)
# Libraries every GPU machine has: glibc's, the GCC runtime that apt itself needs, the driver's.
readonly system_library_pattern='^(linux-vdso|ld-linux[^ ]*|libc|libm|libdl|libpthread|librt|libutil|libresolv|libstdc\+\+|libgcc_s|libcuda)\.so'

# source_hash PATHS...: the sha256 of every file under PATHS (path and content), in a fixed order.
# Needs no git: the GPU machine gets the files without the repository.
source_hash() {
  find "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum |
    sha256sum | cut -d' ' -f1
}

# check_sources_covered BUILD_DIR PATHS...: fails if the build read a repository file outside
# PATHS (which its hash would then not cover).
check_sources_covered() {
  local build=$1 root path prefix covered
  shift
  root="$(pwd -P)"
  while read -r path; do
    covered=0
    for prefix in "$@"; do
      [[ "$path" == "$prefix" || "$path" == "$prefix"/* ]] && covered=1 && break
    done
    if ((!covered)); then
      echo "stage_gpu: the build in $build read $path, which the MANIFEST's hash does not" \
           "cover; add it to the source paths in scripts/stage_gpu.sh" >&2
      return 1
    fi
  done < <(
    cd "$build" &&
    { ninja -t deps | awk '/^    /{print $1}'; ninja -t query build.ninja | awk '$1 == "|"{print $2}'; } |
      sort -u | xargs -d '\n' realpath -m | grep "^$root/" | grep -v "^$root/$build/" |
      sed "s|^$root/||" | sort -u)
}

# carry_libraries BINARY DIR: copies into DIR every shared library BINARY needs but the system's
# and the CUDA toolkit's large ones; prints "carried NAME" or "from_gpu_machine NAME" for each.
carry_libraries() {
  local binary=$1 dir=$2 name arrow path
  while read -r name arrow path _; do
    [[ "$arrow" == "=>" ]] || continue
    [[ "$name" =~ $system_library_pattern ]] && continue
    if [[ "$path" == "not" ]]; then
      echo "stage_gpu: $binary needs $name, which is not found here" >&2
      return 1
    fi
    if [[ "$name" =~ $gpu_machine_library_pattern ]]; then
      echo "from_gpu_machine $name"
    else
      cp -L "$path" "$dir/$name"
      echo "carried $name"
    fi
  done < <(ldd "$binary")
}

# The highest symbol version of PREFIX (GLIBC_, GLIBCXX_) that FILES need.
max_version_needed() {
  local prefix="$1"
  shift
  objdump -T "$@" | grep -o "(${prefix}[0-9.]*)" | tr -d '()' | sed "s/^${prefix}//" |
    sort -uV | tail -1
}

case "${1:-}" in
  --source-hash) source_hash "${source_paths[@]}"; exit 0 ;;
  --serve-source-hash) source_hash "${serve_source_paths[@]}"; exit 0 ;;
esac

hash_before="$(source_hash "${source_paths[@]}")"
serve_hash_before="$(source_hash "${serve_source_paths[@]}")"
# build_target BUILD_DIR TARGET CMAKE_ARGS...: configures and builds TARGET.
build_target() {
  local build=$1 target=$2
  shift 2
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  if ! ninja -C "$build" -t query "$target" >/dev/null 2>&1; then
    echo "stage_gpu: no $target target in $build" >&2
    exit 1
  fi
  cmake --build "$build" --target "$target"
}

build_target "$build_dir" gpu_test -DGEMMASERVE_GPU_ONLY=ON "$@"
check_sources_covered "$build_dir" "${source_paths[@]}"
build_target "$serve_build_dir" gemmaserve -DGEMMASERVE_CUDA=ON "$@"
check_sources_covered "$serve_build_dir" "${serve_source_paths[@]}"
if [[ "$(source_hash "${source_paths[@]}")" != "$hash_before" ||
      "$(source_hash "${serve_source_paths[@]}")" != "$serve_hash_before" ]]; then
  echo "stage_gpu: sources changed during the build; run it again" >&2
  exit 1
fi

rm -rf "$stage_dir"
mkdir -p "$stage_dir/lib"
strip -o "$stage_dir/gpu_test" "$build_dir/tests/kernels/gpu_test"
libraries="$(carry_libraries "$stage_dir/gpu_test" "$stage_dir/lib")"
carried=($(awk '$1 == "carried" {print $2}' <<<"$libraries"))
from_gpu_machine=($(awk '$1 == "from_gpu_machine" {print $2}' <<<"$libraries"))

# gemmaserve and its libraries, packed: OpenBLAS alone is 36 MB, 8 MB compressed.
serve_root="$(mktemp -d)"
trap 'rm -rf "$serve_root"' EXIT
mkdir -p "$serve_root/bin" "$serve_root/lib"
strip -o "$serve_root/bin/gemmaserve" "$serve_build_dir/tools/gemmaserve"
libraries="$(carry_libraries "$serve_root/bin/gemmaserve" "$serve_root/lib")"
serve_carried=($(awk '$1 == "carried" {print $2}' <<<"$libraries"))
serve_from_gpu_machine=($(awk '$1 == "from_gpu_machine" {print $2}' <<<"$libraries"))
XZ_OPT="-6 -T0" tar -C "$serve_root" -cJf "$stage_dir/serve.tar.xz" bin lib
serve_unpacked_bytes="$(du -sb "$serve_root" | cut -f1)"

stage_bytes="$(du -sb "$stage_dir" | cut -f1)"
echo "stage_gpu: $stage_dir is $((stage_bytes / 1024)) KiB" \
     "(gpu_test $(($(stat -c %s "$stage_dir/gpu_test") / 1024)) KiB, carried: ${carried[*]:-nothing};" \
     "serve.tar.xz $(($(stat -c %s "$stage_dir/serve.tar.xz") / 1024)) KiB," \
     "$((serve_unpacked_bytes / 1024)) KiB unpacked)"
if ((stage_bytes > max_stage_bytes)); then
  rm -rf "$stage_dir"
  echo "stage_gpu: the stage would exceed $((max_stage_bytes / 1024 / 1024)) MiB; nothing staged" >&2
  exit 1
fi

staged_files=("$stage_dir/gpu_test")
((${#carried[@]})) && staged_files+=("${carried[@]/#/$stage_dir/lib/}")
serve_files=("$serve_root/bin/gemmaserve" "${serve_carried[@]/#/$serve_root/lib/}")
nvcc_version="$(sed -n 's/^set(CMAKE_CUDA_COMPILER_VERSION "\(.*\)")$/\1/p' \
  "$build_dir"/CMakeFiles/*/CMakeCUDACompiler.cmake)"
# Written last: gpu_check.sh takes a stage without a MANIFEST for no stage.
{
  echo "source_hash: $hash_before"
  echo "source_paths: ${source_paths[*]}"
  echo "git_commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)" \
       "($(git status --porcelain -- "${serve_source_paths[@]}" 2>/dev/null | wc -l) files differ from it)"
  echo "built: $(date -u +%FT%TZ) on $(. /etc/os-release && echo "$PRETTY_NAME")," \
       "$(g++ --version | head -1), nvcc $nvcc_version"
  echo "cuda_code: $(grep -o -- '--generate-code=[^ ]*' "$build_dir/build.ninja" | sort -u |
                      sed 's/--generate-code=//' | tr '\n' ' ')"
  echo "carried: ${carried[*]}"
  echo "from_gpu_machine: ${from_gpu_machine[*]}"
  echo "needs_glibc: $(max_version_needed GLIBC_ "${staged_files[@]}")"
  echo "needs_glibcxx: $(max_version_needed GLIBCXX_ "${staged_files[@]}")"
  echo "gpu_test_sha256: $(sha256sum "$stage_dir/gpu_test" | cut -d' ' -f1)"
  echo "serve_source_hash: $serve_hash_before"
  echo "serve_source_paths: ${serve_source_paths[*]}"
  echo "serve_cuda_code: $(grep -o -- '--generate-code=[^ ]*' "$serve_build_dir/build.ninja" |
                            sort -u | sed 's/--generate-code=//' | tr '\n' ' ')"
  echo "serve_carried: ${serve_carried[*]}"
  echo "serve_from_gpu_machine: ${serve_from_gpu_machine[*]}"
  echo "serve_needs_glibc: $(max_version_needed GLIBC_ "${serve_files[@]}")"
  echo "serve_needs_glibcxx: $(max_version_needed GLIBCXX_ "${serve_files[@]}")"
  echo "serve_sha256: $(sha256sum "$stage_dir/serve.tar.xz" | cut -d' ' -f1)"
} >"$stage_dir/MANIFEST"
cat "$stage_dir/MANIFEST"
