#include "worker/gpu_placement.h"

#include <algorithm>
#include <cstdlib>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace gemmaserve::worker {
namespace {

std::string MiB(int64_t bytes) { return absl::StrCat(bytes >> 20, " MiB"); }

}  // namespace

absl::StatusOr<int> LocalRank(int flag, int rank) {
  if (flag >= 0) return flag;
  const char* env = std::getenv("LOCAL_RANK");
  if (env == nullptr || *env == '\0') return rank;
  int value = 0;
  if (!absl::SimpleAtoi(env, &value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LOCAL_RANK=\"", env, "\" is not a non-negative integer"));
  }
  return value;
}

absl::StatusOr<std::string> WorkerDevice(const std::string& flag, int local_rank,
                                         int visible_gpus) {
  if (flag != "cuda") return flag;
  if (visible_gpus <= 0) {
    return absl::FailedPreconditionError("--device cuda: no GPU is visible to this worker");
  }
  return absl::StrCat("cuda:", local_rank % visible_gpus);
}

absl::Status CheckGpuMemoryUtilization(double utilization) {
  if (utilization > 0.0 && utilization <= 1.0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--gpu-memory-utilization ", utilization, " is not in (0, 1]"));
}

absl::StatusOr<int64_t> GpuBudget(const GpuMemoryNeeds& needs, int64_t free, int64_t total,
                                  double utilization, const std::string& device) {
  RETURN_IF_ERROR(CheckGpuMemoryUtilization(utilization));
  const int64_t allowed = static_cast<int64_t>(utilization * static_cast<double>(total));
  const int64_t budget = std::min(allowed, free);
  const int64_t needed = needs.weights + needs.workspace + kGpuReserveBytes + needs.min_kv;
  if (needed > budget) {
    return absl::ResourceExhaustedError(absl::StrCat(
        device, " cannot hold this shard: it needs ", MiB(needed), " (weights ",
        MiB(needs.weights), ", activations ", MiB(needs.workspace), ", CUDA and libraries ",
        MiB(kGpuReserveBytes), ", one KV block pair) but ", MiB(free), " of ", MiB(total),
        " are free and --gpu-memory-utilization ", utilization, " allows ", MiB(allowed)));
  }
  return budget;
}

absl::StatusOr<int64_t> GpuKvBytes(const GpuMemoryNeeds& needs, int64_t budget,
                                   int64_t free_before_load, int64_t free_after_load,
                                   const std::string& device) {
  const int64_t loaded = std::max<int64_t>(0, free_before_load - free_after_load);
  const int64_t kv = budget - loaded - needs.workspace - kGpuReserveBytes;
  if (kv < needs.min_kv) {
    return absl::ResourceExhaustedError(absl::StrCat(
        device, ": loading took ", MiB(loaded), " of a budget of ", MiB(budget),
        ", which leaves no room for activations (", MiB(needs.workspace),
        ") and one KV block pair; raise --gpu-memory-utilization or use more GPUs"));
  }
  return kv;
}

bool EveryRankHasItsOwnGpu(const std::vector<std::string>& placements) {
  return std::set<std::string>(placements.begin(), placements.end()).size() == placements.size();
}

}  // namespace gemmaserve::worker
