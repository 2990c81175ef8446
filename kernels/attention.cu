#include "kernels/attention.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <initializer_list>
#include <map>
#include <mutex>
#include <type_traits>

#include "kernels/attention_internal.h"
#include "kernels/cuda_util.h"

namespace gemmaserve::kernels {
namespace {

using internal::CheckDType;
using internal::KeyRebuild;
using internal::Metadata;
using internal::SequenceOf;
using internal::UseDeviceOf;

__device__ inline float Load(const float* p) { return *p; }
__device__ inline float Load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ inline void Store(float value, float* p) { *p = value; }
__device__ inline void Store(float value, __nv_bfloat16* p) { *p = __float2bfloat16_rn(value); }

// One block per token; threads over its row of K (unless k_cache is null) and of V. Slot −1: none.
template <typename T>
__global__ void WriteKvKernel(const float* k, const float* v, const int32_t* slots, T* k_cache,
                              T* v_cache, int64_t row) {
  const int64_t slot = slots[blockIdx.x];
  if (slot < 0) return;  // a padding row: not cached
  const float* k_row = k + blockIdx.x * row;
  const float* v_row = v + blockIdx.x * row;
  for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
    if (k_cache != nullptr) Store(k_row[i], k_cache + slot * row + i);
    Store(v_row[i], v_cache + slot * row + i);
  }
}

// The widest head PrepareAttentionKernel normalises (Gemma 4's full layers).
constexpr int64_t kMaxPreparedHeadDim = 512;
constexpr int kPrepareThreads = 256;  // RmsNorm's block size: the same sums of squares

// Grid (num_tokens, num_heads + 2 · num_kv_heads): block (t, r) takes token t's row r of q, then
// k, then v. The row is normalised as RmsNormKernel does, rotated (q, k) as RopeKernel does, then
// stored: q in place, k and v to their outputs and (unless the cache is null or the slot −1) to
// the cache slot.
template <typename T>
__global__ void __launch_bounds__(kPrepareThreads)
    PrepareAttentionKernel(float* q, const float* k_raw, const float* v_raw, const float* q_norm,
                           const float* k_norm, float eps, const float* inv_freq, int64_t angles,
                           const int32_t* positions, const int32_t* slots, float* k, float* v,
                           T* k_cache, T* v_cache, int64_t num_heads, int64_t num_kv_heads,
                           int64_t head_dim) {
  const int64_t token = blockIdx.x;
  int64_t r = blockIdx.y;
  const float* src;
  float* dst;
  const float* weight = nullptr;
  T* cache = nullptr;
  bool rotate = true;
  const int64_t kv_row = num_kv_heads * head_dim;
  if (r < num_heads) {
    src = dst = q + (token * num_heads + r) * head_dim;
    weight = q_norm;
  } else if ((r -= num_heads) < num_kv_heads) {
    src = k_raw + token * kv_row + r * head_dim;
    dst = k + token * kv_row + r * head_dim;
    weight = k_norm;
    if (k_cache != nullptr && slots[token] >= 0) {
      cache = k_cache + slots[token] * kv_row + r * head_dim;
    }
  } else {
    r -= num_kv_heads;
    src = v_raw + token * kv_row + r * head_dim;
    dst = v + token * kv_row + r * head_dim;
    if (slots[token] >= 0) cache = v_cache + slots[token] * kv_row + r * head_dim;
    rotate = false;
  }
  __shared__ float row[kMaxPreparedHeadDim];
  const float inv_rms = internal::InverseRms(src, head_dim, eps);
  for (int64_t i = threadIdx.x; i < head_dim; i += blockDim.x) {
    const float normed = __fmul_rn(src[i], inv_rms);
    row[i] = weight == nullptr ? normed : __fmul_rn(normed, weight[i]);
  }
  __syncthreads();
  if (rotate) {  // each pair (j, j + half) is one thread's
    const float position = static_cast<float>(positions[token]);
    const int64_t half = head_dim / 2;
    for (int64_t j = threadIdx.x; j < angles; j += blockDim.x) {
      float sin_value, cos_value;
      sincosf(__fmul_rn(position, inv_freq[j]), &sin_value, &cos_value);
      const float a = row[j];
      const float b = row[j + half];
      row[j] = __fsub_rn(__fmul_rn(a, cos_value), __fmul_rn(b, sin_value));
      row[j + half] = __fadd_rn(__fmul_rn(b, cos_value), __fmul_rn(a, sin_value));
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < head_dim; i += blockDim.x) {
    dst[i] = row[i];
    if (cache != nullptr) Store(row[i], cache + i);
  }
}

// Split-KV decoding (flash-decoding): when a step has too few (token, KV head) pairs to fill the
// GPU, each pair's keys are cut into `num_splits` consecutive runs of equal length (the token's
// own keys divided, so any split count covers them), one block each; a block leaves its
// unnormalised output, running max and sum in `Partials`, and CombineSplitsKernel merges them.
// num_splits = 1: no partials, the block writes the output.
struct Partials {
  float* out = nullptr;  // [tokens, heads, splits, head_dim]
  float* max = nullptr;  // [tokens, heads, splits]
  float* sum = nullptr;  // [tokens, heads, splits]
  int64_t num_splits = 1;
};

// Grid (num_tokens, num_kv_heads); blockDim.x = 32 · group (one warp per query head). Lane l
// holds dims l, l + 32, … of its head: kDim / 32 of q and of the running output. With
// kKeysFromValues, k_cache is unused: each key is rebuilt in registers from the value the lane
// loads anyway; dim j pairs with j + kDim / 2, which lies in the same lane (kDim ≥ 64).
template <int kDim, typename T, bool kKeysFromValues>
__global__ void PagedAttentionKernel(const float* q, const T* k_cache, const T* v_cache,
                                     Metadata metadata, int64_t num_heads, int64_t num_kv_heads,
                                     int64_t sliding_window, float scale, KeyRebuild rebuild,
                                     Partials partials, float* out) {
  constexpr int kPerLane = kDim / 32;
  static_assert(!kKeysFromValues || kPerLane % 2 == 0, "rotation pairs must share a lane");
  const int64_t token = blockIdx.x;
  const int64_t sequence = SequenceOf(token, metadata.token_begin, metadata.num_tokens,
                                      metadata.num_sequences);
  if (sequence < 0) return;
  const int64_t context_len = metadata.context_lens[sequence];
  const int64_t position =
      context_len - metadata.num_tokens[sequence] + (token - metadata.token_begin[sequence]);
  int64_t first = sliding_window > 0 ? max(int64_t{0}, position - sliding_window + 1) : 0;
  int64_t last = position;
  if (partials.num_splits > 1) {  // this block's run of keys; past the last key, none
    const int64_t run = (last - first + partials.num_splits) / partials.num_splits;
    first += blockIdx.z * run;
    last = min(last, first + run - 1);
  }
  const int32_t* table = metadata.block_tables + sequence * metadata.max_blocks;

  const int64_t kv_head = blockIdx.y;
  const int64_t group = num_heads / num_kv_heads;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t head = kv_head * group + warp;
  const float* q_head = q + (token * num_heads + head) * kDim;
  float q_lane[kPerLane];
  float acc[kPerLane];
  float weight_lane[kPerLane];  // k_norm's weight, when keys are rebuilt
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    q_lane[i] = q_head[lane + 32 * i];
    acc[i] = 0.0f;
    weight_lane[i] = kKeysFromValues ? rebuild.k_norm_weight[lane + 32 * i] : 0.0f;
  }
  float running_max = -INFINITY;
  float running_sum = 0.0f;
  for (int64_t p = first; p <= last; ++p) {
    const int64_t slot = static_cast<int64_t>(table[p / metadata.block_size]) *
                             metadata.block_stride +
                         p % metadata.block_size;
    const T* value = v_cache + (slot * num_kv_heads + kv_head) * kDim;
    float v_lane[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) v_lane[i] = Load(value + lane + 32 * i);
    float key_lane[kPerLane];
    if constexpr (kKeysFromValues) {
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) key_lane[i] = __fmul_rn(v_lane[i], weight_lane[i]);
      // Rotated as kernels::ApplyRope rotates (rounded the same way, no fused multiply-adds).
      const float angle_position = static_cast<float>(p);
#pragma unroll
      for (int i = 0; i < kPerLane / 2; ++i) {
        const int64_t j = lane + 32 * i;
        if (j >= rebuild.angles) continue;
        float sin_value, cos_value;
        sincosf(__fmul_rn(angle_position, rebuild.inv_freq[j]), &sin_value, &cos_value);
        const float a = key_lane[i];
        const float b = key_lane[i + kPerLane / 2];
        key_lane[i] = __fsub_rn(__fmul_rn(a, cos_value), __fmul_rn(b, sin_value));
        key_lane[i + kPerLane / 2] = __fadd_rn(__fmul_rn(b, cos_value), __fmul_rn(a, sin_value));
      }
    } else {
      const T* key = k_cache + (slot * num_kv_heads + kv_head) * kDim;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) key_lane[i] = Load(key + lane + 32 * i);
    }
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) dot = fmaf(q_lane[i], key_lane[i], dot);
    for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    const float score = dot * scale;
    const float new_max = fmaxf(running_max, score);
    const float correction = expf(running_max - new_max);  // 0 on the first key
    const float weight = expf(score - new_max);
    running_sum = running_sum * correction + weight;
    running_max = new_max;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) acc[i] = fmaf(weight, v_lane[i], acc[i] * correction);
  }
  if (partials.num_splits > 1) {
    const int64_t at = (token * num_heads + head) * partials.num_splits + blockIdx.z;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) partials.out[at * kDim + lane + 32 * i] = acc[i];
    if (lane == 0) {
      partials.max[at] = running_max;  // -inf and 0 for a run past the last key
      partials.sum[at] = running_sum;
    }
    return;
  }
  float* out_head = out + (token * num_heads + head) * kDim;
  const float inverse = 1.0f / running_sum;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) out_head[lane + 32 * i] = acc[i] * inverse;
}

// Grid (num_tokens, num_heads): one block merges a head's runs, each weighted by
// exp(its max − the overall max), as the online softmax would have.
__global__ void CombineSplitsKernel(Metadata metadata, int64_t num_heads, int64_t head_dim,
                                    Partials partials, float* out) {
  const int64_t token = blockIdx.x;
  if (SequenceOf(token, metadata.token_begin, metadata.num_tokens, metadata.num_sequences) < 0) {
    return;
  }
  const int64_t row = token * num_heads + blockIdx.y;
  const float* maxima = partials.max + row * partials.num_splits;
  const float* sums = partials.sum + row * partials.num_splits;
  float overall = -INFINITY;
  for (int64_t s = 0; s < partials.num_splits; ++s) overall = fmaxf(overall, maxima[s]);
  float total = 0.0f;
  for (int64_t s = 0; s < partials.num_splits; ++s) total += expf(maxima[s] - overall) * sums[s];
  const float inverse = 1.0f / total;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float value = 0.0f;
    for (int64_t s = 0; s < partials.num_splits; ++s) {
      value += expf(maxima[s] - overall) *
               partials.out[(row * partials.num_splits + s) * head_dim + d];
    }
    out[row * head_dim + d] = value * inverse;
  }
}

// Runs of at least this many keys; at most this many runs.
constexpr int64_t kMinKeysPerSplit = 32;
constexpr int64_t kMaxSplits = 64;

// How many runs to cut each (token, KV head)'s keys into: enough blocks for two per SM, when the
// step's pairs are fewer (decoding a few sequences); 1 otherwise (prefill, large batches).
int64_t SplitsFor(int64_t pairs, int64_t span, int sms) {
  const int64_t wanted_blocks = 2 * static_cast<int64_t>(sms);
  if (pairs <= 0 || pairs >= wanted_blocks) return 1;
  const int64_t by_blocks = (wanted_blocks + pairs - 1) / pairs;
  const int64_t by_keys = (span + kMinKeysPerSplit - 1) / kMinKeysPerSplit;
  return std::max<int64_t>(1, std::min({by_blocks, by_keys, kMaxSplits}));
}

int MultiprocessorCount(int ordinal) {
  static std::mutex mutex;
  static std::map<int, int> counts;
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, added] = counts.try_emplace(ordinal, 0);
  if (added) {
    GS_CUDA_CHECK(cudaDeviceGetAttribute(&it->second, cudaDevAttrMultiProcessorCount, ordinal));
  }
  return it->second;
}

// The split partials' memory on a device, made once at its bound and never moved (the stream
// orders its uses; one thread drives a device's forward pass). Splitting needs pairs < 2 · SMs
// and makes at most ⌈2 · SMs / pairs⌉ runs, so pairs × runs < 4 · SMs; each pair has at most 32
// query heads (the GQA bound) of at most 512 dims, plus their max and sum. 35 MB on an H200.
float* SplitScratch(const Device& device, int sms) {
  static std::mutex mutex;
  static std::map<int, Tensor> buffers;
  std::lock_guard<std::mutex> lock(mutex);
  Tensor& buffer = buffers[device.ordinal];
  if (!buffer.defined()) {
    const int64_t rows = 4 * int64_t{sms} * 32;
    buffer = Tensor::Empty(DType::kF32, {rows * (512 + 2)}, device);
  }
  return buffer.data<float>();
}

template <typename T, bool kKeysFromValues>
void LaunchAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                     const Metadata& metadata, int64_t sliding_window, float scale,
                     const KeyRebuild& rebuild, Tensor& out) {
  const int64_t num_tokens = q.dim(0);
  const int64_t num_heads = q.dim(1);
  const int64_t head_dim = q.dim(2);
  const int64_t num_kv_heads = v_cache.dim(2);
  const int64_t span = sliding_window > 0 ? std::min(sliding_window, metadata.max_context_len)
                                          : metadata.max_context_len;
  Partials partials;
  const int sms = MultiprocessorCount(q.device().ordinal);
  partials.num_splits = SplitsFor(num_tokens * num_kv_heads, span, sms);
  if (partials.num_splits > 1) {
    const int64_t rows = num_tokens * num_heads * partials.num_splits;
    CHECK(num_heads / num_kv_heads <= 32 && head_dim <= 512 &&
          num_tokens * num_kv_heads * partials.num_splits < 4 * int64_t{sms})
        << "PagedAttention: split partials beyond SplitScratch's bound";
    float* scratch = SplitScratch(q.device(), sms);
    partials.out = scratch;
    partials.max = scratch + rows * head_dim;
    partials.sum = partials.max + rows;
  }
  const dim3 grid(static_cast<unsigned>(num_tokens), static_cast<unsigned>(num_kv_heads),
                  static_cast<unsigned>(partials.num_splits));
  const unsigned threads = static_cast<unsigned>(32 * (num_heads / num_kv_heads));
  const T* k = kKeysFromValues ? nullptr : static_cast<const T*>(k_cache.raw_data());
  const T* v = static_cast<const T*>(v_cache.raw_data());
#define GS_ATTENTION_CASE(dim)                                                                    \
  case dim:                                                                                       \
    PagedAttentionKernel<dim, T, kKeysFromValues><<<grid, threads, 0, internal::Stream()>>>(      \
        q.data<float>(), k, v, metadata, num_heads, num_kv_heads, sliding_window, scale, rebuild, \
        partials, out.data<float>());                                                             \
    break;
  switch (head_dim) {
    GS_ATTENTION_CASE(64)
    GS_ATTENTION_CASE(128)
    GS_ATTENTION_CASE(256)
    GS_ATTENTION_CASE(512)
    case 32:
      if constexpr (!kKeysFromValues) {
        PagedAttentionKernel<32, T, false><<<grid, threads, 0, internal::Stream()>>>(
            q.data<float>(), k, v, metadata, num_heads, num_kv_heads, sliding_window, scale,
            rebuild, partials, out.data<float>());
        break;
      }
      [[fallthrough]];
    default:
      CHECK(false) << "PagedAttention: head_dim " << head_dim << " has no CUDA kernel (32"
                   << (kKeysFromValues ? " with stored keys" : "") << ", 64, 128, 256, 512)";
  }
#undef GS_ATTENTION_CASE
  GS_CUDA_CHECK_LAUNCH("PagedAttention");
  if (partials.num_splits > 1) {
    CombineSplitsKernel<<<dim3(static_cast<unsigned>(num_tokens), static_cast<unsigned>(num_heads)),
                          128, 0, internal::Stream()>>>(metadata, num_heads, head_dim, partials,
                                                        out.data<float>());
    GS_CUDA_CHECK_LAUNCH("PagedAttention combine");
  }
}

template <typename T>
void LaunchAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                     const Metadata& metadata, int64_t sliding_window, float scale,
                     const ops::KeysFromValues* keys_from_values, Tensor& out) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (internal::PrefillOnTensorCores(q, v_cache, metadata.num_sequences)) {
      KeyRebuild rebuild{};
      if (keys_from_values != nullptr) {
        rebuild = {keys_from_values->k_norm_weight.data<float>(),
                   keys_from_values->inv_freq.data<float>(), keys_from_values->inv_freq.numel()};
      }
      internal::LaunchPrefillOnTensorCores(q, k_cache, v_cache, metadata, sliding_window, scale,
                                           keys_from_values != nullptr ? &rebuild : nullptr, out);
      return;
    }
  }
  if (keys_from_values == nullptr) {
    LaunchAttention<T, false>(q, k_cache, v_cache, metadata, sliding_window, scale, KeyRebuild{},
                              out);
    return;
  }
  const KeyRebuild rebuild{keys_from_values->k_norm_weight.data<float>(),
                           keys_from_values->inv_freq.data<float>(),
                           keys_from_values->inv_freq.numel()};
  LaunchAttention<T, true>(q, k_cache, v_cache, metadata, sliding_window, scale, rebuild, out);
}

void CheckKvCache(const Tensor& cache, const char* what) {
  CHECK(cache.dtype() == DType::kF32 || cache.dtype() == DType::kBF16)
      << what << ": KV cache must be f32 or bf16, got " << cache.DebugString();
  CHECK_EQ(cache.rank(), 4) << what << ": " << cache.DebugString();
}

}  // namespace

void PrepareAttention(Tensor& q, const Tensor& k_raw, const Tensor& v_raw, const Tensor& q_norm,
                      const Tensor& k_norm, float eps, const Tensor& inv_freq,
                      const Tensor& positions, const Tensor& slots, Tensor& k, Tensor& v,
                      Tensor& k_cache, Tensor& v_cache) {
  const bool keys = k_cache.defined();
  UseDeviceOf({&q, &k_raw, &v_raw, &q_norm, &k_norm, &inv_freq, &positions, &slots, &k, &v,
               &v_cache},
              "PrepareAttention");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&q, &k_raw, &v_raw, &q_norm, &k_norm,
                                                              &inv_freq, &k, &v}) {
    CheckDType(*t, DType::kF32, "PrepareAttention");
  }
  CheckDType(positions, DType::kI32, "PrepareAttention positions");
  CheckDType(slots, DType::kI32, "PrepareAttention slots");
  CheckKvCache(v_cache, "PrepareAttention v_cache");
  if (keys) {
    UseDeviceOf({&q, &k_cache}, "PrepareAttention");
    CheckKvCache(k_cache, "PrepareAttention k_cache");
    CHECK(k_cache.shape() == v_cache.shape() && k_cache.dtype() == v_cache.dtype())
        << "PrepareAttention: keys " << k_cache.DebugString() << ", values "
        << v_cache.DebugString();
  }
  CHECK(q.rank() == 3 && k_raw.rank() == 3 && k_raw.shape() == v_raw.shape() &&
        k.shape() == k_raw.shape() && v.shape() == k_raw.shape() && k_raw.dim(0) == q.dim(0) &&
        k_raw.dim(2) == q.dim(2) && v_cache.dim(2) == k_raw.dim(1) &&
        v_cache.dim(3) == q.dim(2) && positions.numel() == q.dim(0) &&
        slots.numel() == q.dim(0) && q_norm.numel() == q.dim(2) && k_norm.numel() == q.dim(2) &&
        2 * inv_freq.numel() <= q.dim(2) && q.dim(2) <= kMaxPreparedHeadDim)
      << "PrepareAttention: q " << q.DebugString() << ", k_raw " << k_raw.DebugString()
      << ", v_raw " << v_raw.DebugString() << ", k " << k.DebugString() << ", v "
      << v.DebugString() << ", cache " << v_cache.DebugString() << ", inv_freq "
      << inv_freq.DebugString();
  CHECK(k.raw_data() != k_raw.raw_data() && v.raw_data() != v_raw.raw_data() &&
        k.raw_data() != v.raw_data())
      << "PrepareAttention: k and v are written while k_raw and v_raw are read";
  const int64_t num_tokens = q.dim(0);
  if (num_tokens == 0) return;
  const dim3 grid(static_cast<unsigned>(num_tokens),
                  static_cast<unsigned>(q.dim(1) + 2 * k_raw.dim(1)));
  auto launch = [&](auto* k_cache_data, auto* v_cache_data) {
    PrepareAttentionKernel<<<grid, kPrepareThreads, 0, internal::Stream()>>>(
        q.data<float>(), k_raw.data<float>(), v_raw.data<float>(), q_norm.data<float>(),
        k_norm.data<float>(), eps, inv_freq.data<float>(), inv_freq.numel(),
        positions.data<int32_t>(), slots.data<int32_t>(), k.data<float>(), v.data<float>(),
        k_cache_data, v_cache_data, q.dim(1), k_raw.dim(1), q.dim(2));
  };
  if (v_cache.dtype() == DType::kBF16) {
    launch(keys ? k_cache.data<__nv_bfloat16>() : nullptr, v_cache.data<__nv_bfloat16>());
  } else {
    launch(keys ? k_cache.data<float>() : nullptr, v_cache.data<float>());
  }
  GS_CUDA_CHECK_LAUNCH("PrepareAttention");
}

void WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache,
                  Tensor& v_cache) {
  const bool keys = k_cache.defined();
  if (keys) {
    UseDeviceOf({&k, &v, &slots, &k_cache, &v_cache}, "WriteKvCache");
    CheckDType(k, DType::kF32, "WriteKvCache k");
    CheckKvCache(k_cache, "WriteKvCache k_cache");
    CHECK(k.shape() == v.shape() && k_cache.shape() == v_cache.shape() &&
          k_cache.dtype() == v_cache.dtype())
        << "WriteKvCache: " << k.DebugString() << ", " << v.DebugString() << " into "
        << k_cache.DebugString();
  } else {
    UseDeviceOf({&v, &slots, &v_cache}, "WriteKvCache");
  }
  CheckDType(v, DType::kF32, "WriteKvCache v");
  CheckDType(slots, DType::kI32, "WriteKvCache slots");
  CheckKvCache(v_cache, "WriteKvCache v_cache");
  CHECK(v.rank() >= 1 && slots.numel() == v.dim(0))
      << "WriteKvCache: " << v.DebugString() << " with " << slots.DebugString();
  const int64_t row = v_cache.dim(2) * v_cache.dim(3);
  CHECK_EQ(v.numel(), v.dim(0) * row) << v.DebugString() << " into " << v_cache.DebugString();
  if (v.dim(0) == 0) return;
  const unsigned blocks = static_cast<unsigned>(v.dim(0));
  const float* k_data = keys ? k.data<float>() : nullptr;
  if (v_cache.dtype() == DType::kBF16) {
    WriteKvKernel<<<blocks, 256, 0, internal::Stream()>>>(
        k_data, v.data<float>(), slots.data<int32_t>(),
        keys ? k_cache.data<__nv_bfloat16>() : nullptr, v_cache.data<__nv_bfloat16>(), row);
  } else {
    WriteKvKernel<<<blocks, 256, 0, internal::Stream()>>>(
        k_data, v.data<float>(), slots.data<int32_t>(), keys ? k_cache.data<float>() : nullptr,
        v_cache.data<float>(), row);
  }
  GS_CUDA_CHECK_LAUNCH("WriteKvCache");
}

void PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                    const ops::AttentionMetadata& metadata, int64_t sliding_window, float scale,
                    Tensor& out, const ops::KeysFromValues* keys_from_values) {
  UseDeviceOf({&q, &v_cache, &out, &metadata.token_begin, &metadata.num_tokens,
               &metadata.context_lens, &metadata.block_tables},
              "PagedAttention");
  CheckDType(q, DType::kF32, "PagedAttention q");
  CheckDType(out, DType::kF32, "PagedAttention out");
  CheckKvCache(v_cache, "PagedAttention v_cache");
  CHECK(q.rank() == 3 && q.shape() == out.shape() && v_cache.dim(3) == q.dim(2))
      << "PagedAttention: " << q.DebugString() << " over " << v_cache.DebugString();
  if (keys_from_values == nullptr) {
    UseDeviceOf({&q, &k_cache}, "PagedAttention");
    CheckKvCache(k_cache, "PagedAttention k_cache");
    CHECK(k_cache.shape() == v_cache.shape() && k_cache.dtype() == v_cache.dtype())
        << "PagedAttention: keys " << k_cache.DebugString() << ", values "
        << v_cache.DebugString();
  } else {
    const Tensor& weight = keys_from_values->k_norm_weight;
    const Tensor& inv_freq = keys_from_values->inv_freq;
    CHECK(!k_cache.defined()) << "PagedAttention: keys both stored and rebuilt from values";
    UseDeviceOf({&q, &weight, &inv_freq}, "PagedAttention");
    CheckDType(weight, DType::kF32, "PagedAttention k_norm_weight");
    CheckDType(inv_freq, DType::kF32, "PagedAttention inv_freq");
    CHECK(weight.numel() == q.dim(2) && 2 * inv_freq.numel() <= q.dim(2))
        << "PagedAttention: k_norm weight " << weight.DebugString() << " and inv_freq "
        << inv_freq.DebugString() << " for head_dim " << q.dim(2);
  }
  const int64_t num_heads = q.dim(1);
  const int64_t num_kv_heads = v_cache.dim(2);
  CHECK_EQ(num_heads % num_kv_heads, 0) << num_heads << " heads over " << num_kv_heads;
  CHECK_LE(num_heads / num_kv_heads, 32) << "PagedAttention: GQA group of "
                                         << num_heads / num_kv_heads;
  const int64_t s = metadata.num_sequences();
  CHECK(metadata.block_tables.rank() == 2 && metadata.block_tables.dim(0) == s)
      << "PagedAttention block_tables: " << metadata.block_tables.DebugString();
  if (q.dim(0) == 0 || s == 0) return;
  Metadata m{metadata.token_begin.data<int32_t>(), metadata.num_tokens.data<int32_t>(),
                   metadata.context_lens.data<int32_t>(), metadata.block_tables.data<int32_t>(),
                   s, metadata.block_tables.dim(1),
                   metadata.block_size > 0 ? metadata.block_size : v_cache.dim(1), v_cache.dim(1),
                   0};
  // Unset on the host (0): what the block tables can hold.
  m.max_context_len = metadata.max_context_len > 0 ? metadata.max_context_len
                                                   : m.max_blocks * m.block_size;
  CHECK(m.block_size > 0 && m.block_size <= m.block_stride)
      << "PagedAttention: blocks of " << m.block_size << " tokens in " << v_cache.DebugString();
  if (v_cache.dtype() == DType::kBF16) {
    LaunchAttention<__nv_bfloat16>(q, k_cache, v_cache, m, sliding_window, scale,
                                   keys_from_values, out);
  } else {
    LaunchAttention<float>(q, k_cache, v_cache, m, sliding_window, scale, keys_from_values, out);
  }
}

}  // namespace gemmaserve::kernels
