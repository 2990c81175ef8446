#include "ops/elementwise.h"

#include <cmath>
#include <cstring>

#include "ops/ops_util.h"

namespace gemmaserve::ops {

void AddInPlace(Tensor& x, const Tensor& y) {
  CheckCpuF32(x, "AddInPlace x");
  CheckCpuF32(y, "AddInPlace y");
  CHECK_EQ(x.numel(), y.numel()) << x.DebugString() << " += " << y.DebugString();
  float* dst = x.data<float>();
  const float* src = y.data<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

void ScaleInPlace(Tensor& x, float scale) {
  CheckCpuF32(x, "ScaleInPlace x");
  float* dst = x.data<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] *= scale;
}

void SoftcapInPlace(Tensor& x, float cap) {
  CheckCpuF32(x, "SoftcapInPlace x");
  CHECK_GT(cap, 0.0f);
  float* dst = x.data<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] = cap * std::tanh(dst[i] / cap);
}

void EmbeddingLookup(const Tensor& table, const int32_t* ids, float scale, Tensor& out,
                     int64_t first_row) {
  CheckCpuF32(table, "EmbeddingLookup table");
  CheckCpuF32(out, "EmbeddingLookup out");
  CHECK_EQ(table.rank(), 2);
  const int64_t rows_held = table.dim(0);
  const int64_t dim = table.dim(1);
  CHECK_EQ(out.dim(1), dim);
  const float* rows = table.data<float>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < out.dim(0); ++i) {
    const int64_t row_index = static_cast<int64_t>(ids[i]) - first_row;
    if (row_index < 0 || row_index >= rows_held) {
      std::memset(dst + i * dim, 0, dim * sizeof(float));
      continue;
    }
    const float* row = rows + row_index * dim;
    for (int64_t j = 0; j < dim; ++j) dst[i * dim + j] = row[j] * scale;
  }
}

}  // namespace gemmaserve::ops
