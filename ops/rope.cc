#include "ops/rope.h"

#include <algorithm>
#include <cmath>

#include "ops/copy.h"
#include "ops/ops_util.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/rope.h"
#endif

namespace gemmaserve::ops {
namespace {

// cos and sin of position · inv_freq[j] for every angle. One out-of-line function for Apply and
// Table, so that both get the same bits.
[[gnu::noinline]] void CosSin(int32_t position, const float* inv_freq, int64_t angles,
                              float* cos_values, float* sin_values) {
  const float p = static_cast<float>(position);
  for (int64_t j = 0; j < angles; ++j) {
    const float angle = p * inv_freq[j];
    cos_values[j] = std::cos(angle);
    sin_values[j] = std::sin(angle);
  }
}

}  // namespace

Rotary::Rotary(int64_t head_dim, int64_t rope_angles, double theta, const Device& device)
    : head_dim_(head_dim) {
  CHECK(head_dim > 0 && head_dim % 2 == 0) << "head_dim " << head_dim;
  CHECK(rope_angles >= 0 && rope_angles <= head_dim / 2) << "rope_angles " << rope_angles;
  std::vector<float> inv_freq(rope_angles);
  for (int64_t j = 0; j < rope_angles; ++j) {
    const float exponent = static_cast<float>(2 * j) / static_cast<float>(head_dim);
    inv_freq[j] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  inv_freq_ = ToDevice(Tensor::FromVector(inv_freq, {rope_angles}), device);
  host_inv_freq_ = std::move(inv_freq);
}

RopeTable Rotary::Table(int64_t positions) {
  CHECK_GE(positions, 0);
  const int64_t angles = static_cast<int64_t>(host_inv_freq_.size());
  const int64_t row = 2 * angles;
  int64_t have = angles == 0 ? 0 : static_cast<int64_t>(table_.size()) / row;
  if (have < positions) {
    // By half again what it holds (a decode grows it a position at a step), never more: the
    // vector would double its capacity by itself.
    const int64_t grown = std::max(positions, have + have / 2);
    table_.reserve(static_cast<size_t>(grown * row));
    table_.resize(static_cast<size_t>(grown * row));
    for (; have < grown; ++have) {
      float* values = table_.data() + have * row;
      CosSin(static_cast<int32_t>(have), host_inv_freq_.data(), angles, values, values + angles);
    }
  }
  return {table_.data(), angles == 0 ? positions : have, angles};
}

void Rotary::Apply(Tensor& x, const Tensor& positions) const {
#ifdef GEMMASERVE_HAVE_CUDA
  if (x.device().is_cuda()) return kernels::ApplyRope(x, positions, inv_freq_);
#endif
  CheckCpuF32(x, "Rotary x");
  CheckCpuI32(positions, "Rotary positions");
  CHECK_EQ(x.rank(), 3);
  CHECK_EQ(x.dim(2), head_dim_);
  CheckShape(positions, {x.dim(0)}, "Rotary positions");
  const int64_t num_tokens = x.dim(0);
  const int64_t num_heads = x.dim(1);
  const int64_t half = head_dim_ / 2;
  const int64_t angles = inv_freq_.numel();
  const float* inv_freq = inv_freq_.data<float>();
  // Reused across calls on this thread (the hot path allocates nothing).
  thread_local std::vector<float> cos_values;
  thread_local std::vector<float> sin_values;
  cos_values.resize(angles);
  sin_values.resize(angles);
  float* data = x.data<float>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    CosSin(positions.data<int32_t>()[t], inv_freq, angles, cos_values.data(), sin_values.data());
    for (int64_t h = 0; h < num_heads; ++h) {
      float* head = data + (t * num_heads + h) * head_dim_;
      for (int64_t j = 0; j < angles; ++j) {
        const float a = head[j];
        const float b = head[j + half];
        head[j] = a * cos_values[j] - b * sin_values[j];
        head[j + half] = b * cos_values[j] + a * sin_values[j];
      }
    }
  }
}

}  // namespace gemmaserve::ops
