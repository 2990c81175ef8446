#include "worker/model_shard.h"

#include "common/status_macros.h"

namespace gemmaserve::worker {

absl::StatusOr<LoadedShard> LoadShard(const std::string& model_dir, const parallel::ShardPlan& plan) {
  ASSIGN_OR_RETURN(model::Gemma4Config config, model::Gemma4Config::FromModelDir(model_dir));
  ASSIGN_OR_RETURN(model::Checkpoint checkpoint, model::Checkpoint::Open(model_dir));
  ASSIGN_OR_RETURN(model::ModelWeights weights, model::LoadWeights(checkpoint, config, plan));
  return LoadedShard{std::move(config), std::move(weights)};
}

int64_t KvBytesPerBlockPair(const LoadedShard& shard, int64_t block_size) {
  return model::KvCache::BlockBytes(shard.weights.layers, model::LayerKind::kSliding, block_size) +
         model::KvCache::BlockBytes(shard.weights.layers, model::LayerKind::kFull, block_size);
}

namespace {

model::KvCacheOptions CacheOptions(int64_t block_size, int64_t num_blocks) {
  model::KvCacheOptions options;
  options.block_size = block_size;
  options.num_blocks = {num_blocks, num_blocks};
  return options;
}

}  // namespace

ModelShard::ModelShard(LoadedShard shard, int64_t block_size, int64_t num_blocks,
                       parallel::Communicator& comm)
    : model_(std::move(shard.config), std::move(shard.weights), comm),
      cache_(model_.weights().layers, CacheOptions(block_size, num_blocks)),
      executor_(model_, cache_, comm.rank()) {}

}  // namespace gemmaserve::worker
