// The tensor-core prefill attention over a bf16 paged cache (attention_internal.h). A block of
// four warps takes one KV head and a tile of kRows query rows of one sequence: kRows / group
// consecutive tokens × the group's query heads, which read the same keys. It walks the tile's
// keys kKeys at a time (ascending, through the block table): stages K and V in shared memory
// (K rebuilt from V for values-only caches, rounded to bf16 as the cache would hold it), computes
// S = Q·Kᵀ with WMMA bf16 16×16×16 products accumulating in f32, updates each row's online
// softmax in f32 (causal and window masks per row), and adds P·V (P rounded to bf16) into the f32
// output tile held in shared memory. The output is divided by each row's sum at the end.
#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>

#include "kernels/attention_internal.h"
#include "kernels/cuda_util.h"

namespace gemmaserve::kernels::internal {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kRows = 32;     // query rows of a tile
constexpr int kKeys = 32;     // keys staged at a time
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kFragment = 16;  // WMMA tiles are 16 × 16 × 16
// Steps of fewer tokens, or fewer a sequence on average (decodes), take the SIMT kernel (split
// over keys when it decodes few sequences).
constexpr int64_t kMinTokens = 64;
constexpr int64_t kMinTokensPerSequence = 4;

// The shared memory of a tile of head_dim D: byte offsets, in this order, each 32-byte aligned
// (as WMMA's loads and stores need).
template <int D>
struct SharedLayout {
  static constexpr size_t kQ = 0;                                 // [kRows][D] bf16
  static constexpr size_t kK = kQ + size_t{kRows} * D * 2;        // [kKeys][D] bf16
  static constexpr size_t kV = kK + size_t{kKeys} * D * 2;        // [kKeys][D] bf16
  static constexpr size_t kO = kV + size_t{kKeys} * D * 2;        // [kRows][D] f32
  static constexpr size_t kS = kO + size_t{kRows} * D * 4;        // [kRows][kKeys] f32
  static constexpr size_t kP = kS + size_t{kRows} * kKeys * 4;    // [kRows][kKeys] bf16
  static constexpr size_t kRow = kP + size_t{kRows} * kKeys * 2;  // max, sum, scale: [kRows] f32
  static constexpr size_t kBytes = kRow + 3 * size_t{kRows} * 4;
};

template <int D, bool kKeysFromValues>
__global__ void __launch_bounds__(kThreads, 1)
    PrefillKernel(const float* q, const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache,
                  Metadata metadata, int64_t num_heads, int64_t num_kv_heads,
                  int64_t sliding_window, float scale, KeyRebuild rebuild, float* out) {
  static_assert(D % kFragment == 0 && D >= 32 && D <= 512, "head_dim");
  extern __shared__ __align__(128) unsigned char shared[];
  using Layout = SharedLayout<D>;
  __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(shared + Layout::kQ);
  __nv_bfloat16* ks = reinterpret_cast<__nv_bfloat16*>(shared + Layout::kK);
  __nv_bfloat16* vs = reinterpret_cast<__nv_bfloat16*>(shared + Layout::kV);
  float* os = reinterpret_cast<float*>(shared + Layout::kO);
  float* ss = reinterpret_cast<float*>(shared + Layout::kS);
  __nv_bfloat16* ps = reinterpret_cast<__nv_bfloat16*>(shared + Layout::kP);
  float* row_max = reinterpret_cast<float*>(shared + Layout::kRow);
  float* row_sum = row_max + kRows;
  float* row_scale = row_sum + kRows;

  const int64_t sequence = blockIdx.x;
  const int64_t kv_head = blockIdx.z;
  const int64_t group = num_heads / num_kv_heads;
  const int64_t tokens_per_tile = kRows / group;  // group ≤ 32 = kRows
  const int64_t seq_tokens = metadata.num_tokens[sequence];
  const int64_t first_token = blockIdx.y * tokens_per_tile;  // within the sequence
  if (first_token >= seq_tokens) return;
  const int64_t tile_tokens = min(tokens_per_tile, seq_tokens - first_token);
  const int64_t token_begin = metadata.token_begin[sequence];
  // Position of the sequence's first token in this step.
  const int64_t position0 = metadata.context_lens[sequence] - seq_tokens;
  const int32_t* table = metadata.block_tables + sequence * metadata.max_blocks;
  const int64_t last_key = position0 + first_token + tile_tokens - 1;
  const int64_t first_key =
      sliding_window > 0 ? max(int64_t{0}, position0 + first_token - sliding_window + 1) : 0;

  // Row r: token first_token + r / group of the tile, query head kv_head · group + r % group.
  const int rows = static_cast<int>(tile_tokens * group);  // the valid rows: 0 … rows − 1

  // Q rounded to bf16 (rows past the tile's tokens: zeros); O, max and sum cleared.
  for (int i = threadIdx.x; i < kRows * D; i += kThreads) {
    const int r = i / D;
    const int d = i % D;
    float value = 0.0f;
    if (r < rows) {
      const int64_t token = token_begin + first_token + r / group;
      const int64_t head = kv_head * group + r % group;
      value = q[(token * num_heads + head) * D + d];
    }
    qs[i] = __float2bfloat16_rn(value);
    os[i] = 0.0f;
  }
  for (int r = threadIdx.x; r < kRows; r += kThreads) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.0f;
  }
  __syncthreads();

  const int warp = threadIdx.x / 32;
  for (int64_t key0 = first_key; key0 <= last_key; key0 += kKeys) {
    // Stage V, then K (stored, or rebuilt from the staged V), 8 bf16 (16 bytes) at a time.
    constexpr int kChunks = D / 8;
    for (int i = threadIdx.x; i < kKeys * kChunks; i += kThreads) {
      const int j = i / kChunks;
      const int c = i % kChunks;
      const int64_t p = key0 + j;
      uint4 v = make_uint4(0, 0, 0, 0);
      uint4 k = make_uint4(0, 0, 0, 0);
      if (p <= last_key) {
        const int64_t slot = static_cast<int64_t>(table[p / metadata.block_size]) *
                                 metadata.block_stride +
                             p % metadata.block_size;
        const int64_t offset = (slot * num_kv_heads + kv_head) * D + c * 8;
        v = *reinterpret_cast<const uint4*>(v_cache + offset);
        if constexpr (!kKeysFromValues) k = *reinterpret_cast<const uint4*>(k_cache + offset);
      }
      reinterpret_cast<uint4*>(vs + j * D)[c] = v;
      if constexpr (!kKeysFromValues) reinterpret_cast<uint4*>(ks + j * D)[c] = k;
    }
    if constexpr (kKeysFromValues) {
      __syncthreads();
      // k = RoPE_p(k_norm ⊙ v), dims d and d + D/2 rotated together (as kernels::ApplyRope).
      constexpr int kHalf = D / 2;
      for (int i = threadIdx.x; i < kKeys * kHalf; i += kThreads) {
        const int j = i / kHalf;
        const int d = i % kHalf;
        float a = __fmul_rn(__bfloat162float(vs[j * D + d]), rebuild.k_norm_weight[d]);
        float b = __fmul_rn(__bfloat162float(vs[j * D + d + kHalf]), rebuild.k_norm_weight[d + kHalf]);
        if (d < rebuild.angles) {
          float sin_value, cos_value;
          sincosf(__fmul_rn(static_cast<float>(key0 + j), rebuild.inv_freq[d]), &sin_value,
                  &cos_value);
          const float rotated_a = __fsub_rn(__fmul_rn(a, cos_value), __fmul_rn(b, sin_value));
          b = __fadd_rn(__fmul_rn(b, cos_value), __fmul_rn(a, sin_value));
          a = rotated_a;
        }
        ks[j * D + d] = __float2bfloat16_rn(a);
        ks[j * D + d + kHalf] = __float2bfloat16_rn(b);
      }
    }
    __syncthreads();

    // S = Q · Kᵀ: warp w takes the 16 × 16 block (w / 2, w % 2) of the 32 × 32 scores.
    {
      const int block_row = warp / 2;
      const int block_col = warp % 2;
      wmma::fragment<wmma::accumulator, kFragment, kFragment, kFragment, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < D; kk += kFragment) {
        wmma::fragment<wmma::matrix_a, kFragment, kFragment, kFragment, __nv_bfloat16,
                       wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, kFragment, kFragment, kFragment, __nv_bfloat16,
                       wmma::col_major> b;  // Kᵀ: K's rows are its columns
        wmma::load_matrix_sync(a, qs + block_row * kFragment * D + kk, D);
        wmma::load_matrix_sync(b, ks + block_col * kFragment * D + kk, D);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(ss + block_row * kFragment * kKeys + block_col * kFragment, acc,
                              kKeys, wmma::mem_row_major);
    }
    __syncthreads();

    // The online softmax, one thread per row: masked scores are -inf; P in bf16.
    for (int r = threadIdx.x; r < kRows; r += kThreads) {
      const int64_t position = position0 + first_token + r / group;
      const int64_t lowest =
          sliding_window > 0 ? max(int64_t{0}, position - sliding_window + 1) : 0;
      float tile_max = -INFINITY;
      for (int j = 0; j < kKeys; ++j) {
        const int64_t p = key0 + j;
        const bool seen = r < rows && p <= position && p >= lowest && p <= last_key;
        const float score = seen ? ss[r * kKeys + j] * scale : -INFINITY;
        ss[r * kKeys + j] = score;
        tile_max = fmaxf(tile_max, score);
      }
      const float new_max = fmaxf(row_max[r], tile_max);
      // Nothing seen yet: the output is still zero, so any factor does; no exp(-inf + inf).
      const float correction = new_max == -INFINITY ? 1.0f : expf(row_max[r] - new_max);
      float sum = 0.0f;
      for (int j = 0; j < kKeys; ++j) {
        const float weight = new_max == -INFINITY ? 0.0f : expf(ss[r * kKeys + j] - new_max);
        sum += weight;
        ps[r * kKeys + j] = __float2bfloat16_rn(weight);
      }
      row_sum[r] = row_sum[r] * correction + sum;
      row_max[r] = new_max;
      row_scale[r] = correction;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kRows * D; i += kThreads) os[i] *= row_scale[i / D];
    __syncthreads();

    // O += P · V: the 2 × D/16 output blocks, warp w taking columns w, w + 4, ...
    for (int block_col = warp; block_col < D / kFragment; block_col += kWarps) {
      for (int block_row = 0; block_row < kRows / kFragment; ++block_row) {
        wmma::fragment<wmma::accumulator, kFragment, kFragment, kFragment, float> acc;
        float* o_block = os + block_row * kFragment * D + block_col * kFragment;
        wmma::load_matrix_sync(acc, o_block, D, wmma::mem_row_major);
        for (int kk = 0; kk < kKeys; kk += kFragment) {
          wmma::fragment<wmma::matrix_a, kFragment, kFragment, kFragment, __nv_bfloat16,
                         wmma::row_major> a;
          wmma::fragment<wmma::matrix_b, kFragment, kFragment, kFragment, __nv_bfloat16,
                         wmma::row_major> b;
          wmma::load_matrix_sync(a, ps + block_row * kFragment * kKeys + kk, kKeys);
          wmma::load_matrix_sync(b, vs + kk * D + block_col * kFragment, D);
          wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(o_block, acc, D, wmma::mem_row_major);
      }
    }
    __syncthreads();
  }

  for (int i = threadIdx.x; i < kRows * D; i += kThreads) {
    const int r = i / D;
    if (r >= rows) continue;
    const int64_t token = token_begin + first_token + r / group;
    const int64_t head = kv_head * group + r % group;
    out[(token * num_heads + head) * D + i % D] = os[i] / row_sum[r];
  }
}

template <int D, bool kKeysFromValues>
void Launch(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
            const Metadata& metadata, int64_t sliding_window, float scale,
            const KeyRebuild& rebuild, Tensor& out) {
  const int64_t num_tokens = q.dim(0);
  const int64_t num_heads = q.dim(1);
  const int64_t num_kv_heads = v_cache.dim(2);
  const int64_t tokens_per_tile = kRows / (num_heads / num_kv_heads);
  // Tiles per sequence: as many as the longest sequence of the step could need.
  const dim3 grid(static_cast<unsigned>(metadata.num_sequences),
                  static_cast<unsigned>((num_tokens + tokens_per_tile - 1) / tokens_per_tile),
                  static_cast<unsigned>(num_kv_heads));
  const size_t bytes = SharedLayout<D>::kBytes;
  auto* kernel = &PrefillKernel<D, kKeysFromValues>;
  GS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(bytes)));
  kernel<<<grid, kThreads, bytes, internal::Stream()>>>(
      q.data<float>(),
      kKeysFromValues ? nullptr : static_cast<const __nv_bfloat16*>(k_cache.raw_data()),
      static_cast<const __nv_bfloat16*>(v_cache.raw_data()), metadata, num_heads, num_kv_heads,
      sliding_window, scale, rebuild, out.data<float>());
  GS_CUDA_CHECK_LAUNCH("PagedAttention (tensor cores)");
}

}  // namespace

bool PrefillOnTensorCores(const Tensor& q, const Tensor& v_cache, int64_t num_sequences) {
  const int64_t head_dim = q.dim(2);
  const bool supported = head_dim == 32 || head_dim == 64 || head_dim == 128 ||
                         head_dim == 256 || head_dim == 512;
  const int64_t tokens = q.dim(0);
  return supported && v_cache.dtype() == DType::kBF16 && q.dim(1) / v_cache.dim(2) <= kRows &&
         tokens >= kMinTokens && tokens >= kMinTokensPerSequence * num_sequences;
}

void LaunchPrefillOnTensorCores(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                const Metadata& metadata, int64_t sliding_window, float scale,
                                const KeyRebuild* rebuild, Tensor& out) {
  CHECK(PrefillOnTensorCores(q, v_cache, metadata.num_sequences))
      << "PagedAttention (tensor cores): " << q.DebugString() << " over " << v_cache.DebugString();
  const bool rebuilt = rebuild != nullptr;
  const KeyRebuild keys = rebuilt ? *rebuild : KeyRebuild{};
#define GS_PREFILL_CASE(dim)                                                               \
  case dim:                                                                                \
    if (rebuilt) {                                                                         \
      Launch<dim, true>(q, k_cache, v_cache, metadata, sliding_window, scale, keys, out);  \
    } else {                                                                               \
      Launch<dim, false>(q, k_cache, v_cache, metadata, sliding_window, scale, keys, out);  \
    }                                                                                      \
    break;
  switch (q.dim(2)) {
    GS_PREFILL_CASE(32)
    GS_PREFILL_CASE(64)
    GS_PREFILL_CASE(128)
    GS_PREFILL_CASE(256)
    GS_PREFILL_CASE(512)
    default:
      CHECK(false) << "PagedAttention (tensor cores): head_dim " << q.dim(2);
  }
#undef GS_PREFILL_CASE
}

}  // namespace gemmaserve::kernels::internal
