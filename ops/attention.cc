#include "ops/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/ops_util.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/attention.h"
#endif

namespace gemmaserve::ops {
namespace {

void CheckKvCache(const Tensor& cache, const char* what) {
  CHECK(cache.device().is_cpu()) << what << ": " << cache.DebugString()
                                 << " is on a device this op has no kernel for";
  CHECK(cache.dtype() == DType::kF32 || cache.dtype() == DType::kBF16)
      << what << ": KV cache must be f32 or bf16, got " << cache.DebugString();
  CHECK_EQ(cache.rank(), 4) << what << ": " << cache.DebugString();
}

// `count` floats of `src` into slot row `dst` of a cache of `dtype`.
void StoreRow(const float* src, int64_t count, DType dtype, void* dst) {
  if (dtype == DType::kF32) {
    std::memcpy(dst, src, count * sizeof(float));
    return;
  }
  uint16_t* out = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < count; ++i) out[i] = F32ToBf16(src[i]);
}

// `rows` consecutive cache rows of one KV head, as f32: the cache itself when it is f32 (rows
// `stride` floats apart), else widened into `scratch` (rows head_dim apart).
struct KvRows {
  const float* data;
  int64_t stride;
};
KvRows ReadRows(const Tensor& cache, int64_t first_row, int64_t rows, int64_t kv_head,
                std::vector<float>& scratch) {
  const int64_t num_kv_heads = cache.dim(2);
  const int64_t head_dim = cache.dim(3);
  const int64_t offset = (first_row * num_kv_heads + kv_head) * head_dim;
  if (cache.dtype() == DType::kF32) {
    return {cache.data<float>() + offset, num_kv_heads * head_dim};
  }
  scratch.resize(static_cast<size_t>(rows * head_dim));
  const uint16_t* src = cache.data<uint16_t>() + offset;
  for (int64_t r = 0; r < rows; ++r) {
    ConvertToF32(DType::kBF16, src + r * num_kv_heads * head_dim, scratch.data() + r * head_dim,
                 static_cast<size_t>(head_dim));
  }
  return {scratch.data(), head_dim};
}

// Attention of one query head at one position over the keys [first, last] of one sequence.
// `scores` is scratch of at least last − first + 1 floats.
void AttendOne(const float* q, const Tensor& k_cache, const Tensor& v_cache,
               const int32_t* block_table, int64_t kv_head, int64_t first, int64_t last,
               float scale, float* scores, std::vector<float>& rows_scratch, float* out) {
  const int64_t block_size = k_cache.dim(1);
  const int64_t head_dim = k_cache.dim(3);
  // Scores, one BLAS gemv per cache block: scores[rows] = K_block[rows, head_dim] · q.
  for (int64_t pos = first; pos <= last;) {
    const int64_t block = pos / block_size;
    const int64_t offset = pos % block_size;
    const int64_t rows = std::min(block_size - offset, last - pos + 1);
    const KvRows keys = ReadRows(k_cache, block_table[block] * block_size + offset, rows, kv_head,
                                 rows_scratch);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(rows),
                static_cast<blasint>(head_dim), scale, keys.data,
                static_cast<blasint>(keys.stride), q, 1, 0.0f, scores + (pos - first), 1);
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
    const KvRows values = ReadRows(v_cache, block_table[block] * block_size + offset, rows,
                                   kv_head, rows_scratch);
    cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<blasint>(rows),
                static_cast<blasint>(head_dim), 1.0f, values.data,
                static_cast<blasint>(values.stride), scores + (pos - first), 1, 1.0f, out, 1);
    pos += rows;
  }
}

// The metadata's shapes, and for each sequence: its rows inside q, and every block it reads (from
// the window's first position on) present in its table and inside the cache.
void CheckMetadata(const AttentionMetadata& m, int64_t num_tokens, const Tensor& cache,
                   int64_t sliding_window) {
  const int64_t s = m.num_sequences();
  for (const Tensor* t : {&m.token_begin, &m.num_tokens, &m.context_lens}) {
    CheckCpuI32(*t, "PagedAttention metadata");
    CheckShape(*t, {s}, "PagedAttention metadata");
  }
  CheckCpuI32(m.block_tables, "PagedAttention block_tables");
  CHECK(m.block_tables.rank() == 2 && m.block_tables.dim(0) == s)
      << "PagedAttention block_tables: " << m.block_tables.DebugString() << " for " << s
      << " sequences";
  const int64_t block_size = cache.dim(1);
  const int64_t max_blocks = m.block_tables.dim(1);
  for (int64_t i = 0; i < s; ++i) {
    const int64_t begin = m.token_begin.data<int32_t>()[i];
    const int64_t tokens = m.num_tokens.data<int32_t>()[i];
    const int64_t context = m.context_lens.data<int32_t>()[i];
    CHECK(begin >= 0 && tokens >= 0 && tokens <= context && begin + tokens <= num_tokens &&
          context <= m.max_context_len && (context + block_size - 1) / block_size <= max_blocks)
        << "PagedAttention: sequence " << i << " rows [" << begin << ", " << begin + tokens
        << ") of " << num_tokens << ", context " << context << " (max " << m.max_context_len
        << ") in " << max_blocks << " blocks of " << block_size;
    const int64_t first_query = context - tokens;
    const int64_t first_key =
        sliding_window > 0 ? std::max<int64_t>(0, first_query - sliding_window + 1) : 0;
    const int32_t* table = m.block_tables.data<int32_t>() + i * max_blocks;
    for (int64_t b = first_key / block_size; b < (context + block_size - 1) / block_size; ++b) {
      CHECK(table[b] >= 0 && table[b] < cache.dim(0))
          << "PagedAttention: sequence " << i << " block " << b << " is " << table[b] << " of "
          << cache.dim(0);
    }
  }
}

}  // namespace

void WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache,
                  Tensor& v_cache) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (k.device().is_cuda()) return kernels::WriteKvCache(k, v, slots, k_cache, v_cache);
#endif
  CheckCpuF32(k, "WriteKvCache k");
  CheckCpuF32(v, "WriteKvCache v");
  CheckCpuI32(slots, "WriteKvCache slots");
  CheckKvCache(k_cache, "WriteKvCache k_cache");
  CheckKvCache(v_cache, "WriteKvCache v_cache");
  CHECK(k.shape() == v.shape()) << k.DebugString() << " vs " << v.DebugString();
  CHECK(k_cache.shape() == v_cache.shape() && k_cache.dtype() == v_cache.dtype());
  CheckShape(slots, {k.dim(0)}, "WriteKvCache slots");
  const int64_t num_slots = k_cache.dim(0) * k_cache.dim(1);
  const int64_t row = k_cache.dim(2) * k_cache.dim(3);
  CHECK_EQ(k.dim(1) * k.dim(2), row) << k.DebugString() << " into " << k_cache.DebugString();
  const size_t row_bytes = static_cast<size_t>(row) * DTypeSize(k_cache.dtype());
  const int32_t* slot = slots.data<int32_t>();
  for (int64_t t = 0; t < k.dim(0); ++t) {
    CHECK(slot[t] >= 0 && slot[t] < num_slots) << "slot " << slot[t] << " of " << num_slots;
    StoreRow(k.data<float>() + t * row, row, k_cache.dtype(),
             static_cast<char*>(k_cache.raw_data()) + slot[t] * row_bytes);
    StoreRow(v.data<float>() + t * row, row, v_cache.dtype(),
             static_cast<char*>(v_cache.raw_data()) + slot[t] * row_bytes);
  }
}

void PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                    const AttentionMetadata& metadata, int64_t sliding_window, float scale,
                    Tensor& out) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (q.device().is_cuda()) {
    return kernels::PagedAttention(q, k_cache, v_cache, metadata, sliding_window, scale, out);
  }
#endif
  CheckCpuF32(q, "PagedAttention q");
  CheckKvCache(k_cache, "PagedAttention k_cache");
  CheckKvCache(v_cache, "PagedAttention v_cache");
  CheckCpuF32(out, "PagedAttention out");
  CHECK_EQ(q.rank(), 3);
  CHECK(q.shape() == out.shape()) << q.DebugString() << " vs " << out.DebugString();
  CHECK(k_cache.shape() == v_cache.shape() && k_cache.dtype() == v_cache.dtype());
  const int64_t num_heads = q.dim(1);
  const int64_t head_dim = q.dim(2);
  const int64_t num_kv_heads = k_cache.dim(2);
  CHECK_EQ(k_cache.dim(3), head_dim);
  CHECK_EQ(num_heads % num_kv_heads, 0) << num_heads << " heads over " << num_kv_heads;
  CheckMetadata(metadata, q.dim(0), k_cache, sliding_window);
  const int64_t group = num_heads / num_kv_heads;

  const int64_t max_blocks = metadata.block_tables.dim(1);
  const size_t needed = static_cast<size_t>(std::max<int64_t>(metadata.max_context_len, 1));
  // Heads are independent: each thread takes a run of them, for every token. Parallel only when
  // there is enough work to pay for waking the threads.
  const bool parallel = q.dim(0) * metadata.max_context_len * head_dim > kParallelElements;
  ParallelRanges(num_heads, parallel, [&](int64_t first_head, int64_t last_head) {
    // Per thread, reused across calls, grown ahead (to twice the longest context yet, at least
    // 4096), so decoding allocates only when its context doubles.
    thread_local std::vector<float> scores;
    thread_local std::vector<float> rows_scratch;
    if (scores.size() < needed) scores.resize(std::max<size_t>(2 * needed, 4096));
    for (int64_t s = 0; s < metadata.num_sequences(); ++s) {
      const int64_t token_begin = metadata.token_begin.data<int32_t>()[s];
      const int64_t num_tokens = metadata.num_tokens.data<int32_t>()[s];
      const int64_t context_len = metadata.context_lens.data<int32_t>()[s];
      const int32_t* block_table = metadata.block_tables.data<int32_t>() + s * max_blocks;
      for (int64_t i = 0; i < num_tokens; ++i) {
        const int64_t token = token_begin + i;
        const int64_t position = context_len - num_tokens + i;
        const int64_t first =
            sliding_window > 0 ? std::max<int64_t>(0, position - sliding_window + 1) : 0;
        for (int64_t h = first_head; h < last_head; ++h) {
          const int64_t offset = (token * num_heads + h) * head_dim;
          AttendOne(q.data<float>() + offset, k_cache, v_cache, block_table, h / group, first,
                    position, scale, scores.data(), rows_scratch, out.data<float>() + offset);
        }
      }
    }
  });
}

}  // namespace gemmaserve::ops
