// Mixture-of-experts routing as Gemma 4 does it (GEMMA4.md §2.7): softmax over all experts, take
// the top k, renormalise the k weights to sum 1, multiply each by its expert's per_expert_scale.
// Softmax, not sigmoid; no expert bias or grouping.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace gemmaserve::ops {

// logits: [rows, num_experts] f32; per_expert_scale: [num_experts] f32;
// expert_ids: [rows, k] i32 (by descending probability before per_expert_scale, ties to the
// lower id); weights: [rows, k] f32.
void TopKRouting(const Tensor& logits, const Tensor& per_expert_scale, int64_t k,
                 Tensor& expert_ids, Tensor& weights);

}  // namespace gemmaserve::ops
