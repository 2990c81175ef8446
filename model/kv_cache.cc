#include "model/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/check.h"

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

bool StoresKeys(const LayerGeometry& layer) { return layer.has_v_proj; }

KvPageLayout KvPageLayout::For(const std::vector<LayerWeights>& layers, int64_t block_size,
                               DType dtype) {
  CHECK_GT(block_size, 0);
  std::array<int64_t, kNumKvGroups> row_bytes{};  // one token of one layer, K or V
  std::array<int64_t, kNumKvGroups> rows{};       // K and V rows of one token of one layer
  KvPageLayout layout;
  for (const LayerWeights& layer : layers) {
    const int g = static_cast<int>(layer.geometry.kind);
    const int64_t row =
        layer.num_kv_heads_local * layer.geometry.head_dim * static_cast<int64_t>(DTypeSize(dtype));
    const int64_t kv_rows = StoresKeys(layer.geometry) ? 2 : 1;
    CHECK((row_bytes[g] == 0 || row_bytes[g] == row) && (rows[g] == 0 || rows[g] == kv_rows))
        << LayerKindName(layer.geometry.kind) << " layers of unlike KV rows: " << rows[g] << " × "
        << row_bytes[g] << " and " << kv_rows << " × " << row << " bytes";
    row_bytes[g] = row;
    rows[g] = kv_rows;
    layout.block_bytes[g] += kv_rows * block_size * row;
  }
  constexpr int kSliding = static_cast<int>(LayerKind::kSliding);
  constexpr int kFull = static_cast<int>(LayerKind::kFull);
  layout.blocks_per_page = {1, 1};
  const int64_t sliding = layout.block_bytes[kSliding];
  const int64_t full = layout.block_bytes[kFull];
  CHECK(sliding > 0 || full > 0) << "a KV cache for no attention layer";
  // The last layer's V view of a group starts block_size rows before the group's block ends.
  for (int g = 0; g < kNumKvGroups; ++g) {
    if (row_bytes[g] > 0) {
      layout.tail_bytes =
          std::max(layout.tail_bytes, layout.block_bytes[g] - block_size * row_bytes[g]);
    }
  }
  if (sliding == 0 || full == 0) {
    layout.page_bytes = std::max(sliding, full);
    return layout;
  }
  const int big = sliding >= full ? kSliding : kFull;
  const int small = 1 - big;
  // The fewest of the smaller group's blocks that hold a block of the larger group, and whose
  // bytes are whole rows of it (so its layers' views have an integral block stride).
  int64_t per_page = (layout.block_bytes[big] + layout.block_bytes[small] - 1) /
                     layout.block_bytes[small];
  while (per_page * layout.block_bytes[small] % row_bytes[big] != 0) ++per_page;
  layout.blocks_per_page[small] = per_page;
  layout.page_bytes = per_page * layout.block_bytes[small];
  return layout;
}

KvCache::KvCache(const std::vector<LayerWeights>& layers, const KvCacheOptions& options,
                 Device device)
    : options_(options), layout_(KvPageLayout::For(layers, options.block_size, options.dtype)) {
  CHECK_GE(options.num_pages, 0);
  CHECK(CheckKvCacheDType(options.dtype).ok()) << DTypeName(options.dtype);
  const int64_t element = static_cast<int64_t>(DTypeSize(options.dtype));
  geometry_.block_size = options.block_size;
  // Each layer's K and V take their place in the group's block, layer after layer.
  std::array<int64_t, kNumKvGroups> offset{};
  std::vector<int64_t> layer_offsets;
  for (const LayerWeights& layer : layers) {
    const LayerKind group = layer.geometry.kind;
    const int g = static_cast<int>(group);
    const int64_t row = layer.num_kv_heads_local * layer.geometry.head_dim * element;
    geometry_.num_blocks[g] = options.num_pages * layout_.blocks_per_page[g];
    geometry_.block_stride[g] = layout_.BlockStrideBytes(group) / row;
    layer_offsets.push_back(offset[g]);
    offset[g] += (StoresKeys(layer.geometry) ? 2 : 1) * options.block_size * row;
  }
  memory_ = Tensor::Zeros(options.dtype, {layout_.MemoryBytes(options.num_pages) / element}, device);
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerWeights& layer = layers[l];
    const int g = static_cast<int>(layer.geometry.kind);
    const Shape shape = {geometry_.num_blocks[g], geometry_.block_stride[g],
                         layer.num_kv_heads_local, layer.geometry.head_dim};
    const int64_t row = layer.num_kv_heads_local * layer.geometry.head_dim;  // elements
    // Views into the pages, starting at the layer's place in the first block.
    auto view = [&](int64_t begin) {
      return memory_.Slice(begin, begin + NumElements(shape)).View(shape);
    };
    // K (when stored), then V.
    const int64_t begin = layer_offsets[l] / element;
    if (StoresKeys(layer.geometry)) {
      k_.push_back(view(begin));
      v_.push_back(view(begin + options.block_size * row));
    } else {
      k_.emplace_back();
      v_.push_back(view(begin));
    }
  }
}

}  // namespace gemmaserve::model
