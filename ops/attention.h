// Paged causal attention over a block-structured KV cache (DESIGN.md, "KV cache groups").
//
// Cache layout per layer: k_cache, v_cache: [num_blocks, block_size, num_kv_heads, head_dim] f32.
// A sequence's position p lives in physical block block_table[p / block_size], row
// p % block_size. Gemma 4 specifics: scores are q·k with scale 1.0 (q_norm/k_norm absorb it), no
// attention soft-cap, softmax in f32; a sliding layer lets query position q see keys
// q−W+1 … q (W keys including itself).
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"

namespace gemmaserve::ops {

// One sequence's part of a step: its tokens are rows [token_begin, token_begin + num_tokens) of q
// and out, at positions context_len − num_tokens … context_len − 1 (the cache already holds them).
struct AttentionSpan {
  int64_t token_begin = 0;
  int64_t num_tokens = 0;
  int64_t context_len = 0;
  const int32_t* block_table = nullptr;  // [ceil(context_len / block_size)] physical block ids
};

// Writes this step's keys and values into their cache slots.
// k, v: [num_tokens, num_kv_heads, head_dim] f32; slots: [num_tokens], slot = block·block_size + row.
void WriteKvCache(const Tensor& k, const Tensor& v, const int64_t* slots, Tensor& k_cache,
                  Tensor& v_cache);

// q: [num_tokens, num_heads, head_dim] f32; out: same shape. num_heads must be a multiple of the
// cache's num_kv_heads (GQA: head h reads KV head h / (num_heads / num_kv_heads)).
// sliding_window = 0 means full causal attention.
void PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                    const std::vector<AttentionSpan>& spans, int64_t sliding_window, float scale,
                    Tensor& out);

}  // namespace gemmaserve::ops
