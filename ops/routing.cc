#include "ops/routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "ops/ops_util.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/moe.h"
#endif

namespace gemmaserve::ops {

void TopKRouting(const Tensor& logits, const Tensor& per_expert_scale, int64_t k,
                 Tensor& expert_ids, Tensor& weights) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (logits.device().is_cuda()) {
    return kernels::TopKRouting(logits, per_expert_scale, k, expert_ids, weights);
  }
#endif
  CheckCpuF32(logits, "TopKRouting logits");
  CheckCpuF32(per_expert_scale, "TopKRouting per_expert_scale");
  CheckCpuF32(weights, "TopKRouting weights");
  CHECK_EQ(logits.rank(), 2);
  const int64_t rows = logits.dim(0);
  const int64_t num_experts = logits.dim(1);
  CHECK(k >= 1 && k <= num_experts) << "k " << k << " of " << num_experts << " experts";
  CheckShape(per_expert_scale, {num_experts}, "TopKRouting per_expert_scale");
  CHECK(expert_ids.dtype() == DType::kI32) << expert_ids.DebugString();
  CheckShape(expert_ids, {rows, k}, "TopKRouting expert_ids");
  CheckShape(weights, {rows, k}, "TopKRouting weights");

  // Reused across calls on this thread (the hot path allocates nothing).
  thread_local std::vector<float> probs;
  thread_local std::vector<int32_t> order;
  probs.resize(num_experts);
  order.resize(num_experts);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits.data<float>() + r * num_experts;
    const float max_logit = *std::max_element(row, row + num_experts);
    float sum = 0.0f;
    for (int64_t e = 0; e < num_experts; ++e) {
      probs[e] = std::exp(row[e] - max_logit);
      sum += probs[e];
    }
    for (int64_t e = 0; e < num_experts; ++e) probs[e] /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
    });
    float top_sum = 0.0f;
    for (int64_t i = 0; i < k; ++i) top_sum += probs[order[i]];
    int32_t* ids = expert_ids.data<int32_t>() + r * k;
    float* w = weights.data<float>() + r * k;
    for (int64_t i = 0; i < k; ++i) {
      ids[i] = order[i];
      w[i] = probs[order[i]] / top_sum * per_expert_scale.data<float>()[order[i]];
    }
  }
}

}  // namespace gemmaserve::ops
