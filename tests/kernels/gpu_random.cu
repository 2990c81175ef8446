#include "tests/kernels/gpu_random.h"

#include <cuda_bf16.h>

#include "kernels/cuda_util.h"

namespace gemmaserve::testing {
namespace {

__device__ inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__device__ inline void Store(float value, float* p) { *p = value; }
__device__ inline void Store(float value, __nv_bfloat16* p) { *p = __float2bfloat16_rn(value); }

template <typename T>
__global__ void FillKernel(T* data, int64_t n, uint64_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t bits = SplitMix64(seed ^ static_cast<uint64_t>(i)) >> 40;  // 24 bits
    const float unit = static_cast<float>(bits) * (1.0f / 16777216.0f);
    Store(lo + (hi - lo) * unit, data + i);
  }
}

}  // namespace

void FillUniformOnGpu(Tensor& t, uint64_t seed, float lo, float hi) {
  kernels::internal::UseDeviceOf({&t}, "FillUniformOnGpu");
  if (t.numel() == 0) return;
  const unsigned blocks = 132 * 8;
  if (t.dtype() == DType::kBF16) {
    FillKernel<<<blocks, 256>>>(t.data<__nv_bfloat16>(), t.numel(), seed, lo, hi);
  } else {
    kernels::internal::CheckDType(t, DType::kF32, "FillUniformOnGpu");
    FillKernel<<<blocks, 256>>>(t.data<float>(), t.numel(), seed, lo, hi);
  }
  GS_CUDA_CHECK_LAUNCH("FillUniformOnGpu");
}

}  // namespace gemmaserve::testing
