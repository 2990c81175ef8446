// Where a GPU worker runs and how much of its GPU it takes: the device a rank picks, the memory
// plan behind --gpu-memory-utilization (vLLM's meaning: the share of the GPU's total memory this
// worker may hold, weights, activations and KV cache together), and whether the ranks of a
// replica each have a GPU of their own (NCCL) or share one (Gloo, staged through host memory).
// Pure functions of what the worker measured, so they are tested without a GPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gemmaserve::worker {

// The rank's position among the workers on its machine: `flag` when ≥ 0, else the LOCAL_RANK
// environment variable (torchrun's, and what the Helm chart sets), else `rank`.
absl::StatusOr<int> LocalRank(int flag, int rank);

// The --device of a worker as a concrete device: "cpu" and "cuda:N" stay; "cuda" becomes
// "cuda:<local_rank mod visible GPUs>" (CUDA_VISIBLE_DEVICES decides which GPUs are visible).
absl::StatusOr<std::string> WorkerDevice(const std::string& flag, int local_rank,
                                         int visible_gpus);

// OK for a --gpu-memory-utilization in (0, 1]; INVALID_ARGUMENT naming the value otherwise.
absl::Status CheckGpuMemoryUtilization(double utilization);

// What a GPU worker needs and has, bytes.
struct GpuMemoryNeeds {
  int64_t weights = 0;    // its shard, prepared for the device (model::PreparedShardBytes)
  int64_t workspace = 0;  // the step's activations (Gemma4Model::WorkspaceBytes)
  int64_t min_kv = 0;     // two KV pages: a cache that holds nothing serves nothing
};
inline constexpr int64_t kGpuReserveBytes = int64_t{512} << 20;  // CUDA context, cuBLAS, NCCL

// The bytes this worker may hold on a GPU of `total` bytes with `free` bytes free before it
// allocates anything: utilization × total, and never more than is free. RESOURCE_EXHAUSTED,
// naming every number, when `needs` (plus kGpuReserveBytes) is more than that; INVALID_ARGUMENT
// for a utilization outside (0, 1].
absl::StatusOr<int64_t> GpuBudget(const GpuMemoryNeeds& needs, int64_t free, int64_t total,
                                  double utilization, const std::string& device);

// The KV cache's bytes once the weights are loaded: the budget less what loading took
// (free_before_load − free_after_load: the weights and whatever the libraries allocated), the
// workspace and the reserve. RESOURCE_EXHAUSTED if that leaves less than needs.min_kv.
absl::StatusOr<int64_t> GpuKvBytes(const GpuMemoryNeeds& needs, int64_t budget,
                                   int64_t free_before_load, int64_t free_after_load,
                                   const std::string& device);

// Each rank's "host/GPU uuid", in rank order: true when no two are the same GPU (NCCL between
// them), false when some ranks share one (NCCL cannot put two ranks on one GPU).
bool EveryRankHasItsOwnGpu(const std::vector<std::string>& placements);

}  // namespace gemmaserve::worker
