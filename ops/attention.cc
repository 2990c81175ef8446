#include "ops/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/fast_math.h"
#include "ops/norm.h"

#include "ops/ops_util.h"
#include "ops/vector_loops.h"

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

// Tokens per block: the metadata's, or the cache's dim(1) when it packs blocks back to back.
int64_t BlockSize(const AttentionMetadata& m, const Tensor& cache) {
  return m.block_size > 0 ? m.block_size : cache.dim(1);
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
void AttendOne(const float* q, const Tensor& k_cache, const Tensor& v_cache, int64_t block_size,
               const int32_t* block_table, int64_t kv_head, int64_t first, int64_t last,
               float scale, float* scores, std::vector<float>& rows_scratch, float* out) {
  const int64_t stride = k_cache.dim(1);
  const int64_t head_dim = k_cache.dim(3);
  // Scores, one BLAS gemv per cache block: scores[rows] = K_block[rows, head_dim] · q.
  for (int64_t pos = first; pos <= last;) {
    const int64_t block = pos / block_size;
    const int64_t offset = pos % block_size;
    const int64_t rows = std::min(block_size - offset, last - pos + 1);
    const KvRows keys =
        ReadRows(k_cache, block_table[block] * stride + offset, rows, kv_head, rows_scratch);
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
    const KvRows values =
        ReadRows(v_cache, block_table[block] * stride + offset, rows, kv_head, rows_scratch);
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
  const int64_t block_size = BlockSize(m, cache);
  CHECK(block_size > 0 && block_size <= cache.dim(1))
      << "PagedAttention: blocks of " << block_size << " tokens in a cache of "
      << cache.DebugString();
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

// Every tensor of a PagedAttention call: dtypes, devices, shapes and the metadata.
void CheckAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                    const AttentionMetadata& metadata, int64_t sliding_window, const Tensor& out,
                    const KeysFromValues* keys_from_values) {
  CheckCpuF32(q, "PagedAttention q");
  CheckKvCache(v_cache, "PagedAttention v_cache");
  CheckCpuF32(out, "PagedAttention out");
  CHECK_EQ(q.rank(), 3);
  CHECK(q.shape() == out.shape()) << q.DebugString() << " vs " << out.DebugString();
  CHECK_EQ(v_cache.dim(3), q.dim(2));
  CHECK_EQ(q.dim(1) % v_cache.dim(2), 0) << q.dim(1) << " heads over " << v_cache.dim(2);
  if (keys_from_values == nullptr) {
    CheckKvCache(k_cache, "PagedAttention k_cache");
    CHECK(k_cache.shape() == v_cache.shape() && k_cache.dtype() == v_cache.dtype());
  } else {
    CHECK(!k_cache.defined()) << "PagedAttention: keys both stored and rebuilt from values";
    CheckCpuF32(keys_from_values->k_norm_weight, "PagedAttention k_norm_weight");
    CheckShape(keys_from_values->k_norm_weight, {q.dim(2)}, "PagedAttention k_norm_weight");
    const RopeTable& rope = keys_from_values->rope;
    CHECK(rope.positions >= metadata.max_context_len && 2 * rope.angles <= q.dim(2) &&
          (rope.values != nullptr || rope.angles == 0))
        << "PagedAttention: a RoPE table of " << rope.positions << " positions and "
        << rope.angles << " angles for contexts up to " << metadata.max_context_len
        << " and head_dim " << q.dim(2);
  }
  CheckMetadata(metadata, q.dim(0), v_cache, sliding_window);
}

// The tiled kernel (PagedAttention): flash-style attention with an online softmax in f32. A work
// item is one sequence's block of query positions for the query heads of one KV head's group
// (kQueryRows rows together); it walks its keys in tiles of kKeyTile, widening each tile of keys
// and values once into f32 scratch, and computes the tile's scores and its share of the output as
// two matrix products over all of its rows, while the next tile is prefetched into the L2 cache
// (a long context's keys come from memory: each item reads all it sees). Weights of a tile below
// e^−40 of the row's maximum are zeros (vector_loops.h: ExpShiftRow), which keeps the products
// clear of subnormal floats. Keys before a sliding window are never read. When
// there are fewer items than threads have work for (a decode over a long context), an item's keys
// are split over several items whose partial results (unnormalised output, running max and sum
// per row) are merged at the end (split-KV).
constexpr int64_t kQueryRows = 256;  // 128 ran a 16,384-token full layer 10 % slower
constexpr int64_t kKeyTile = 128;  // at head_dim 512 a key and a value tile are 512 KiB together
constexpr int64_t kMinSplitKeys = 512;

struct AttentionWork {
  int32_t sequence;
  int32_t kv_head;
  int32_t first_query;  // among the sequence's tokens of this step
  int32_t queries;
  int32_t first_key;  // positions in the sequence, inclusive
  int32_t last_key;
  int32_t partial;  // −1: writes its rows of `out`; else the index of its partial result
  int64_t cost;     // rows × keys: the largest items are handed out first
};

// The rows of the work items whose keys were split: where their partials are and how many.
struct SplitRows {
  int32_t sequence;
  int32_t kv_head;
  int32_t first_query;
  int32_t queries;
  int32_t first_partial;
  int32_t num_partials;
};

struct AttentionShape {
  int64_t num_heads;   // query heads
  int64_t group;       // query heads per KV head
  int64_t head_dim;
  int64_t max_blocks;  // columns of the block tables
  int64_t block_size;  // tokens per block (the cache's dim(1) is the stride between blocks)
  int64_t window;      // 0: full causal
  float scale;
};

// Per-thread scratch of the tiled kernel, grown ahead and reused, so a steady decode allocates
// nothing.
struct TileScratch {
  std::vector<float> q, o, scores, keys, values, max, sum;
  void Reserve(int64_t rows, int64_t head_dim) {
    auto grow = [](std::vector<float>& v, int64_t n) {
      if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
    };
    grow(q, rows * head_dim);
    grow(o, rows * head_dim);
    grow(scores, rows * kKeyTile);
    grow(keys, kKeyTile * head_dim);
    grow(values, kKeyTile * head_dim);
    grow(max, rows);
    grow(sum, rows);
  }
};

// Rows [first, first + count) of one KV head of a sequence as an f32 [count, head_dim] tile.
void GatherTile(const Tensor& cache, int64_t block_size, const int32_t* block_table,
                int64_t kv_head, int64_t first, int64_t count, float* tile) {
  const int64_t stride = cache.dim(1);
  const int64_t row_elements = cache.dim(2) * cache.dim(3);
  const int64_t head_dim = cache.dim(3);
  const bool f32 = cache.dtype() == DType::kF32;
  for (int64_t done = 0; done < count;) {
    const int64_t position = first + done;
    const int64_t offset = position % block_size;
    const int64_t rows = std::min(block_size - offset, count - done);
    const int64_t slot = int64_t{block_table[position / block_size]} * stride + offset;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t src = (slot + r) * row_elements + kv_head * head_dim;
      float* dst = tile + (done + r) * head_dim;
      if (f32) {
        std::memcpy(dst, cache.data<float>() + src, static_cast<size_t>(head_dim) * sizeof(float));
      } else {
        ConvertToF32(DType::kBF16, cache.data<uint16_t>() + src, dst, static_cast<size_t>(head_dim));
      }
    }
    done += rows;
  }
}

// Asks for rows [first, first + count) of one KV head in the L2 cache (GatherTile's rows), so
// that the next tile streams in while this one's products run.
void PrefetchTile(const Tensor& cache, int64_t block_size, const int32_t* block_table,
                  int64_t kv_head, int64_t first, int64_t count) {
  const int64_t stride = cache.dim(1);
  const int64_t head_bytes = cache.dim(3) * static_cast<int64_t>(DTypeSize(cache.dtype()));
  const int64_t row_bytes = cache.dim(2) * head_bytes;
  const char* base = static_cast<const char*>(cache.raw_data());
  for (int64_t position = first; position < first + count; ++position) {
    const int64_t slot =
        int64_t{block_table[position / block_size]} * stride + position % block_size;
    const char* row = base + slot * row_bytes + kv_head * head_bytes;
    for (int64_t line = 0; line < head_bytes; line += 64) __builtin_prefetch(row + line, 0, 2);
  }
}

// One work item. Writes its normalised rows into `out`, or (split items) its unnormalised output
// rows, running maxima and sums into `partial_o`, `partial_max`, `partial_sum`.
void RunAttentionWork(const AttentionWork& work, const AttentionShape& shape, const Tensor& q,
                      const Tensor& k_cache, const Tensor& v_cache,
                      const KeysFromValues* keys_from_values, const AttentionMetadata& metadata,
                      TileScratch& scratch, Tensor& out, float* partial_o, float* partial_max,
                      float* partial_sum) {
  const int64_t d = shape.head_dim;
  const int64_t rows = int64_t{work.queries} * shape.group;
  scratch.Reserve(rows, d);
  const int64_t s = work.sequence;
  const int64_t num_tokens = metadata.num_tokens.data<int32_t>()[s];
  const int64_t first_token = metadata.token_begin.data<int32_t>()[s] + work.first_query;
  const int64_t first_position =
      metadata.context_lens.data<int32_t>()[s] - num_tokens + work.first_query;
  const int32_t* block_table = metadata.block_tables.data<int32_t>() + s * shape.max_blocks;

  // Row r is query position first_position + r / group, head kv_head · group + r % group.
  float* q_rows = scratch.q.data();
  for (int64_t i = 0; i < work.queries; ++i) {
    const float* src =
        q.data<float>() + ((first_token + i) * shape.num_heads + work.kv_head * shape.group) * d;
    float* dst = q_rows + i * shape.group * d;
    for (int64_t e = 0; e < shape.group * d; ++e) dst[e] = src[e] * shape.scale;
  }
  float* o = scratch.o.data();
  float* row_max = scratch.max.data();
  float* row_sum = scratch.sum.data();
  std::fill_n(o, rows * d, 0.0f);
  std::fill_n(row_max, rows, -std::numeric_limits<float>::infinity());
  std::fill_n(row_sum, rows, 0.0f);

  for (int64_t tile = work.first_key; tile <= work.last_key; tile += kKeyTile) {
    const int64_t n = std::min(kKeyTile, work.last_key - tile + 1);
    if (keys_from_values != nullptr) {
      GatherTile(v_cache, shape.block_size, block_table, work.kv_head, tile, n,
                 scratch.values.data());
      const KeysFromValues& rebuild = *keys_from_values;
      KeysFromValuesRows(scratch.values.data(), n, d, rebuild.k_norm_weight.data<float>(),
                         rebuild.rope.Row(tile), rebuild.rope.angles, scratch.keys.data());
    } else {
      GatherTile(k_cache, shape.block_size, block_table, work.kv_head, tile, n,
                 scratch.keys.data());
    }
    if (tile + kKeyTile <= work.last_key) {
      const int64_t next = std::min(kKeyTile, work.last_key - tile - kKeyTile + 1);
      if (keys_from_values == nullptr) {
        PrefetchTile(k_cache, shape.block_size, block_table, work.kv_head, tile + kKeyTile, next);
      }
      PrefetchTile(v_cache, shape.block_size, block_table, work.kv_head, tile + kKeyTile, next);
    }
    float* scores = scratch.scores.data();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(rows),
                static_cast<blasint>(n), static_cast<blasint>(d), 1.0f, q_rows,
                static_cast<blasint>(d), scratch.keys.data(), static_cast<blasint>(d), 0.0f,
                scores, static_cast<blasint>(n));
    // Online softmax: each row's scores become exp(score − new max) over the keys it may see
    // (zero elsewhere), and its sum and output so far are rescaled to the new max.
    for (int64_t r = 0; r < rows; ++r) {
      float* row = scores + r * n;
      const int64_t position = first_position + r / shape.group;
      const int64_t lo =
          std::max(tile, shape.window > 0 ? position - shape.window + 1 : int64_t{0}) - tile;
      const int64_t hi = std::min(tile + n - 1, position) - tile;
      if (lo > hi) {
        std::fill_n(row, n, 0.0f);
        continue;
      }
      const float tile_max = MaxRow(row + lo, hi - lo + 1);
      const float new_max = std::max(row_max[r], tile_max);
      const float rescale = row_sum[r] == 0.0f ? 0.0f : FastExp(row_max[r] - new_max);
      const float tile_sum = ExpShiftRow(row + lo, hi - lo + 1, new_max);
      std::fill(row, row + lo, 0.0f);
      std::fill(row + hi + 1, row + n, 0.0f);
      row_sum[r] = row_sum[r] * rescale + tile_sum;
      row_max[r] = new_max;
      if (rescale != 1.0f && rescale != 0.0f) {
        float* o_row = o + r * d;
        for (int64_t e = 0; e < d; ++e) o_row[e] *= rescale;
      }
    }
    if (keys_from_values == nullptr) {
      GatherTile(v_cache, shape.block_size, block_table, work.kv_head, tile, n,
                 scratch.values.data());
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(rows),
                static_cast<blasint>(d), static_cast<blasint>(n), 1.0f, scores,
                static_cast<blasint>(n), scratch.values.data(), static_cast<blasint>(d), 1.0f, o,
                static_cast<blasint>(d));
  }

  if (work.partial >= 0) {
    std::copy_n(o, rows * d, partial_o);
    std::copy_n(row_max, rows, partial_max);
    std::copy_n(row_sum, rows, partial_sum);
    return;
  }
  for (int64_t i = 0; i < work.queries; ++i) {
    float* dst =
        out.data<float>() + ((first_token + i) * shape.num_heads + work.kv_head * shape.group) * d;
    for (int64_t j = 0; j < shape.group; ++j) {
      const int64_t r = i * shape.group + j;
      const float inv_sum = 1.0f / row_sum[r];
      for (int64_t e = 0; e < d; ++e) dst[j * d + e] = o[r * d + e] * inv_sum;
    }
  }
}

// The work items of one call, largest first, and the split rows to merge after them. Items get
// kQueryRows rows (at least one query position); when there are fewer than two per thread, each
// item's keys are split into up to that many chunks of at least kMinSplitKeys.
void PlanAttentionWork(const AttentionMetadata& metadata, const AttentionShape& shape,
                       int64_t num_kv_heads, int64_t threads, std::vector<AttentionWork>& items,
                       std::vector<SplitRows>& splits, int64_t& total_cost) {
  items.clear();
  splits.clear();
  const int64_t queries_per_item = std::max<int64_t>(1, kQueryRows / shape.group);
  for (int64_t s = 0; s < metadata.num_sequences(); ++s) {
    const int64_t tokens = metadata.num_tokens.data<int32_t>()[s];
    const int64_t first_position = metadata.context_lens.data<int32_t>()[s] - tokens;
    for (int64_t kv_head = 0; kv_head < num_kv_heads; ++kv_head) {
      for (int64_t first = 0; first < tokens; first += queries_per_item) {
        const int64_t queries = std::min(queries_per_item, tokens - first);
        const int64_t position = first_position + first;
        const int64_t first_key =
            shape.window > 0 ? std::max<int64_t>(0, position - shape.window + 1) : 0;
        const int64_t last_key = position + queries - 1;
        items.push_back({static_cast<int32_t>(s), static_cast<int32_t>(kv_head),
                         static_cast<int32_t>(first), static_cast<int32_t>(queries),
                         static_cast<int32_t>(first_key), static_cast<int32_t>(last_key), -1,
                         queries * shape.group * (last_key - first_key + 1)});
      }
    }
  }
  const int64_t base_items = static_cast<int64_t>(items.size());
  if (threads > 1 && base_items > 0 && base_items < 2 * threads) {
    const int64_t wanted = (2 * threads + base_items - 1) / base_items;
    int32_t next_partial = 0;
    for (int64_t i = 0; i < base_items; ++i) {
      const AttentionWork whole = items[i];
      const int64_t keys = whole.last_key - whole.first_key + 1;
      const int64_t chunks = std::min(wanted, keys / kMinSplitKeys);
      if (chunks < 2) continue;
      // Chunk boundaries on tile boundaries, so each chunk reads whole tiles.
      const int64_t tiles = (keys + kKeyTile - 1) / kKeyTile;
      splits.push_back({whole.sequence, whole.kv_head, whole.first_query, whole.queries,
                        next_partial, static_cast<int32_t>(chunks)});
      for (int64_t c = 0; c < chunks; ++c) {
        AttentionWork part = whole;
        part.first_key = static_cast<int32_t>(whole.first_key + tiles * c / chunks * kKeyTile);
        part.last_key = static_cast<int32_t>(
            std::min<int64_t>(whole.last_key, whole.first_key + tiles * (c + 1) / chunks * kKeyTile - 1));
        part.partial = next_partial++;
        part.cost = whole.queries * shape.group * (part.last_key - part.first_key + 1);
        if (c == 0) {
          items[i] = part;
        } else {
          items.push_back(part);
        }
      }
    }
  }
  total_cost = 0;
  for (const AttentionWork& item : items) total_cost += item.cost;
  std::sort(items.begin(), items.end(),
            [](const AttentionWork& a, const AttentionWork& b) { return a.cost > b.cost; });
}

}  // namespace

void PrepareAttention(Tensor& q, const Tensor& k_raw, const Tensor& v_raw,
                      const AttentionInputs& inputs, Tensor& k, Tensor& v, Tensor& k_cache,
                      Tensor& v_cache) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (q.device().is_cuda()) {
    return kernels::PrepareAttention(q, k_raw, v_raw, inputs.q_norm, inputs.k_norm, inputs.eps,
                                     inputs.rotary.inv_freq(), inputs.positions, inputs.slots, k,
                                     v, k_cache, v_cache);
  }
#endif
  RmsNorm(q, inputs.q_norm, inputs.eps, q);
  inputs.rotary.Apply(q, inputs.positions);
  RmsNorm(k_raw, inputs.k_norm, inputs.eps, k);
  inputs.rotary.Apply(k, inputs.positions);
  RmsNorm(v_raw, Tensor(), inputs.eps, v);
  WriteKvCache(k, v, inputs.slots, k_cache, v_cache);
}

void WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache,
                  Tensor& v_cache) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (v.device().is_cuda()) return kernels::WriteKvCache(k, v, slots, k_cache, v_cache);
#endif
  const bool keys = k_cache.defined();
  CheckCpuF32(v, "WriteKvCache v");
  CheckCpuI32(slots, "WriteKvCache slots");
  CheckKvCache(v_cache, "WriteKvCache v_cache");
  if (keys) {
    CheckCpuF32(k, "WriteKvCache k");
    CheckKvCache(k_cache, "WriteKvCache k_cache");
    CHECK(k.shape() == v.shape()) << k.DebugString() << " vs " << v.DebugString();
    CHECK(k_cache.shape() == v_cache.shape() && k_cache.dtype() == v_cache.dtype());
  }
  CHECK_EQ(v.rank(), 3) << v.DebugString();
  CheckShape(slots, {v.dim(0)}, "WriteKvCache slots");
  const int64_t num_slots = v_cache.dim(0) * v_cache.dim(1);
  const int64_t row = v_cache.dim(2) * v_cache.dim(3);
  CHECK_EQ(v.dim(1) * v.dim(2), row) << v.DebugString() << " into " << v_cache.DebugString();
  const size_t row_bytes = static_cast<size_t>(row) * DTypeSize(v_cache.dtype());
  const int32_t* slot = slots.data<int32_t>();
  for (int64_t t = 0; t < v.dim(0); ++t) {
    if (slot[t] == kPaddingSlot) continue;
    CHECK(slot[t] >= 0 && slot[t] < num_slots) << "slot " << slot[t] << " of " << num_slots;
    if (keys) {
      StoreRow(k.data<float>() + t * row, row, k_cache.dtype(),
               static_cast<char*>(k_cache.raw_data()) + slot[t] * row_bytes);
    }
    StoreRow(v.data<float>() + t * row, row, v_cache.dtype(),
             static_cast<char*>(v_cache.raw_data()) + slot[t] * row_bytes);
  }
}

void PagedAttentionReference(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                             const AttentionMetadata& metadata, int64_t sliding_window,
                             float scale, Tensor& out) {
  CheckAttention(q, k_cache, v_cache, metadata, sliding_window, out, nullptr);
  const int64_t num_heads = q.dim(1);
  const int64_t head_dim = q.dim(2);
  const int64_t group = num_heads / k_cache.dim(2);

  const int64_t max_blocks = metadata.block_tables.dim(1);
  const int64_t block_size = BlockSize(metadata, k_cache);
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
          AttendOne(q.data<float>() + offset, k_cache, v_cache, block_size, block_table, h / group,
                    first, position, scale, scores.data(), rows_scratch,
                    out.data<float>() + offset);
        }
      }
    }
  });
}

void PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                    const AttentionMetadata& metadata, int64_t sliding_window, float scale,
                    Tensor& out, const KeysFromValues* keys_from_values) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (q.device().is_cuda()) {
    return kernels::PagedAttention(q, k_cache, v_cache, metadata, sliding_window, scale, out,
                                   keys_from_values);
  }
#endif
  CheckAttention(q, k_cache, v_cache, metadata, sliding_window, out, keys_from_values);
  const AttentionShape shape{.num_heads = q.dim(1),
                             .group = q.dim(1) / v_cache.dim(2),
                             .head_dim = q.dim(2),
                             .max_blocks = metadata.block_tables.dim(1),
                             .block_size = BlockSize(metadata, v_cache),
                             .window = sliding_window,
                             .scale = scale};
  // The call's plan lives on the calling thread and is reused; its capacity settles after the
  // first steps, so planning allocates nothing.
  // (The threads of the parallel region reach them through these references: a thread_local
  // named inside the region would be each thread's own.)
  thread_local std::vector<AttentionWork> plan_items;
  thread_local std::vector<SplitRows> plan_splits;
  thread_local std::vector<float> plan_o, plan_max, plan_sum;
  std::vector<AttentionWork>& items = plan_items;
  std::vector<SplitRows>& splits = plan_splits;
  std::vector<float>& partial_o = plan_o;
  std::vector<float>& partial_max = plan_max;
  std::vector<float>& partial_sum = plan_sum;
  const int64_t threads = omp_get_max_threads();
  int64_t total_cost = 0;
  PlanAttentionWork(metadata, shape, v_cache.dim(2), threads, items, splits, total_cost);
  int64_t partial_rows = 0;
  for (const SplitRows& split : splits) {
    partial_rows += int64_t{split.num_partials} * split.queries * shape.group;
  }
  if (partial_o.size() < static_cast<size_t>(partial_rows * shape.head_dim)) {
    partial_o.resize(static_cast<size_t>(partial_rows * shape.head_dim));
    partial_max.resize(static_cast<size_t>(partial_rows));
    partial_sum.resize(static_cast<size_t>(partial_rows));
  }
  // Partial p's rows start at row_offset(p): the partials are numbered split by split, and all
  // partials of one split have the same number of rows.
  auto partial_row = [&](const AttentionWork& item) {
    int64_t row = 0;
    for (const SplitRows& split : splits) {
      const int64_t split_rows = int64_t{split.queries} * shape.group;
      if (item.partial < split.first_partial + split.num_partials) {
        return row + (item.partial - split.first_partial) * split_rows;
      }
      row += split.num_partials * split_rows;
    }
    return row;
  };
  auto run = [&](const AttentionWork& item) {
    thread_local TileScratch scratch;
    const int64_t row = item.partial >= 0 ? partial_row(item) : 0;
    RunAttentionWork(item, shape, q, k_cache, v_cache, keys_from_values, metadata, scratch, out,
                     partial_o.data() + row * shape.head_dim, partial_max.data() + row,
                     partial_sum.data() + row);
  };
  const int64_t num_items = static_cast<int64_t>(items.size());
  if (threads == 1 || num_items == 1 || total_cost * shape.head_dim <= kParallelElements) {
    for (const AttentionWork& item : items) run(item);
  } else {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < num_items; ++i) run(items[i]);
  }

  // Merge each split's partials: out = Σ o_p · e^(max_p − max) / Σ sum_p · e^(max_p − max).
  int64_t first_row = 0;
  for (const SplitRows& split : splits) {
    const int64_t rows = int64_t{split.queries} * shape.group;
    const int64_t d = shape.head_dim;
    const int64_t first_token =
        metadata.token_begin.data<int32_t>()[split.sequence] + split.first_query;
    for (int64_t r = 0; r < rows; ++r) {
      float max = -std::numeric_limits<float>::infinity();
      for (int64_t p = 0; p < split.num_partials; ++p) {
        max = std::max(max, partial_max[first_row + p * rows + r]);
      }
      float* dst = out.data<float>() +
                   ((first_token + r / shape.group) * shape.num_heads +
                    split.kv_head * shape.group + r % shape.group) * d;
      std::fill_n(dst, d, 0.0f);
      float sum = 0.0f;
      for (int64_t p = 0; p < split.num_partials; ++p) {
        const int64_t row = first_row + p * rows + r;
        const float weight = FastExp(partial_max[row] - max);
        sum += partial_sum[row] * weight;
        const float* o = partial_o.data() + row * d;
        for (int64_t e = 0; e < d; ++e) dst[e] += o[e] * weight;
      }
      const float inv_sum = 1.0f / sum;
      for (int64_t e = 0; e < d; ++e) dst[e] *= inv_sum;
    }
    first_row += split.num_partials * rows;
  }
}

}  // namespace gemmaserve::ops
