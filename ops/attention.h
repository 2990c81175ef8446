// Paged causal attention over a block-structured KV cache (DESIGN.md, "KV cache groups").
//
// Cache layout per layer: k_cache, v_cache: [num_blocks, block_stride, num_kv_heads, head_dim],
// f32 or bf16 (the KV cache dtype; bf16 halves its memory, and keys and values are rounded once,
// when written). A sequence's position p lives in physical block block_tables[s, p / block_size],
// row p % block_size, which is cache row block · block_stride + p % block_size. block_stride is
// block_size when a layer's blocks lie back to back, more when other layers' blocks lie between
// them (model/kv_cache.h: the groups share pages). Gemma 4 specifics: scores are q·k with scale 1.0 (q_norm/k_norm absorb it), no
// attention soft-cap, softmax in f32; a sliding layer lets query position q see keys
// q−W+1 … q (W keys including itself).
#pragma once

#include <cstdint>

#include "common/tensor.h"
#include "ops/rope.h"

namespace gemmaserve::ops {

// Where each sequence of a step sits in q and in the cache: one step's metadata for one KV group,
// as i32 tensors on the device of q (uploaded once per step, see model/step_metadata.h).
struct AttentionMetadata {
  Tensor token_begin;   // [S]: sequence s's tokens are rows token_begin[s] … + num_tokens[s] − 1
  Tensor num_tokens;    // [S]
  Tensor context_lens;  // [S]: the sequence's tokens in the cache, this step's included; its
                        // queries sit at positions context_len − num_tokens … context_len − 1
  Tensor block_tables;  // [S, max_blocks]: physical block per logical block; −1 past the end of a
                        // sequence and for sliding blocks freed behind the window
  int64_t max_context_len = 0;  // max over s of context_lens, known on the host (scratch sizes)
  // Tokens per block; 0: the cache's dim(1) (blocks back to back). At most the cache's dim(1).
  int64_t block_size = 0;

  int64_t num_sequences() const { return context_lens.numel(); }
};

// The keys of an attention_k_eq_v layer, rebuilt from its cached values as attention reads them,
// so that the layer's cache holds its values only. Both come from one raw projection (GEMMA4.md
// §2.5): v = v_norm(raw) and k = RoPE(k_norm(raw)), and k_norm(raw) = k_norm.weight ⊙ v_norm(raw)
// exactly (ops::RmsNorm scales by the norm, then by the weight), so the key at position p is
// RoPE_p(k_norm_weight ⊙ v), the same bits as storing it from an f32 cache (on the CPU; the
// CUDA kernel rotates as kernels::ApplyRope does).
struct KeysFromValues {
  Tensor k_norm_weight;  // [head_dim] f32, on the cache's device
  Tensor inv_freq;       // the layer's Rotary::inv_freq, on the cache's device (CUDA)
  RopeTable rope;        // the layer's Rotary::Table covering the step's max_context_len (CPU)
};

// The slot of a token that is not cached: a padding row of a batch laid out for a graph
// (model::PadForGraph).
inline constexpr int32_t kPaddingSlot = -1;

// Writes this step's keys and values into their cache slots, rounded to the cache's dtype.
// k, v: [num_tokens, num_kv_heads, head_dim] f32; slots: [num_tokens] i32, slot =
// block·block_stride + row (the cache's rows, [num_blocks · block_stride]), or kPaddingSlot for
// a token written nowhere. An undefined k_cache (a layer whose keys are rebuilt, KeysFromValues)
// writes the values only; k is not read.
void WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache,
                  Tensor& v_cache);

// A layer's attention inputs after its projections, in one pass (one CUDA kernel): q normalised
// by q_norm and rotated in place; k = RoPE(RmsNorm(k_raw, k_norm)); v = RmsNorm(v_raw) (no
// weight); then WriteKvCache(k, v, slots, k_cache, v_cache). Bitwise those ops in turn on either
// device. q: [num_tokens, num_heads, head_dim]; k_raw, v_raw (one tensor on attention_k_eq_v
// layers), k, v: [num_tokens, num_kv_heads, head_dim], all f32; positions, slots: [num_tokens]
// i32; head_dim ≤ 512.
struct AttentionInputs {
  const Tensor& q_norm;
  const Tensor& k_norm;
  float eps;
  const Rotary& rotary;
  const Tensor& positions;
  const Tensor& slots;
};
void PrepareAttention(Tensor& q, const Tensor& k_raw, const Tensor& v_raw,
                      const AttentionInputs& inputs, Tensor& k, Tensor& v, Tensor& k_cache,
                      Tensor& v_cache);

// q: [num_tokens, num_heads, head_dim] f32; out: same shape. num_heads must be a multiple of the
// cache's num_kv_heads (GQA: head h reads KV head h / (num_heads / num_kv_heads)).
// sliding_window = 0 means full causal attention.
//
// On the CPU, flash-style: the query heads of one KV head and a block of a sequence's query
// positions are processed together against each tile of keys and values, with an online softmax
// in f32, so each tile is read from the cache once per block rather than once per (position,
// head); a sliding layer reads only its window's keys; a decode over a long context splits its
// keys over the threads and merges the partial results.
//
// With `keys_from_values` k_cache is undefined and each tile's keys are rebuilt from its values.
void PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                    const AttentionMetadata& metadata, int64_t sliding_window, float scale,
                    Tensor& out, const KeysFromValues* keys_from_values = nullptr);

// The same contract on the CPU, one (position, head) row at a time: every row re-reads its
// context's keys and values. Kept as the reference PagedAttention is tested and benchmarked
// against; not on the serving path.
void PagedAttentionReference(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                             const AttentionMetadata& metadata, int64_t sliding_window,
                             float scale, Tensor& out);

}  // namespace gemmaserve::ops
