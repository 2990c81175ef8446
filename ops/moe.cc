#include "ops/moe.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "ops/copy.h"
#include "ops/linear.h"
#include "ops/moe_dispatch.h"
#include "ops/ops_util.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/linear.h"
#include "kernels/moe.h"
#endif

namespace gemmaserve::ops {
Tensor ExpertMatrix(const Tensor& stacked, int64_t l) {
  return stacked.Slice(l, l + 1).View(Shape(stacked.shape().begin() + 1, stacked.shape().end()));
}

int64_t ExpertInFeatures(const Tensor& stacked) {
  return LinearInFeatures(ExpertMatrix(stacked, 0));
}

int64_t ExpertOutFeatures(const Tensor& stacked) {
  return LinearOutFeatures(ExpertMatrix(stacked, 0));
}

int64_t MoeDispatch(const Tensor& expert_ids, const Tensor& local_expert, Tensor& dispatched_tokens,
                    Tensor& dispatched_rows, Tensor& expert_offsets, Tensor& expert_counts) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (expert_ids.device().is_cuda()) {
    return kernels::MoeDispatch(expert_ids, local_expert, dispatched_tokens, dispatched_rows,
                                expert_offsets, expert_counts);
  }
#endif
  CheckCpuI32(expert_ids, "MoeDispatch expert_ids");
  CheckCpuI32(local_expert, "MoeDispatch local_expert");
  CheckCpuI32(dispatched_tokens, "MoeDispatch dispatched_tokens");
  CheckCpuI32(dispatched_rows, "MoeDispatch dispatched_rows");
  CheckCpuI32(expert_offsets, "MoeDispatch expert_offsets");
  CHECK(expert_counts.device().is_cpu() && expert_counts.dtype() == DType::kI64)
      << "MoeDispatch expert_counts: expected i64, got " << expert_counts.DebugString();
  CHECK_EQ(expert_ids.rank(), 2);
  const int64_t num_tokens = expert_ids.dim(0);
  const int64_t k = expert_ids.dim(1);
  const int64_t num_experts = local_expert.numel();
  const int64_t num_local = expert_offsets.numel() - 1;
  CHECK_GE(num_local, 0);
  CHECK_GE(dispatched_tokens.numel(), num_tokens * k) << dispatched_tokens.DebugString();
  CheckShape(dispatched_rows, {num_tokens * k}, "MoeDispatch dispatched_rows");
  CheckShape(expert_counts, {num_experts}, "MoeDispatch expert_counts");

  const int32_t* ids = expert_ids.data<int32_t>();
  const int32_t* local = local_expert.data<int32_t>();
  for (int64_t i = 0; i < num_tokens * k; ++i) {
    CHECK(ids[i] >= 0 && ids[i] < num_experts) << "MoeDispatch: expert " << ids[i] << " of "
                                               << num_experts;
    CHECK_LT(local[ids[i]], num_local) << "MoeDispatch: local expert " << local[ids[i]] << " of "
                                       << num_local;
  }
  int32_t* offsets = expert_offsets.data<int32_t>();
  moe_dispatch::SortByLocalExpert(ids, local, num_tokens * k, k, num_local,
                                  dispatched_tokens.data<int32_t>(), dispatched_rows.data<int32_t>(),
                                  offsets, expert_counts.data<int64_t>());
  return offsets[num_local];
}

void GroupedLinear(const Tensor& x, const Tensor& w, const Tensor& expert_offsets, Tensor& y) {
  CHECK(expert_offsets.dtype() == DType::kI32) << "GroupedLinear: " << expert_offsets.DebugString();
  const int64_t num_local = expert_offsets.numel() - 1;
  CHECK(num_local >= 0 && w.dim(0) == num_local)
      << "GroupedLinear: " << w.DebugString() << " for " << num_local << " experts";
  // The groups' bounds steer the loop on the host: read them there (one small copy on a GPU, into
  // storage kept for the next call).
  const int32_t* offsets = expert_offsets.data<int32_t>();
  if (!expert_offsets.device().is_cpu()) {
    thread_local std::vector<int32_t> host_offsets;
    host_offsets.resize(num_local + 1);
    Tensor host = Tensor::BorrowVector(host_offsets);
    Copy(expert_offsets, host);
    offsets = host_offsets.data();
  }
  CHECK(offsets[0] == 0 && offsets[num_local] == x.dim(0) && y.dim(0) == x.dim(0))
      << "GroupedLinear: offsets end at " << offsets[num_local] << " for x " << x.DebugString()
      << ", y " << y.DebugString();
  for (int64_t l = 0; l < num_local; ++l) {
    CHECK_LE(offsets[l], offsets[l + 1]) << "GroupedLinear: offsets not ascending at " << l;
  }
  if (x.device().is_cpu()) return LinearPerGroup(x, w, offsets, y);
#ifdef GEMMASERVE_HAVE_CUDA
  // bf16 experts: one grouped cuBLAS call where cuBLAS takes it, else one product per expert.
  if (w.dtype() == DType::kBF16 && kernels::GroupedLinearBf16(x, w, offsets, y)) return;
#endif
  for (int64_t l = 0; l < num_local; ++l) {
    if (offsets[l] == offsets[l + 1]) continue;
    Tensor rows_out = y.Slice(offsets[l], offsets[l + 1]);
    Linear(x.Slice(offsets[l], offsets[l + 1]), ExpertMatrix(w, l), rows_out);
  }
}

void MoeCombine(const Tensor& y, const Tensor& expert_ids, const Tensor& weights,
                const Tensor& dispatched_rows, Tensor& out) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (out.device().is_cuda()) {
    return kernels::MoeCombine(y, expert_ids, weights, dispatched_rows, out);
  }
#endif
  CheckCpuF32(y, "MoeCombine y");
  CheckCpuI32(expert_ids, "MoeCombine expert_ids");
  CheckCpuF32(weights, "MoeCombine weights");
  CheckCpuI32(dispatched_rows, "MoeCombine dispatched_rows");
  CheckCpuF32(out, "MoeCombine out");
  CHECK_EQ(expert_ids.rank(), 2);
  const int64_t num_tokens = expert_ids.dim(0);
  const int64_t k = expert_ids.dim(1);
  const int64_t hidden = out.dim(-1);
  CHECK_LE(k, 64) << "MoeCombine: top-" << k;
  CheckShape(weights, {num_tokens, k}, "MoeCombine weights");
  CheckShape(dispatched_rows, {num_tokens * k}, "MoeCombine dispatched_rows");
  CheckShape(out, {num_tokens, hidden}, "MoeCombine out");
  CHECK(y.rank() == 2 && y.dim(1) == hidden) << "MoeCombine y: " << y.DebugString();
  for (int64_t t = 0; t < num_tokens; ++t) {
    // This token's choices by ascending expert id (k is small: insertion sort).
    std::array<int64_t, 64> order;
    for (int64_t j = 0; j < k; ++j) order[j] = j;
    const int32_t* ids = expert_ids.data<int32_t>() + t * k;
    for (int64_t j = 1; j < k; ++j) {
      for (int64_t i = j; i > 0 && ids[order[i]] < ids[order[i - 1]]; --i) {
        std::swap(order[i], order[i - 1]);
      }
    }
    float* dst = out.data<float>() + t * hidden;
    std::memset(dst, 0, hidden * sizeof(float));
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = order[i];
      const int32_t row = dispatched_rows.data<int32_t>()[t * k + j];
      if (row < 0) continue;
      CHECK_LT(row, y.dim(0)) << "MoeCombine: row " << row << " of " << y.DebugString();
      const float weight = weights.data<float>()[t * k + j];
      const float* src = y.data<float>() + row * hidden;
      for (int64_t h = 0; h < hidden; ++h) dst[h] += weight * src[h];
    }
  }
}

}  // namespace gemmaserve::ops
