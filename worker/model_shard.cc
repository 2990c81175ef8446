#include "worker/model_shard.h"

#include "common/status_macros.h"

namespace gemmaserve::worker {

absl::StatusOr<LoadedShard> LoadShard(const std::string& model_dir, const parallel::ShardPlan& plan,
                                      const ops::WeightFormat& format) {
  ASSIGN_OR_RETURN(model::Gemma4Config config, model::Gemma4Config::FromModelDir(model_dir));
  ASSIGN_OR_RETURN(model::Checkpoint checkpoint, model::Checkpoint::Open(model_dir));
  ASSIGN_OR_RETURN(model::ModelWeights weights,
                   model::LoadWeights(checkpoint, config, plan, format));
  return LoadedShard{std::move(config), std::move(weights)};
}

int64_t KvBytesPerBlockPair(const LoadedShard& shard, int64_t block_size, DType kv_cache_dtype) {
  const std::vector<model::LayerWeights>& layers = shard.weights.layers;
  return model::KvCache::BlockBytes(layers, model::LayerKind::kSliding, block_size, kv_cache_dtype) +
         model::KvCache::BlockBytes(layers, model::LayerKind::kFull, block_size, kv_cache_dtype);
}

namespace {

model::KvCacheOptions CacheOptions(int64_t block_size, int64_t num_blocks, DType dtype) {
  model::KvCacheOptions options;
  options.block_size = block_size;
  options.num_blocks = {num_blocks, num_blocks};
  options.dtype = dtype;
  return options;
}

}  // namespace

ModelShard::ModelShard(LoadedShard shard, int64_t block_size, int64_t num_blocks,
                       parallel::Communicator& comm, const ShardOptions& options)
    : model_(std::move(shard.config), std::move(shard.weights), comm, options.step_limits),
      cache_(model_.weights().layers,
             CacheOptions(block_size, num_blocks, options.kv_cache_dtype), model_.weights().device),
      executor_(model_, cache_, comm.rank()) {}

}  // namespace gemmaserve::worker
