// ParallelLayout: how one model replica is split over its ranks, as `--tp N` or `--ep N` asks for
// it (DESIGN.md, "Parallelism for Gemma 4"). Every weight outside the experts is tensor-parallel
// over all world_size ranks either way; the two differ only in the experts of a MoE model:
//   --tp N  each expert is sliced by intermediate unit over the N ranks, like a dense MLP;
//   --ep N  each rank holds num_experts / N whole experts.
// At most one of them exceeds 1. The layout is the one place the world size and the expert
// sharding are derived: the commands build it from their flags, the coordinator sends it to the
// workers (ClusterConfig tp_size, ep_size), and each worker gets its ShardPlan from it.
//
// A value type, immutable once built.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/shard_plan.h"

namespace gemmaserve::parallel {

class ParallelLayout {
 public:
  // One rank holding everything.
  ParallelLayout() = default;
  // INVALID_ARGUMENT naming the flags unless both are at least 1 and at most one exceeds 1.
  static absl::StatusOr<ParallelLayout> Create(int64_t tp, int64_t ep);

  int tp() const { return tp_; }  // --tp: ranks that slice every weight, experts included
  int ep() const { return ep_; }  // --ep: ranks the experts are split over whole (1 = not split)
  int world_size() const { return tp_ > ep_ ? tp_ : ep_; }
  ExpertSharding expert_sharding() const {
    return ep_ > 1 ? ExpertSharding::kExpertParallel : ExpertSharding::kTensorParallel;
  }

  // What rank `rank` holds; INVALID_ARGUMENT unless 0 ≤ rank < world_size.
  absl::StatusOr<ShardPlan> PlanFor(int rank) const;

  // The flags that ask for this layout: "--tp 2", "--ep 4" ("--tp 1" for a single rank).
  std::string ToString() const;
  bool operator==(const ParallelLayout& other) const = default;

 private:
  ParallelLayout(int tp, int ep) : tp_(tp), ep_(ep) {}

  int tp_ = 1;
  int ep_ = 1;
};

}  // namespace gemmaserve::parallel
