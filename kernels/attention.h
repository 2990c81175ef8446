// The CUDA kernels of ops/attention.h: WriteKvCache and PagedAttention with the same contracts
// (f32 or bf16 KV cache, the same metadata tensors, sliding windows inclusive, GQA).
//
// First-pass attention: one block per (query token, KV head), one warp per query head of that KV
// head's group; each warp walks the token's visible keys in order, keeping an online softmax in
// f32 (running max, sum and the weighted value sum in registers: head_dim / 32 floats per lane).
// Blocks before a sliding window are never read. Correct for head dims 32 … 512 and GQA groups
// 1 … 8 (more heads per KV head run as more warps, up to 32); the fast tensor-core kernel is the
// GPU serving work's. Keys rebuilt from values (ops::KeysFromValues) need head_dim ≥ 64: each
// lane rotates its own pairs of dims in registers.
#pragma once

#include <cstdint>

#include "common/tensor.h"
#include "ops/attention.h"

namespace gemmaserve::kernels {

// One block of 256 threads per row of q, k and v: each row's norm as kernels::RmsNorm computes
// it, the rotation as kernels::ApplyRope, the store as WriteKvCache: bitwise those in turn.
void PrepareAttention(Tensor& q, const Tensor& k_raw, const Tensor& v_raw, const Tensor& q_norm,
                      const Tensor& k_norm, float eps, const Tensor& inv_freq,
                      const Tensor& positions, const Tensor& slots, Tensor& k, Tensor& v,
                      Tensor& k_cache, Tensor& v_cache);

void WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache,
                  Tensor& v_cache);

void PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                    const ops::AttentionMetadata& metadata, int64_t sliding_window, float scale,
                    Tensor& out, const ops::KeysFromValues* keys_from_values);

}  // namespace gemmaserve::kernels
