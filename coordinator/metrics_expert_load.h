// ExpertLoadMetrics: how a MoE model's routed tokens fall on its experts and, under expert
// parallelism, on the ranks that run those experts. Rank 0 counts, per step, the tokens routed to
// every (layer, expert) and returns them in StepResult.expert_counts; the coordinator records them
// here, so its /metrics alone shows the whole model's expert load.
//
// Exported through Collect (a prometheus::Collectable, beside the owner's registry):
//   gemmaserve_moe_expert_tokens_total{layer, expert}  counter, one series per layer × expert
//   gemmaserve_moe_rank_tokens_total{layer, rank}      counter, tokens routed to experts the rank
//                                                       holds (through the placement map)
//   gemmaserve_moe_balancedness{layer}                 gauge in (0, 1]: mean ÷ max tokens per rank
//                                                       over the last window_steps steps
//   gemmaserve_moe_balancedness{layer="all"}           gauge in (0, 1]: Σ_layers mean ÷
//                                                       Σ_layers max, same window
//
// Why these definitions: under expert parallelism every rank waits for the busiest one at each
// layer, so a layer's expert time follows its max tokens per rank while the work done follows its
// mean. mean/max is then the fraction of that layer's expert time spent on useful work (1 when
// every rank gets the same tokens, 1/ep_size when one rank gets them all). The whole-model value
// Σ mean / Σ max is the same fraction for the whole forward: ideal expert time over actual. It is
// not the mean of per-layer values; since every layer routes the same number of tokens, it is
// their harmonic mean, which weights the worst layers more. A window with no tokens reads 1.
// With ep_size 1 (dense experts or tensor-parallel experts) every balancedness is 1.
//
// Cost: Record is O(num_layers × num_experts) integer additions under one mutex and allocates
// nothing: about 14 µs for the 30 × 128 counts of a 26B-A4B step (tests/coordinator/
// metrics_bench.cc). That is why the totals are plain integers exposed by Collect rather than
// prometheus::Counter objects, whose atomic increments on ~4,000 scattered series cost three
// times as much per step.
//
// Thread-safety: Record and Collect may be called from any thread; all state is guarded by mu_.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "gemmaserve/internal/v1/worker.pb.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace gemmaserve::coordinator {

// The MoE layout the expert-load metrics describe.
struct MoeGeometry {
  // MoE layers, numbered 0..num_layers−1 as in ExpertCounts.layer. 0: a dense model, no MoE series.
  int num_layers = 0;
  int num_experts = 0;  // routed experts per layer
  int ep_size = 1;      // ranks the experts are spread over; 1 when experts are not split whole
  // expert → the rank that runs it, [num_experts]. Empty: contiguous, rank r holds experts
  // [r·E/W, (r+1)·E/W) (parallel::ShardPlan::Experts), which needs ep_size to divide num_experts.
  std::vector<int> expert_to_rank;
  // Balancedness covers the latest window_steps steps that carried expert counts. Memory:
  // window_steps × num_layers × ep_size int64s (100 × 30 × 8 × 8 B = 192 KB for the 26B-A4B).
  int window_steps = 100;
};

// INVALID_ARGUMENT naming the field unless the geometry is consistent (sizes, ranks in range).
absl::Status ValidateMoeGeometry(const MoeGeometry& geometry);

// Rank r holds experts [r·E/W, (r+1)·E/W); ep_size must divide num_experts.
std::vector<int> ContiguousExpertPlacement(int num_experts, int ep_size);

class ExpertLoadMetrics final : public prometheus::Collectable {
 public:
  // `geometry` must be valid (ValidateMoeGeometry; CHECKed) and have num_layers > 0.
  explicit ExpertLoadMetrics(const MoeGeometry& geometry);

  ExpertLoadMetrics(const ExpertLoadMetrics&) = delete;
  ExpertLoadMetrics& operator=(const ExpertLoadMetrics&) = delete;

  // Adds one step's routing counts (StepResult.expert_counts). An empty list records nothing and
  // does not advance the window. INVALID_ARGUMENT, recording nothing, when an entry names a layer
  // outside [0, num_layers), has other than num_experts counts, or a negative count: the data came
  // from another process, so it is checked rather than trusted.
  absl::Status Record(
      const google::protobuf::RepeatedPtrField<internal::v1::ExpertCounts>& counts)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The three MoE families, current values.
  std::vector<prometheus::MetricFamily> Collect() const override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Status Validate(
      const google::protobuf::RepeatedPtrField<internal::v1::ExpertCounts>& counts) const;
  prometheus::MetricFamily CollectBalancedness() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int num_layers_;
  const int num_experts_;
  const int ep_size_;
  const int window_steps_;
  const std::vector<int> expert_to_rank_;  // [num_experts]

  const std::vector<std::string> numbers_;  // "0", "1", …: label values, made once

  mutable absl::Mutex mu_;
  std::vector<int64_t> expert_tokens_ ABSL_GUARDED_BY(mu_);  // [num_layers × num_experts], totals
  std::vector<int64_t> rank_tokens_ ABSL_GUARDED_BY(mu_);    // [num_layers × ep_size], totals
  // Tokens per (layer, rank) of each step in the window, a ring:
  // [window_steps][num_layers × ep_size].
  std::vector<int64_t> window_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> window_sum_ ABSL_GUARDED_BY(mu_);  // [num_layers × ep_size], Σ over the ring
  int next_slot_ ABSL_GUARDED_BY(mu_) = 0;                // ring slot the next step overwrites
};

}  // namespace gemmaserve::coordinator
