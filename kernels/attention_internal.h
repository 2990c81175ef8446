// What the paged attention kernels' files share (internal to kernels/): the step's metadata as
// the kernels read it, the key rebuild of values-only caches, and the tensor-core prefill kernel
// (attention_prefill.cu) that kernels::PagedAttention hands prefill steps to.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace gemmaserve::kernels::internal {

struct Metadata {
  const int32_t* token_begin;
  const int32_t* num_tokens;
  const int32_t* context_lens;
  const int32_t* block_tables;  // [S, max_blocks]
  int64_t num_sequences;
  int64_t max_blocks;
  int64_t block_size;       // tokens per block
  int64_t block_stride;     // cache rows from one block to the next (the cache's dim(1))
  int64_t max_context_len;  // the most keys a token sees, an upper bound (sizes the splits)
};

// Keys rebuilt from values (ops::KeysFromValues): k = RoPE_p(k_norm_weight ⊙ v).
struct KeyRebuild {
  const float* k_norm_weight;  // [head_dim]
  const float* inv_freq;       // [angles]
  int64_t angles;
};

#if defined(__CUDACC__)
// The sequence a step's token belongs to, or -1 (rows outside every sequence are left alone).
__device__ inline int64_t SequenceOf(int64_t token, const int32_t* token_begin,
                                     const int32_t* num_tokens, int64_t num_sequences) {
  int64_t sequence = -1;
  for (int64_t s = 0; s < num_sequences; ++s) {
    const int64_t begin = token_begin[s];
    if (token >= begin && token < begin + num_tokens[s]) sequence = s;
  }
  return sequence;
}
#endif

// Whether a step's attention over a bf16 cache goes to the tensor cores: a prefill or prefill
// chunk (64 tokens or more, 4 a sequence on average), a head_dim they take (32, 64, 128, 256,
// 512) and a GQA group of at most 32.
bool PrefillOnTensorCores(const Tensor& q, const Tensor& v_cache, int64_t num_sequences);

// Attention over a bf16 cache with bf16 tensor-core products (q rounded to bf16, f32
// accumulation, the probabilities rounded to bf16 for P·V): a flash-attention tile of 32 query
// rows of one KV head against 32 keys at a time. `rebuild` null: keys stored in k_cache.
void LaunchPrefillOnTensorCores(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                const Metadata& metadata, int64_t sliding_window, float scale,
                                const KeyRebuild* rebuild, Tensor& out);

}  // namespace gemmaserve::kernels::internal
