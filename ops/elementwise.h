// Element-wise ops on f32 tensors of equal shape.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace gemmaserve::ops {

// x = 0 (any dtype).
void SetZero(Tensor& x);
// x += y
void AddInPlace(Tensor& x, const Tensor& y);
// x *= scale
void ScaleInPlace(Tensor& x, float scale);
// x[r, i] = x[r, i] · w[i] · scale (in that order). x: [rows, dim] f32; w: [dim] f32.
void MultiplyInPlace(Tensor& x, const Tensor& w, float scale);
// x = cap · tanh(x / cap): Gemma 4's final logit soft-capping (cap 30).
void SoftcapInPlace(Tensor& x, float cap);
// out[i, :] = table[ids[i] − first_row, :] · scale. table: [rows, dim] f32 (row-major, or packed
// as a Linear weight: the embedding is also the tied LM head) holding vocabulary rows
// [first_row, first_row + rows); ids: [num_ids] i32; out: [num_ids, dim] f32. An id outside those
// rows gives a zero row: that is how a vocab-parallel shard contributes nothing for ids another
// rank holds. Ids must already be validated against the whole vocabulary.
void EmbeddingLookup(const Tensor& table, const Tensor& ids, float scale, Tensor& out,
                     int64_t first_row = 0);

}  // namespace gemmaserve::ops
