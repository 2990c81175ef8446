// CUDA kernels of ops/routing.h and ops/moe.h, same contracts. Routing is one thread per token
// (softmax over all experts, top-k by repeated selection, ties to the lower id, as the CPU);
// dispatch is ops/moe_dispatch.h's counting sort on one thread (the step's (token, choice) pairs
// are at most tokens × k), and its offsets come back to the host once (GroupedLinear's grouped
// cuBLAS call takes them there); combine is a block per token.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace gemmaserve::kernels {

void TopKRouting(const Tensor& logits, const Tensor& per_expert_scale, int64_t k,
                 Tensor& expert_ids, Tensor& weights);

int64_t MoeDispatch(const Tensor& expert_ids, const Tensor& local_expert, Tensor& dispatched_tokens,
                    Tensor& dispatched_rows, Tensor& expert_offsets, Tensor& expert_counts);

void MoeCombine(const Tensor& y, const Tensor& expert_ids, const Tensor& weights,
                const Tensor& dispatched_rows, Tensor& out);

}  // namespace gemmaserve::kernels
