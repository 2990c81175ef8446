#!/usr/bin/env bash
# Builds the GPU-only configuration (-DGEMMASERVE_GPU_ONLY=ON) into build-gpu/ and stages
# build-gpu-stage/, which travels with the repository to a GPU machine that has the CUDA toolkit
# but none of our Debian packages; scripts/gpu_check.sh runs it there (CUDA.md §3, Plan A):
#
#   gpu_test   the GPU tests of tests/kernels, stripped (absl, GoogleTest, OpenBLAS, spdlog and fmt
#              linked in: cmake/static_dependencies.cmake)
#   lib/       every shared library it needs except the system's (glibc, libstdc++, libgcc_s), the
#              CUDA driver's, and those too large to carry (cuBLAS, cuBLASLt, NCCL), which
#              gpu_check.sh finds on the GPU machine
#   MANIFEST   the hash of the sources it was built from, what it needs from the GPU machine, and
#              the glibc and libstdc++ versions it needs
#
# Fails when the stage would exceed 50 MiB (the repository plus carried paths must stay under
# 64 MiB, and the tree is ~10 MB). Extra arguments go to cmake, e.g. -DCMAKE_CUDA_ARCHITECTURES=90.
#
#   scripts/stage_gpu.sh                  build and stage
#   scripts/stage_gpu.sh --source-hash    print the hash of the sources (what MANIFEST records)
set -euo pipefail
cd "$(dirname "$0")/.."

readonly build_dir=build-gpu
readonly stage_dir=build-gpu-stage
readonly max_stage_bytes=$((50 * 1024 * 1024))
# A needed library larger than this is not carried (cuBLAS is 52 MB, cuBLASLt 517 MB, NCCL 208 MB).
readonly max_carried_library_bytes=$((8 * 1024 * 1024))
# Everything the GPU-only build reads from the repository; checked against the build's own
# dependency records after each build.
readonly source_paths=(CMakeLists.txt cmake common ops kernels parallel model
                       tests/CMakeLists.txt tests/kernels tests/model)
# Libraries every GPU machine has: glibc's, the GCC runtime that apt itself needs, the driver's.
readonly system_library_pattern='^(linux-vdso|ld-linux[^ ]*|libc|libm|libdl|libpthread|librt|libutil|libresolv|libstdc\+\+|libgcc_s|libcuda)\.so'

# The sha256 of every file under source_paths (path and content), in a fixed order. Needs no git:
# the GPU machine gets the files without the repository.
source_hash() {
  find "${source_paths[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum |
    sha256sum | cut -d' ' -f1
}

# Fails if the build read a repository file that source_hash does not cover.
check_sources_covered() {
  local root path prefix covered
  root="$(pwd -P)"
  while read -r path; do
    covered=0
    for prefix in "${source_paths[@]}"; do
      [[ "$path" == "$prefix" || "$path" == "$prefix"/* ]] && covered=1 && break
    done
    if ((!covered)); then
      echo "stage_gpu: the build read $path, which the MANIFEST's hash does not cover;" \
           "add it to source_paths in scripts/stage_gpu.sh" >&2
      return 1
    fi
  done < <(
    cd "$build_dir" &&
    { ninja -t deps | awk '/^    /{print $1}'; ninja -t query build.ninja | awk '$1 == "|"{print $2}'; } |
      sort -u | xargs -d '\n' realpath -m | grep "^$root/" | grep -v "^$root/$build_dir/" |
      sed "s|^$root/||" | sort -u)
}

# The highest symbol version of PREFIX (GLIBC_, GLIBCXX_) that FILES need.
max_version_needed() {
  local prefix="$1"
  shift
  objdump -T "$@" | grep -o "(${prefix}[0-9.]*)" | tr -d '()' | sed "s/^${prefix}//" |
    sort -uV | tail -1
}

if [[ "${1:-}" == "--source-hash" ]]; then
  source_hash
  exit 0
fi

hash_before="$(source_hash)"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGEMMASERVE_GPU_ONLY=ON "$@" \
  >/dev/null
if ! ninja -C "$build_dir" -t query gpu_test >/dev/null 2>&1; then
  echo "stage_gpu: no gpu_test target (tests/kernels/CMakeLists.txt defines it with the GPU tests)" >&2
  exit 1
fi
cmake --build "$build_dir" --target gpu_test
check_sources_covered
if [[ "$(source_hash)" != "$hash_before" ]]; then
  echo "stage_gpu: sources changed during the build; run it again" >&2
  exit 1
fi

binary="$build_dir/tests/kernels/gpu_test"
rm -rf "$stage_dir"
mkdir -p "$stage_dir/lib"
strip -o "$stage_dir/gpu_test" "$binary"

carried=()
from_gpu_machine=()
while read -r name arrow path _; do
  [[ "$arrow" == "=>" ]] || continue
  [[ "$name" =~ $system_library_pattern ]] && continue
  if [[ "$path" == "not" ]]; then
    echo "stage_gpu: $binary needs $name, which is not found here" >&2
    exit 1
  fi
  if (($(stat -L -c %s "$path") > max_carried_library_bytes)); then
    from_gpu_machine+=("$name")
  else
    cp -L "$path" "$stage_dir/lib/$name"
    carried+=("$name")
  fi
done < <(ldd "$binary")

stage_bytes="$(du -sb "$stage_dir" | cut -f1)"
echo "stage_gpu: $stage_dir is $((stage_bytes / 1024)) KiB" \
     "(gpu_test $(($(stat -c %s "$stage_dir/gpu_test") / 1024)) KiB, carried: ${carried[*]:-nothing})"
if ((stage_bytes > max_stage_bytes)); then
  rm -rf "$stage_dir"
  echo "stage_gpu: the stage would exceed $((max_stage_bytes / 1024 / 1024)) MiB; nothing staged" >&2
  exit 1
fi

staged_files=("$stage_dir/gpu_test")
((${#carried[@]})) && staged_files+=("${carried[@]/#/$stage_dir/lib/}")
nvcc_version="$(sed -n 's/^set(CMAKE_CUDA_COMPILER_VERSION "\(.*\)")$/\1/p' \
  "$build_dir"/CMakeFiles/*/CMakeCUDACompiler.cmake)"
# Written last: gpu_check.sh takes a stage without a MANIFEST for no stage.
{
  echo "source_hash: $hash_before"
  echo "source_paths: ${source_paths[*]}"
  echo "git_commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)" \
       "($(git status --porcelain -- "${source_paths[@]}" 2>/dev/null | wc -l) files differ from it)"
  echo "built: $(date -u +%FT%TZ) on $(. /etc/os-release && echo "$PRETTY_NAME")," \
       "$(g++ --version | head -1), nvcc $nvcc_version"
  echo "cuda_code: $(grep -o -- '--generate-code=[^ ]*' "$build_dir/build.ninja" | sort -u |
                      sed 's/--generate-code=//' | tr '\n' ' ')"
  echo "carried: ${carried[*]}"
  echo "from_gpu_machine: ${from_gpu_machine[*]}"
  echo "needs_glibc: $(max_version_needed GLIBC_ "${staged_files[@]}")"
  echo "needs_glibcxx: $(max_version_needed GLIBCXX_ "${staged_files[@]}")"
  echo "gpu_test_sha256: $(sha256sum "$stage_dir/gpu_test" | cut -d' ' -f1)"
} >"$stage_dir/MANIFEST"
cat "$stage_dir/MANIFEST"
