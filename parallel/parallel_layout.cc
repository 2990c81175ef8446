#include "parallel/parallel_layout.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace gemmaserve::parallel {

absl::StatusOr<ParallelLayout> ParallelLayout::Create(int64_t tp, int64_t ep) {
  const int64_t kMax = std::numeric_limits<int>::max();
  if (tp < 1 || ep < 1 || tp > kMax || ep > kMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp ", tp, " --ep ", ep, ": each must be at least 1"));
  }
  if (tp > 1 && ep > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp ", tp, " --ep ", ep, ": give one of them; the other stays 1"));
  }
  return ParallelLayout(static_cast<int>(tp), static_cast<int>(ep));
}

absl::StatusOr<ShardPlan> ParallelLayout::PlanFor(int rank) const {
  return ShardPlan::Create(rank, world_size(), expert_sharding());
}

std::string ParallelLayout::ToString() const {
  return ep_ > 1 ? absl::StrCat("--ep ", ep_) : absl::StrCat("--tp ", tp_);
}

}  // namespace gemmaserve::parallel
