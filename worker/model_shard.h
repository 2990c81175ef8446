// ModelShard: one rank's model in this process: config, weights for its shard, KV cache and the
// step executor over them. The worker process holds one; `gemmaserve run` and the parity tests
// hold one with a LocalCommunicator to run without any server.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/gemma4.h"
#include "model/kv_cache.h"
#include "parallel/communicator.h"
#include "parallel/shard_plan.h"
#include "worker/step_executor.h"

namespace gemmaserve::worker {

// The weights of a shard, loaded but without a KV cache yet (its size depends on the memory left
// and, in a cluster, on what the other ranks can hold).
struct LoadedShard {
  model::Gemma4Config config;
  model::ModelWeights weights;
};

// Loads `plan`'s shard of the checkpoint in `model_dir`, its weights prepared for `format`.
absl::StatusOr<LoadedShard> LoadShard(const std::string& model_dir, const parallel::ShardPlan& plan,
                                      const ops::WeightFormat& format = {});

// How this shard's KV cache lays out its pages (model/kv_cache.h).
model::KvPageLayout KvLayout(const LoadedShard& shard, int64_t block_size,
                             DType kv_cache_dtype = DType::kF32);

// How a shard runs, beyond its weights.
struct ShardOptions {
  DType kv_cache_dtype = DType::kF32;  // model::CheckKvCacheDType
  model::StepLimits step_limits;       // sizes the activation workspace
  // On a GPU: plain decode steps replayed as CUDA graphs (model::Gemma4Model::UseDecodeGraphs).
  bool decode_graphs = true;
};

class ModelShard {
 public:
  // Takes the loaded weights; allocates a KV cache of `num_pages` pages (KvLayout) on the weights'
  // device. `comm` outlives this.
  ModelShard(LoadedShard shard, int64_t block_size, int64_t num_pages, parallel::Communicator& comm,
             const ShardOptions& options = {});

  const model::Gemma4Config& config() const { return model_.config(); }
  model::Gemma4Model& model() { return model_; }
  model::KvCache& cache() { return cache_; }
  StepExecutor& executor() { return executor_; }

 private:
  model::Gemma4Model model_;
  model::KvCache cache_;
  StepExecutor executor_;
};

}  // namespace gemmaserve::worker
