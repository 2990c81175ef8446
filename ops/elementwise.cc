#include "ops/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/linear.h"
#include "ops/ops_util.h"
#include "ops/vector_loops.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/elementwise.h"
#endif

namespace gemmaserve::ops {

void SetZero(Tensor& x) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (x.device().is_cuda()) return kernels::SetZero(x);
#endif
  CHECK(x.device().is_cpu()) << "SetZero: " << x.DebugString()
                             << " is on a device this op has no kernel for yet";
  std::memset(x.raw_data(), 0, x.nbytes());
}

void AddInPlace(Tensor& x, const Tensor& y) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (x.device().is_cuda()) return kernels::AddInPlace(x, y);
#endif
  CheckCpuF32(x, "AddInPlace x");
  CheckCpuF32(y, "AddInPlace y");
  CHECK_EQ(x.numel(), y.numel()) << x.DebugString() << " += " << y.DebugString();
  float* dst = x.data<float>();
  const float* src = y.data<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

void ScaleInPlace(Tensor& x, float scale) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (x.device().is_cuda()) return kernels::ScaleInPlace(x, scale);
#endif
  CheckCpuF32(x, "ScaleInPlace x");
  float* dst = x.data<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] *= scale;
}

void MultiplyInPlace(Tensor& x, const Tensor& w, float scale) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (x.device().is_cuda()) return kernels::MultiplyInPlace(x, w, scale);
#endif
  CheckCpuF32(x, "MultiplyInPlace x");
  CheckCpuF32(w, "MultiplyInPlace w");
  CHECK_EQ(x.rank(), 2);
  const int64_t dim = x.dim(1);
  CheckShape(w, {dim}, "MultiplyInPlace w");
  float* dst = x.data<float>();
  const float* weight = w.data<float>();
  for (int64_t r = 0; r < x.dim(0); ++r) {
    float* row = dst + r * dim;
    for (int64_t i = 0; i < dim; ++i) row[i] = row[i] * weight[i] * scale;
  }
}

void SoftcapInPlace(Tensor& x, float cap) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (x.device().is_cuda()) return kernels::SoftcapInPlace(x, cap);
#endif
  CheckCpuF32(x, "SoftcapInPlace x");
  CHECK_GT(cap, 0.0f);
  float* dst = x.data<float>();
  const int64_t n = x.numel();
  ParallelRanges(n, n > kParallelElements,
                 [&](int64_t begin, int64_t end) { SoftcapRow(dst + begin, end - begin, cap); });
}

void EmbeddingLookup(const Tensor& table, const Tensor& ids, float scale, Tensor& out,
                     int64_t first_row) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (out.device().is_cuda()) return kernels::EmbeddingLookup(table, ids, scale, out, first_row);
#endif
  CHECK(table.device().is_cpu() && (table.dtype() == DType::kF32 || table.dtype() == DType::kBF16))
      << "EmbeddingLookup table: " << table.DebugString();
  CheckCpuI32(ids, "EmbeddingLookup ids");
  CheckCpuF32(out, "EmbeddingLookup out");
  CHECK(table.rank() == 2 || IsPackedLinearWeight(table)) << table.DebugString();
  const int64_t rows_held = LinearOutFeatures(table);
  const int64_t dim = LinearInFeatures(table);
  CheckShape(out, {ids.numel(), dim}, "EmbeddingLookup out");
  float* dst = out.data<float>();
  for (int64_t i = 0; i < out.dim(0); ++i) {
    float* row = dst + i * dim;
    const int64_t row_index = static_cast<int64_t>(ids.data<int32_t>()[i]) - first_row;
    if (row_index < 0 || row_index >= rows_held) {
      std::memset(row, 0, dim * sizeof(float));
      continue;
    }
    CopyLinearWeightRow(table, row_index, row);
    for (int64_t j = 0; j < dim; ++j) row[j] *= scale;
  }
}

}  // namespace gemmaserve::ops
