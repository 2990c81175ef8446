// Element-wise ops on f32 tensors of equal shape.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace gemmaserve::ops {

// x += y
void AddInPlace(Tensor& x, const Tensor& y);
// x *= scale
void ScaleInPlace(Tensor& x, float scale);
// x = cap · tanh(x / cap): Gemma 4's final logit soft-capping (cap 30).
void SoftcapInPlace(Tensor& x, float cap);
// out[i, :] = table[ids[i], :] · scale. table: [vocab, dim] f32; out: [num_ids, dim] f32.
// Ids must already be validated against the vocabulary.
void EmbeddingLookup(const Tensor& table, const int32_t* ids, float scale, Tensor& out);

}  // namespace gemmaserve::ops
