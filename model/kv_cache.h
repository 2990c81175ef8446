// KvCache: the device memory holding keys and values, one block pool per KV group (sliding, full).
// Every layer of a group has its own K and V tensors [num_blocks(group), block_size,
// num_kv_heads(layer), head_dim(layer)], indexed by the same block ids, so one block table per
// sequence and group addresses all of that group's layers. Block ids are owned by whoever
// schedules (the coordinator's block manager, or a single-process driver); the cache only holds
// the memory.
//
// Keys are stored after k_norm and RoPE, values after v_norm; on attention_k_eq_v layers they
// still differ, so both are kept.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "model/config.h"
#include "model/weights.h"

namespace gemmaserve::model {

struct KvCacheOptions {
  int64_t block_size = 16;                         // token slots per block
  std::array<int64_t, kNumKvGroups> num_blocks{};  // blocks per group: [sliding, full]
  // f32 (the CPU default: exact) or bf16 (half the memory; keys and values rounded once).
  DType dtype = DType::kF32;
};

// OK for a dtype the KV cache can hold; INVALID_ARGUMENT naming it otherwise.
absl::Status CheckKvCacheDType(DType dtype);

// The KV cache dtype a --kv-cache-dtype value names: "f32", "bf16", or "auto": f32 on the CPU
// (exact, and its attention computes in f32 anyway), the matrices' dtype on a GPU (bf16 KV in the
// bf16 precision). INVALID_ARGUMENT naming the accepted values otherwise.
absl::StatusOr<DType> ResolveKvCacheDType(std::string_view name, const Device& device,
                                          DType matrix_dtype = DType::kF32);

class KvCache {
 public:
  // Allocates zeroed K/V tensors for every layer on `device`. options.dtype must pass
  // CheckKvCacheDType.
  KvCache(const std::vector<LayerWeights>& layers, const KvCacheOptions& options,
          Device device = Device::Cpu());

  int64_t block_size() const { return options_.block_size; }
  DType dtype() const { return options_.dtype; }
  int64_t num_blocks(LayerKind group) const { return options_.num_blocks[static_cast<int>(group)]; }
  Tensor& k(int64_t layer) { return k_[layer]; }
  Tensor& v(int64_t layer) { return v_[layer]; }

  // Bytes one block of `group` takes across all of that group's layers (K and V of `dtype`).
  static int64_t BlockBytes(const std::vector<LayerWeights>& layers, LayerKind group,
                            int64_t block_size, DType dtype);

 private:
  KvCacheOptions options_;
  std::vector<Tensor> k_;
  std::vector<Tensor> v_;
};

}  // namespace gemmaserve::model
