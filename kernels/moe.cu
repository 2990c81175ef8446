#include "kernels/moe.h"

#include "kernels/cuda_util.h"
#include "ops/moe_dispatch.h"

namespace gemmaserve::kernels {
namespace {

using internal::Blocks;
using internal::CheckDType;
using internal::UseDeviceOf;

constexpr int kMaxTopK = 64;

// One thread per token. Each probability is recomputed where it is needed, from the same
// expressions, so every comparison sees the same value.
__global__ void TopKRoutingKernel(const float* logits, const float* per_expert_scale,
                                  int64_t num_tokens, int64_t num_experts, int64_t k,
                                  int32_t* expert_ids, float* weights) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= num_tokens) return;
  const float* row = logits + t * num_experts;
  float max_logit = row[0];
  for (int64_t e = 1; e < num_experts; ++e) max_logit = fmaxf(max_logit, row[e]);
  float sum = 0.0f;
  for (int64_t e = 0; e < num_experts; ++e) sum = __fadd_rn(sum, expf(row[e] - max_logit));
  int32_t chosen[kMaxTopK];
  float probability[kMaxTopK];
  float top_sum = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    int32_t best = -1;
    float best_p = -1.0f;
    for (int64_t e = 0; e < num_experts; ++e) {
      bool taken = false;
      for (int64_t j = 0; j < i; ++j) taken = taken || chosen[j] == e;
      const float p = __fdiv_rn(expf(row[e] - max_logit), sum);
      if (!taken && p > best_p) {  // strictly greater: ties keep the lower id
        best = static_cast<int32_t>(e);
        best_p = p;
      }
    }
    chosen[i] = best;
    probability[i] = best_p;
    top_sum = __fadd_rn(top_sum, best_p);
  }
  for (int64_t i = 0; i < k; ++i) {
    expert_ids[t * k + i] = chosen[i];
    weights[t * k + i] = __fmul_rn(__fdiv_rn(probability[i], top_sum), per_expert_scale[chosen[i]]);
  }
}

// The counting sort on one thread (the step's pairs are at most tokens × k), as the CPU runs it.
__global__ void DispatchKernel(const int32_t* ids, const int32_t* local, int64_t num_pairs,
                               int64_t k, int64_t num_local, int32_t* tokens, int32_t* rows,
                               int32_t* offsets, unsigned long long* counts) {
  moe_dispatch::SortByLocalExpert(ids, local, num_pairs, k, num_local, tokens, rows, offsets,
                                  counts);
}

// One block per token: its choices sorted by expert id (thread 0), then each thread a slice of
// the hidden dimension, adding the weighted rows in that order from 0 as the CPU does.
__global__ void CombineKernel(const float* y, const int32_t* ids, const float* weights,
                              const int32_t* rows, int64_t k, int64_t hidden, float* out) {
  __shared__ int32_t order[kMaxTopK];
  const int64_t t = blockIdx.x;
  const int32_t* token_ids = ids + t * k;
  if (threadIdx.x == 0) {
    for (int64_t j = 0; j < k; ++j) order[j] = static_cast<int32_t>(j);
    for (int64_t j = 1; j < k; ++j) {
      for (int64_t i = j; i > 0 && token_ids[order[i]] < token_ids[order[i - 1]]; --i) {
        const int32_t swap = order[i];
        order[i] = order[i - 1];
        order[i - 1] = swap;
      }
    }
  }
  __syncthreads();
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    float sum = 0.0f;
    for (int64_t i = 0; i < k; ++i) {
      const int32_t row = rows[t * k + order[i]];
      if (row < 0) continue;
      sum = __fadd_rn(sum, __fmul_rn(weights[t * k + order[i]], y[row * hidden + h]));
    }
    out[t * hidden + h] = sum;
  }
}

}  // namespace

void TopKRouting(const Tensor& logits, const Tensor& per_expert_scale, int64_t k,
                 Tensor& expert_ids, Tensor& weights) {
  UseDeviceOf({&logits, &per_expert_scale, &expert_ids, &weights}, "TopKRouting");
  CheckDType(logits, DType::kF32, "TopKRouting logits");
  CheckDType(per_expert_scale, DType::kF32, "TopKRouting per_expert_scale");
  CheckDType(expert_ids, DType::kI32, "TopKRouting expert_ids");
  CheckDType(weights, DType::kF32, "TopKRouting weights");
  CHECK_EQ(logits.rank(), 2);
  const int64_t rows = logits.dim(0);
  const int64_t num_experts = logits.dim(1);
  CHECK(k >= 1 && k <= num_experts && k <= kMaxTopK)
      << "k " << k << " of " << num_experts << " experts";
  CHECK(per_expert_scale.numel() == num_experts && expert_ids.numel() == rows * k &&
        weights.numel() == rows * k)
      << "TopKRouting: " << per_expert_scale.DebugString() << ", " << expert_ids.DebugString();
  if (rows == 0) return;
  TopKRoutingKernel<<<Blocks(rows, 128), 128, 0, internal::Stream()>>>(
      logits.data<float>(), per_expert_scale.data<float>(), rows, num_experts, k,
      expert_ids.data<int32_t>(), weights.data<float>());
  GS_CUDA_CHECK_LAUNCH("TopKRouting");
}

int64_t MoeDispatch(const Tensor& expert_ids, const Tensor& local_expert, Tensor& dispatched_tokens,
                    Tensor& dispatched_rows, Tensor& expert_offsets, Tensor& expert_counts) {
  UseDeviceOf({&expert_ids, &local_expert, &dispatched_tokens, &dispatched_rows, &expert_offsets,
               &expert_counts},
              "MoeDispatch");
  for (const Tensor* t : std::initializer_list<const Tensor*>{
           &expert_ids, &local_expert, &dispatched_tokens, &dispatched_rows, &expert_offsets}) {
    CheckDType(*t, DType::kI32, "MoeDispatch");
  }
  CheckDType(expert_counts, DType::kI64, "MoeDispatch expert_counts");
  CHECK_EQ(expert_ids.rank(), 2);
  const int64_t num_pairs = expert_ids.numel();
  const int64_t num_local = expert_offsets.numel() - 1;
  CHECK(num_local >= 0 && dispatched_tokens.numel() >= num_pairs &&
        dispatched_rows.numel() == num_pairs && expert_counts.numel() == local_expert.numel())
      << "MoeDispatch: " << expert_ids.DebugString() << ", " << expert_offsets.DebugString();
  DispatchKernel<<<1, 1, 0, internal::Stream()>>>(
      expert_ids.data<int32_t>(), local_expert.data<int32_t>(), num_pairs, expert_ids.dim(1),
      num_local, dispatched_tokens.data<int32_t>(), dispatched_rows.data<int32_t>(),
      expert_offsets.data<int32_t>(),
      reinterpret_cast<unsigned long long*>(expert_counts.data<int64_t>()));
  GS_CUDA_CHECK_LAUNCH("MoeDispatch");
  int32_t num_rows = 0;
  GS_CUDA_CHECK(cudaMemcpy(&num_rows, expert_offsets.data<int32_t>() + num_local, sizeof(num_rows),
                           cudaMemcpyDeviceToHost));
  return num_rows;
}

void MoeCombine(const Tensor& y, const Tensor& expert_ids, const Tensor& weights,
                const Tensor& dispatched_rows, Tensor& out) {
  UseDeviceOf({&y, &expert_ids, &weights, &dispatched_rows, &out}, "MoeCombine");
  CheckDType(y, DType::kF32, "MoeCombine y");
  CheckDType(expert_ids, DType::kI32, "MoeCombine expert_ids");
  CheckDType(weights, DType::kF32, "MoeCombine weights");
  CheckDType(dispatched_rows, DType::kI32, "MoeCombine dispatched_rows");
  CheckDType(out, DType::kF32, "MoeCombine out");
  CHECK_EQ(expert_ids.rank(), 2);
  const int64_t num_tokens = expert_ids.dim(0);
  const int64_t k = expert_ids.dim(1);
  const int64_t hidden = out.dim(-1);
  CHECK(k <= kMaxTopK && weights.numel() == num_tokens * k &&
        dispatched_rows.numel() == num_tokens * k && out.numel() == num_tokens * hidden &&
        y.rank() == 2 && y.dim(1) == hidden)
      << "MoeCombine: " << y.DebugString() << " into " << out.DebugString();
  if (num_tokens == 0) return;
  CombineKernel<<<static_cast<unsigned>(num_tokens), 256, 0, internal::Stream()>>>(
      y.data<float>(), expert_ids.data<int32_t>(), weights.data<float>(),
      dispatched_rows.data<int32_t>(), k, hidden, out.data<float>());
  GS_CUDA_CHECK_LAUNCH("MoeCombine");
}

}  // namespace gemmaserve::kernels
