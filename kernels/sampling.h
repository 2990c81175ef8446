// The CUDA executor of sampling::RowPlan (ops/sampling_math.h), behind ops::BatchSampler. One
// block per row: it copies and penalises the row where the plan has penalties, finds the row's
// maximum and first argmax, selects its most likely tokens exactly (a radix select on the logits'
// bits, ties to the lower id, then a bitonic sort in shared memory) for top-k and top logprobs,
// and draws with the CPU sampler's own functions: the id-order draw's chunk sums in parallel, each
// summed as the CPU sums it, then the walk over them by one thread; the candidates' draw by one
// thread. So the GPU chooses the token the CPU chooses; only ids and logprobs leave the device.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"
#include "ops/sampling_math.h"

namespace gemmaserve::kernels {

// The most candidates (plan.candidates) and top logprobs (plan.num_top) a row may ask of the GPU:
// they are sorted in a block's shared memory. ops::BatchSampler samples other rows on the host.
inline constexpr int32_t kMaxDeviceTopK = 1024;

struct DeviceSamples {
  std::vector<int32_t> token_ids;   // [rows]
  std::vector<float> logprobs;      // [rows]
  int32_t max_num_top = 0;          // the largest plan.num_top
  std::vector<int32_t> top_ids;     // [rows, max_num_top]; a row's first num_top are set
  std::vector<float> top_logprobs;  // [rows, max_num_top]
};

class DeviceSampler {
 public:
  // Executes plans[r] on row plans[r].row of `logits` ([rows, vocab] f32 on a GPU); a plan's
  // penalties are penalties[penalty_begin, + penalty_count). Every plan's candidates and num_top
  // must be ≤ kMaxDeviceTopK. Blocks until the results are on the host.
  DeviceSamples Sample(const Tensor& logits, const std::vector<sampling::RowPlan>& plans,
                       const std::vector<sampling::PenaltyEntry>& penalties);

 private:
  Tensor buffer_;  // on the logits' GPU: plans, penalties, scratch rows, chunk sums, results
};

}  // namespace gemmaserve::kernels
