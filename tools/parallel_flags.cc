#include "tools/parallel_flags.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/weights.h"

namespace gemmaserve::tools {

void ParallelFlags::AddFlags(FlagSet& flags) {
  flags.Int("tp", &tp, "tensor-parallel ranks (worker processes): every weight is split over them");
  flags.Int("ep", &ep,
            "expert-parallel ranks, MoE models only: experts split whole, the rest as --tp");
}

absl::StatusOr<parallel::ParallelLayout> ParallelFlags::Resolve(
    const model::Gemma4Config& config, const std::string& model_dir) const {
  ASSIGN_OR_RETURN(parallel::ParallelLayout layout, parallel::ParallelLayout::Create(tp, ep));
  if (layout.ep() > 1 && !config.is_moe()) {
    return absl::InvalidArgumentError(
        absl::StrCat(layout.ToString(), ": ", model_dir, " is a dense model; use --tp"));
  }
  // Rank 0's plan divides exactly what every rank's does.
  ASSIGN_OR_RETURN(parallel::ShardPlan plan, layout.PlanFor(0));
  RETURN_IF_ERROR(model::ValidateShardPlan(config, plan));
  return layout;
}

}  // namespace gemmaserve::tools
