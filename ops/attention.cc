#include "ops/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/ops_util.h"

namespace gemmaserve::ops {

void WriteKvCache(const Tensor& k, const Tensor& v, const int64_t* slots, Tensor& k_cache,
                  Tensor& v_cache) {
  CheckCpuF32(k, "WriteKvCache k");
  CheckCpuF32(v, "WriteKvCache v");
  CheckCpuF32(k_cache, "WriteKvCache k_cache");
  CheckCpuF32(v_cache, "WriteKvCache v_cache");
  CHECK(k.shape() == v.shape()) << k.DebugString() << " vs " << v.DebugString();
  CHECK(k_cache.shape() == v_cache.shape());
  CHECK_EQ(k_cache.rank(), 4);
  const int64_t num_slots = k_cache.dim(0) * k_cache.dim(1);
  const int64_t row = k_cache.dim(2) * k_cache.dim(3);
  CHECK_EQ(k.dim(1) * k.dim(2), row) << k.DebugString() << " into " << k_cache.DebugString();
  for (int64_t t = 0; t < k.dim(0); ++t) {
    CHECK(slots[t] >= 0 && slots[t] < num_slots) << "slot " << slots[t] << " of " << num_slots;
    std::memcpy(k_cache.data<float>() + slots[t] * row, k.data<float>() + t * row,
                row * sizeof(float));
    std::memcpy(v_cache.data<float>() + slots[t] * row, v.data<float>() + t * row,
                row * sizeof(float));
  }
}

namespace {

// Attention of one query head at one position over the keys [first, last] of one sequence.
// `scores` is scratch of at least last − first + 1 floats.
void AttendOne(const float* q, const Tensor& k_cache, const Tensor& v_cache,
               const int32_t* block_table, int64_t kv_head, int64_t first, int64_t last,
               float scale, float* scores, float* out) {
  const int64_t block_size = k_cache.dim(1);
  const int64_t num_kv_heads = k_cache.dim(2);
  const int64_t head_dim = k_cache.dim(3);
  const int64_t row_stride = num_kv_heads * head_dim;
  const int64_t block_stride = block_size * row_stride;
  // Scores, one BLAS gemv per cache block: scores[rows] = K_block[rows, head_dim] · q.
  for (int64_t pos = first; pos <= last;) {
    const int64_t block = pos / block_size;
    const int64_t offset = pos % block_size;
    const int64_t rows = std::min(block_size - offset, last - pos + 1);
    const float* keys = k_cache.data<float>() + block_table[block] * block_stride +
                        offset * row_stride + kv_head * head_dim;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(rows),
                static_cast<blasint>(head_dim), scale, keys, static_cast<blasint>(row_stride), q,
                1, 0.0f, scores + (pos - first), 1);
    pos += rows;
  }
  const int64_t count = last - first + 1;
  const float max_score = *std::max_element(scores, scores + count);
  float sum = 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    scores[i] = std::exp(scores[i] - max_score);
    sum += scores[i];
  }
  const float inv_sum = 1.0f / sum;
  for (int64_t i = 0; i < count; ++i) scores[i] *= inv_sum;
  // out[head_dim] = V_blockᵀ · probabilities, accumulated block by block.
  std::memset(out, 0, head_dim * sizeof(float));
  for (int64_t pos = first; pos <= last;) {
    const int64_t block = pos / block_size;
    const int64_t offset = pos % block_size;
    const int64_t rows = std::min(block_size - offset, last - pos + 1);
    const float* values = v_cache.data<float>() + block_table[block] * block_stride +
                          offset * row_stride + kv_head * head_dim;
    cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<blasint>(rows),
                static_cast<blasint>(head_dim), 1.0f, values, static_cast<blasint>(row_stride),
                scores + (pos - first), 1, 1.0f, out, 1);
    pos += rows;
  }
}

}  // namespace

void PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                    const std::vector<AttentionSpan>& spans, int64_t sliding_window, float scale,
                    Tensor& out) {
  CheckCpuF32(q, "PagedAttention q");
  CheckCpuF32(k_cache, "PagedAttention k_cache");
  CheckCpuF32(v_cache, "PagedAttention v_cache");
  CheckCpuF32(out, "PagedAttention out");
  CHECK_EQ(q.rank(), 3);
  CHECK(q.shape() == out.shape()) << q.DebugString() << " vs " << out.DebugString();
  CHECK(k_cache.shape() == v_cache.shape());
  const int64_t num_heads = q.dim(1);
  const int64_t head_dim = q.dim(2);
  const int64_t num_kv_heads = k_cache.dim(2);
  CHECK_EQ(k_cache.dim(3), head_dim);
  CHECK_EQ(num_heads % num_kv_heads, 0) << num_heads << " heads over " << num_kv_heads;
  const int64_t group = num_heads / num_kv_heads;

  int64_t max_context = 0;
  for (const AttentionSpan& span : spans) max_context = std::max(max_context, span.context_len);
  std::vector<float> scores(static_cast<size_t>(std::max<int64_t>(max_context, 1)));
  for (const AttentionSpan& span : spans) {
    CHECK(span.num_tokens <= span.context_len && span.token_begin + span.num_tokens <= q.dim(0));
    for (int64_t i = 0; i < span.num_tokens; ++i) {
      const int64_t token = span.token_begin + i;
      const int64_t position = span.context_len - span.num_tokens + i;
      const int64_t first =
          sliding_window > 0 ? std::max<int64_t>(0, position - sliding_window + 1) : 0;
      for (int64_t h = 0; h < num_heads; ++h) {
        const int64_t offset = (token * num_heads + h) * head_dim;
        AttendOne(q.data<float>() + offset, k_cache, v_cache, span.block_table, h / group, first,
                  position, scale, scores.data(), out.data<float>() + offset);
      }
    }
  }
}

}  // namespace gemmaserve::ops
