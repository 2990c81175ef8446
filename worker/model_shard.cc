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

model::KvPageLayout KvLayout(const LoadedShard& shard, int64_t block_size, DType kv_cache_dtype) {
  return model::KvPageLayout::For(shard.weights.layers, block_size, kv_cache_dtype);
}

namespace {

model::KvCacheOptions CacheOptions(int64_t block_size, int64_t num_pages, DType dtype) {
  model::KvCacheOptions options;
  options.block_size = block_size;
  options.num_pages = num_pages;
  options.dtype = dtype;
  return options;
}

}  // namespace

ModelShard::ModelShard(LoadedShard shard, int64_t block_size, int64_t num_pages,
                       parallel::Communicator& comm, const ShardOptions& options)
    : model_(std::move(shard.config), std::move(shard.weights), comm, options.step_limits),
      cache_(model_.weights().layers, CacheOptions(block_size, num_pages, options.kv_cache_dtype),
             model_.weights().device),
      executor_(model_, cache_, comm.rank()) {
  model_.UseDecodeGraphs(options.decode_graphs);
}

}  // namespace gemmaserve::worker
