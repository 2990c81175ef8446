#include "model/kv_cache.h"

namespace gemmaserve::model {

KvCache::KvCache(const std::vector<LayerWeights>& layers, const KvCacheOptions& options,
                 Device device)
    : options_(options) {
  CHECK_GT(options.block_size, 0);
  for (const LayerWeights& layer : layers) {
    const Shape shape = {num_blocks(layer.geometry.kind), options.block_size,
                         layer.num_kv_heads_local, layer.geometry.head_dim};
    k_.push_back(Tensor::Zeros(DType::kF32, shape, device));
    v_.push_back(Tensor::Zeros(DType::kF32, shape, device));
  }
}

int64_t KvCache::BlockBytes(const std::vector<LayerWeights>& layers, LayerKind group,
                            int64_t block_size) {
  int64_t bytes = 0;
  for (const LayerWeights& layer : layers) {
    if (layer.geometry.kind != group) continue;
    bytes += 2 * block_size * layer.num_kv_heads_local * layer.geometry.head_dim *
             static_cast<int64_t>(sizeof(float));
  }
  return bytes;
}

}  // namespace gemmaserve::model
