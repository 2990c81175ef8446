#include "tools/parallel_flags.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/weights.h"
#include "spdlog/spdlog.h"

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

void PrepareLocalWorkerThreads(int64_t workers, int64_t threads) {
  int64_t cores = std::thread::hardware_concurrency();
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) cores = CPU_COUNT(&allowed);
  if (cores <= 0 || workers * threads <= cores) return;
  const bool passive = std::getenv("OMP_WAIT_POLICY") == nullptr;
  if (passive) setenv("OMP_WAIT_POLICY", "passive", /*overwrite=*/0);
  spdlog::warn("{} workers × {} threads is more compute threads than the {} cores here: {}; "
               "--threads {} keeps them within the cores",
               workers, threads, cores,
               passive ? "their OpenMP threads wait passively (OMP_WAIT_POLICY=passive)"
                       : "OMP_WAIT_POLICY is left as set",
               std::max<int64_t>(1, cores / workers));
}

}  // namespace gemmaserve::tools
