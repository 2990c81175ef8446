#include "ops/norm.h"

#include <cmath>

#include "ops/ops_util.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/elementwise.h"
#endif

namespace gemmaserve::ops {
namespace {

// (mean(row²) + eps)^(−1/2), the squares summed in order; pow rather than 1/sqrt, as the
// reference does.
float InverseRms(const float* row, int64_t dim, float eps) {
  float sum_squares = 0.0f;
  for (int64_t i = 0; i < dim; ++i) sum_squares += row[i] * row[i];
  return std::pow(sum_squares / static_cast<float>(dim) + eps, -0.5f);
}

}  // namespace

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
    const float inv_rms = InverseRms(row, dim, eps);
    if (w != nullptr) {
      for (int64_t i = 0; i < dim; ++i) dst[i] = row[i] * inv_rms * w[i];
    } else {
      for (int64_t i = 0; i < dim; ++i) dst[i] = row[i] * inv_rms;
    }
  }
}

void AddRmsNorm(const Tensor& x, const Tensor& post_weight, float scale,
                const Tensor& next_weight, float eps, Tensor& residual, Tensor& next) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (x.device().is_cuda()) {
    return kernels::AddRmsNorm(x, post_weight, scale, next_weight, eps, residual, next);
  }
#endif
  CheckCpuF32(x, "AddRmsNorm x");
  CheckCpuF32(residual, "AddRmsNorm residual");
  CheckCpuF32(post_weight, "AddRmsNorm post_weight");
  CHECK(x.rank() == 2 && x.shape() == residual.shape())
      << "AddRmsNorm: " << residual.DebugString() << " += " << x.DebugString();
  const int64_t rows = x.dim(0);
  const int64_t dim = x.dim(1);
  CheckShape(post_weight, {dim}, "AddRmsNorm post_weight");
  const bool has_next = next_weight.defined();
  if (has_next) {
    CheckCpuF32(next_weight, "AddRmsNorm next_weight");
    CheckCpuF32(next, "AddRmsNorm next");
    CheckShape(next_weight, {dim}, "AddRmsNorm next_weight");
    CHECK(next.shape() == x.shape() && next.raw_data() != x.raw_data() &&
          next.raw_data() != residual.raw_data())
        << "AddRmsNorm next: " << next.DebugString();
  }
  const float* w = post_weight.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data<float>() + r * dim;
    float* sum = residual.data<float>() + r * dim;
    const float inv_rms = InverseRms(row, dim, eps);
    for (int64_t i = 0; i < dim; ++i) sum[i] += row[i] * inv_rms * w[i];
    if (scale != 1.0f) {
      for (int64_t i = 0; i < dim; ++i) sum[i] *= scale;
    }
    if (!has_next) continue;
    const float inv_sum_rms = InverseRms(sum, dim, eps);
    const float* v = next_weight.data<float>();
    float* dst = next.data<float>() + r * dim;
    for (int64_t i = 0; i < dim; ++i) dst[i] = sum[i] * inv_sum_rms * v[i];
  }
}

}  // namespace gemmaserve::ops
