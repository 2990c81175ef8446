#include "kernels/rope.h"

#include "kernels/cuda_util.h"

namespace gemmaserve::kernels {
namespace {

// One block per token; threads over (head, angle) pairs.
__global__ void RopeKernel(float* x, const int32_t* positions, const float* inv_freq,
                           int64_t num_heads, int64_t head_dim, int64_t angles) {
  const float position = static_cast<float>(positions[blockIdx.x]);
  const int64_t half = head_dim / 2;
  float* token = x + blockIdx.x * num_heads * head_dim;
  for (int64_t i = threadIdx.x; i < num_heads * angles; i += blockDim.x) {
    const int64_t h = i / angles;
    const int64_t j = i % angles;
    float sin_value, cos_value;
    sincosf(__fmul_rn(position, inv_freq[j]), &sin_value, &cos_value);
    float* head = token + h * head_dim;
    const float a = head[j];
    const float b = head[j + half];
    head[j] = __fsub_rn(__fmul_rn(a, cos_value), __fmul_rn(b, sin_value));
    head[j + half] = __fadd_rn(__fmul_rn(b, cos_value), __fmul_rn(a, sin_value));
  }
}

}  // namespace

void ApplyRope(Tensor& x, const Tensor& positions, const Tensor& inv_freq) {
  internal::UseDeviceOf({&x, &positions, &inv_freq}, "ApplyRope");
  internal::CheckDType(x, DType::kF32, "ApplyRope x");
  internal::CheckDType(positions, DType::kI32, "ApplyRope positions");
  internal::CheckDType(inv_freq, DType::kF32, "ApplyRope inv_freq");
  CHECK(x.rank() == 3 && positions.numel() == x.dim(0) && 2 * inv_freq.numel() <= x.dim(2))
      << "ApplyRope: " << x.DebugString() << ", " << positions.DebugString() << ", "
      << inv_freq.DebugString();
  if (x.dim(0) == 0 || inv_freq.numel() == 0) return;
  RopeKernel<<<static_cast<unsigned>(x.dim(0)), 256, 0, internal::Stream()>>>(
      x.data<float>(), positions.data<int32_t>(), inv_freq.data<float>(), x.dim(1), x.dim(2),
      inv_freq.numel());
  GS_CUDA_CHECK_LAUNCH("ApplyRope");
}

}  // namespace gemmaserve::kernels
