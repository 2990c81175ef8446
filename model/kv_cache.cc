#include "model/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace gemmaserve::model {

absl::Status CheckKvCacheDType(DType dtype) {
  if (dtype == DType::kF32 || dtype == DType::kBF16) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("KV cache dtype ", std::string(DTypeName(dtype)),
                                                 ": expected f32 or bf16"));
}

absl::StatusOr<DType> ResolveKvCacheDType(std::string_view name, const Device& device,
                                          DType matrix_dtype) {
  if (name == "auto") return device.is_cpu() ? DType::kF32 : matrix_dtype;
  if (name == "f32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  return absl::InvalidArgumentError(absl::StrCat("--kv-cache-dtype \"", std::string(name),
                                                 "\": expected auto, f32 or bf16"));
}

KvCache::KvCache(const std::vector<LayerWeights>& layers, const KvCacheOptions& options,
                 Device device)
    : options_(options) {
  CHECK_GT(options.block_size, 0);
  CHECK(CheckKvCacheDType(options.dtype).ok()) << DTypeName(options.dtype);
  for (const LayerWeights& layer : layers) {
    const Shape shape = {num_blocks(layer.geometry.kind), options.block_size,
                         layer.num_kv_heads_local, layer.geometry.head_dim};
    k_.push_back(Tensor::Zeros(options.dtype, shape, device));
    v_.push_back(Tensor::Zeros(options.dtype, shape, device));
  }
}

int64_t KvCache::BlockBytes(const std::vector<LayerWeights>& layers, LayerKind group,
                            int64_t block_size, DType dtype) {
  int64_t bytes = 0;
  for (const LayerWeights& layer : layers) {
    if (layer.geometry.kind != group) continue;
    bytes += 2 * block_size * layer.num_kv_heads_local * layer.geometry.head_dim *
             static_cast<int64_t>(DTypeSize(dtype));
  }
  return bytes;
}

}  // namespace gemmaserve::model
