// KvCache: the device memory holding keys and values of both KV groups (sliding, full), in one
// pool of pages the groups share (DESIGN.md, "KV cache groups").
//
// A block is block_size tokens of one group: their K and V in every layer of the group. The two
// groups' blocks differ in size (31B: a sliding block is 10 full ones), and a sequence needs a
// sliding block only for each block_size tokens of its window but a full block for every
// block_size tokens of its context, so fixed per-group pools would reserve the sum of both per
// token of capacity. Instead the memory is num_pages pages, each page holding either one block of
// the larger group or blocks_per_page blocks of the smaller one, whichever group needs it now
// (the coordinator's BlockManager decides; this class only holds the memory). Block b of a group
// lies in page b / blocks_per_page, so the larger group's block ids are page ids and the smaller
// group's are page · blocks_per_page + k.
//
// Every layer has its own K and V tensors, views into the pages: [num_blocks(group), block_stride,
// num_kv_heads(layer), head_dim(layer)], where block_stride ≥ block_size is the number of this
// layer's rows from one of its blocks to the next (the page's other layers lie between). Only the
// first block_size rows of each block are the layer's; kernels address row r of block b as cache
// row b · block_stride + r (ops/attention.h).
//
// Keys are stored after k_norm and RoPE, values after v_norm. On attention_k_eq_v layers (the
// full layers of 31B and 26B-A4B) both come from one projection and the key is a function of the
// value (ops/attention.h: KeysFromValues), so such a layer stores its values only and attention
// rebuilds the keys as it reads them: half the full layers' bytes. GEMMA4.md §2.5's "store both"
// is about what attention reads, which is the same either way.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "model/config.h"
#include "model/kv_pages.h"
#include "model/weights.h"

namespace gemmaserve::model {

// Where a step's block ids lead: what ForwardBatch::Finalize checks tables against and maps
// tokens to cache rows with.
struct KvGeometry {
  int64_t block_size = 0;                            // token slots per block
  std::array<int64_t, kNumKvGroups> num_blocks{};    // valid block ids per group: [0, num_blocks)
  std::array<int64_t, kNumKvGroups> block_stride{};  // cache rows from one block to the next
};

// How the two groups share a page, for one rank's layers.
struct KvPageLayout {
  int64_t page_bytes = 0;
  // Blocks of each group one page holds: 1 for the larger group (and for a group without
  // layers), for the other the fewest of its blocks that hold one of the larger group's.
  std::array<int64_t, kNumKvGroups> blocks_per_page{};
  // One block of each group across the group's layers, K and V.
  std::array<int64_t, kNumKvGroups> block_bytes{};
  // What the last page's views reach past it (less than one block of a group).
  int64_t tail_bytes = 0;

  // The layout of `layers` (all layers of one group alike in KV heads, head_dim and whether they
  // store keys, as in every Gemma 4 model) for blocks of `block_size` tokens of `dtype`.
  static KvPageLayout For(const std::vector<LayerWeights>& layers, int64_t block_size,
                          DType dtype);
  // Bytes from one block of `group` to the next: page_bytes / blocks_per_page.
  int64_t BlockStrideBytes(LayerKind group) const {
    return page_bytes / blocks_per_page[static_cast<int>(group)];
  }
  // Bytes of a cache of `num_pages` pages.
  int64_t MemoryBytes(int64_t num_pages) const { return num_pages * page_bytes + tail_bytes; }
  // The most pages `bytes` hold (0 when not even one).
  int64_t PagesIn(int64_t bytes) const {
    return bytes < tail_bytes + page_bytes ? 0 : (bytes - tail_bytes) / page_bytes;
  }
};

struct KvCacheOptions {
  int64_t block_size = 16;  // token slots per block
  int64_t num_pages = 0;    // see KvPageLayout
  // f32 (the CPU default: exact) or bf16 (half the memory; keys and values rounded once).
  DType dtype = DType::kF32;
};

// OK for a dtype the KV cache can hold; INVALID_ARGUMENT naming it otherwise.
absl::Status CheckKvCacheDType(DType dtype);

// Whether a KV cache holds the keys of a layer of geometry `layer`: all but the attention_k_eq_v
// layers, whose keys attention rebuilds from their values.
bool StoresKeys(const LayerGeometry& layer);

// The KV cache dtype a --kv-cache-dtype value names: "f32", "bf16", or "auto": f32 on the CPU
// (exact, and its attention computes in f32 anyway), the matrices' dtype on a GPU (bf16 KV in the
// bf16 precision). INVALID_ARGUMENT naming the accepted values otherwise.
absl::StatusOr<DType> ResolveKvCacheDType(std::string_view name, const Device& device,
                                          DType matrix_dtype = DType::kF32);

class KvCache {
 public:
  // Allocates the zeroed pages on `device` and every layer's K/V views into them (no K where the
  // layer's keys are rebuilt from values: StoresKeys).
  // options.dtype must pass CheckKvCacheDType.
  KvCache(const std::vector<LayerWeights>& layers, const KvCacheOptions& options,
          Device device = Device::Cpu());

  int64_t block_size() const { return options_.block_size; }
  DType dtype() const { return options_.dtype; }
  int64_t num_pages() const { return options_.num_pages; }
  const KvPageLayout& layout() const { return layout_; }
  KvPages pages() const { return {options_.num_pages, layout_.blocks_per_page}; }
  int64_t num_blocks(LayerKind group) const { return geometry_.num_blocks[static_cast<int>(group)]; }
  const KvGeometry& geometry() const { return geometry_; }
  // Bytes the cache's memory takes.
  int64_t bytes() const { return layout_.MemoryBytes(options_.num_pages); }
  // Undefined on a layer that stores no keys.
  Tensor& k(int64_t layer) { return k_[layer]; }
  Tensor& v(int64_t layer) { return v_[layer]; }

 private:
  KvCacheOptions options_;
  KvPageLayout layout_;
  KvGeometry geometry_;
  Tensor memory_;
  std::vector<Tensor> k_;
  std::vector<Tensor> v_;
};

}  // namespace gemmaserve::model
