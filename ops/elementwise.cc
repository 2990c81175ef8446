#include "ops/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/fast_math.h"
#include "ops/linear.h"
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

double SumExp(const float* x, int64_t n, float scale, float shift) {
  constexpr int64_t kBlock = 256;
  float values[kBlock];
  double sum = 0.0;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t count = std::min(kBlock, n - begin);
    for (int64_t i = 0; i < count; ++i) values[i] = FastExp(x[begin + i] * scale - shift);
    float block = 0.0f;  // ≤ 256 terms in (0, 1]: float is exact enough before the double sum
    for (int64_t i = 0; i < count; ++i) block += values[i];
    sum += block;
  }
  return sum;
}

void SoftcapInPlace(Tensor& x, float cap) {
  CheckCpuF32(x, "SoftcapInPlace x");
  CHECK_GT(cap, 0.0f);
  float* dst = x.data<float>();
  const int64_t n = x.numel();
  const float inverse = 1.0f / cap;
#pragma omp parallel for simd if (n > kParallelElements)
  for (int64_t i = 0; i < n; ++i) dst[i] = cap * FastTanh(dst[i] * inverse);
}

void EmbeddingLookup(const Tensor& table, const int32_t* ids, float scale, Tensor& out,
                     int64_t first_row) {
  CheckCpuF32(table, "EmbeddingLookup table");
  CheckCpuF32(out, "EmbeddingLookup out");
  CHECK(table.rank() == 2 || IsPackedLinearWeight(table)) << table.DebugString();
  const int64_t rows_held = LinearOutFeatures(table);
  const int64_t dim = LinearInFeatures(table);
  CHECK_EQ(out.dim(1), dim);
  float* dst = out.data<float>();
  for (int64_t i = 0; i < out.dim(0); ++i) {
    float* row = dst + i * dim;
    const int64_t row_index = static_cast<int64_t>(ids[i]) - first_row;
    if (row_index < 0 || row_index >= rows_held) {
      std::memset(row, 0, dim * sizeof(float));
      continue;
    }
    CopyLinearWeightRow(table, row_index, row);
    for (int64_t j = 0; j < dim; ++j) row[j] *= scale;
  }
}

}  // namespace gemmaserve::ops
