#include "ops/norm.h"

#include <cmath>

#include "ops/ops_util.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/elementwise.h"
#endif

namespace gemmaserve::ops {

void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (x.device().is_cuda()) return kernels::RmsNorm(x, weight, eps, y);
#endif
  CheckCpuF32(x, "RmsNorm x");
  CheckCpuF32(y, "RmsNorm y");
  CHECK_GE(x.rank(), 1);
  CHECK(x.shape() == y.shape()) << "RmsNorm: " << x.DebugString() << " -> " << y.DebugString();
  const int64_t dim = x.dim(-1);
  const int64_t rows = dim == 0 ? 0 : x.numel() / dim;
  const float* w = nullptr;
  if (weight.defined() && weight.numel() > 0) {
    CheckCpuF32(weight, "RmsNorm weight");
    CheckShape(weight, {dim}, "RmsNorm weight");
    w = weight.data<float>();
  }
  const float* in = x.data<float>();
  float* out = y.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = in + r * dim;
    float* dst = out + r * dim;
    float sum_squares = 0.0f;
    for (int64_t i = 0; i < dim; ++i) sum_squares += row[i] * row[i];
    // pow(·, −0.5) rather than 1/sqrt, as the reference does.
    const float inv_rms = std::pow(sum_squares / static_cast<float>(dim) + eps, -0.5f);
    if (w != nullptr) {
      for (int64_t i = 0; i < dim; ++i) dst[i] = row[i] * inv_rms * w[i];
    } else {
      for (int64_t i = 0; i < dim; ++i) dst[i] = row[i] * inv_rms;
    }
  }
}

}  // namespace gemmaserve::ops
