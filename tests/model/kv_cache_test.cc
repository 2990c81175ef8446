// KvCache's pages: the layouts of Gemma 4's shapes (the smaller group's blocks several to a page,
// as model/kv_cache.h says; attention_k_eq_v layers store their values only), and every layer's
// K/V views of blocks of both groups in one pool holding their own rows, written through the
// slots ForwardBatch computes.
#include "model/kv_cache.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "model/forward_batch.h"
#include "ops/attention.h"

namespace gemmaserve::model {
namespace {

constexpr int kSliding = static_cast<int>(LayerKind::kSliding);
constexpr int kFull = static_cast<int>(LayerKind::kFull);

// `period` − 1 sliding layers (head_dim 256) then a full one (head_dim 512), `num_layers` in all,
// with the given KV heads on this rank; the full layers are attention_k_eq_v ones (no v_proj),
// as in 31B and 26B-A4B.
std::vector<LayerWeights> Layers(int num_layers, int period, int64_t sliding_kv_heads,
                                 int64_t full_kv_heads, int64_t sliding_dim = 256,
                                 int64_t full_dim = 512) {
  std::vector<LayerWeights> layers(num_layers);
  for (int i = 0; i < num_layers; ++i) {
    const bool full = (i + 1) % period == 0;
    layers[i].geometry.kind = full ? LayerKind::kFull : LayerKind::kSliding;
    layers[i].geometry.head_dim = full ? full_dim : sliding_dim;
    layers[i].num_kv_heads_local = full ? full_kv_heads : sliding_kv_heads;
    layers[i].geometry.has_v_proj = !full;
  }
  return layers;
}

// `layers` with a v_proj on every layer: keys and values stored everywhere.
std::vector<LayerWeights> WithVProj(std::vector<LayerWeights> layers) {
  for (LayerWeights& layer : layers) layer.geometry.has_v_proj = true;
  return layers;
}

TEST(KvPageLayoutTest, Gemma4ShapesHoldTwentyFullBlocksInASlidingBlocksPage) {
  // 31B: 50 sliding layers of 16 KV heads, 10 full layers of 4; bf16, 16-token blocks.
  const KvPageLayout dense = KvPageLayout::For(Layers(60, 6, 16, 4), 16, DType::kBF16);
  EXPECT_EQ(dense.blocks_per_page[kSliding], 1);
  EXPECT_EQ(dense.blocks_per_page[kFull], 20);
  EXPECT_EQ(dense.page_bytes, int64_t{50} * 2 * 16 * 16 * 256 * 2);
  EXPECT_EQ(dense.block_bytes[kFull] * 20, dense.page_bytes);
  // Past the window a token costs its full layers' values (their keys are rebuilt from them):
  // 10 · 4 · 512 · 2 bytes.
  EXPECT_EQ(dense.page_bytes / (20 * 16), 40 << 10);
  EXPECT_EQ(dense.page_bytes / 16, 800 << 10);  // within it, its sliding layers' K and V too

  // 26B-A4B: 25 sliding layers of 8 KV heads, 5 full layers of 2.
  const KvPageLayout moe = KvPageLayout::For(Layers(30, 6, 8, 2), 16, DType::kBF16);
  EXPECT_EQ(moe.blocks_per_page[kFull], 20);
  EXPECT_EQ(moe.page_bytes / (20 * 16), 10 << 10);

  // 31B over 8 ranks: 2 sliding KV heads each, the 4 full ones replicated to 1 each.
  const KvPageLayout tp8 = KvPageLayout::For(Layers(60, 6, 2, 1), 16, DType::kBF16);
  EXPECT_EQ(tp8.blocks_per_page[kFull], 10);
  EXPECT_EQ(tp8.page_bytes, 10 * tp8.block_bytes[kFull]);
}

TEST(KvPageLayoutTest, FullLayersWithAVProjStoreKeysAndValues) {
  // 31B's shapes if its full layers had a v_proj: K and V, ten full blocks to a page.
  const KvPageLayout dense = KvPageLayout::For(WithVProj(Layers(60, 6, 16, 4)), 16, DType::kBF16);
  EXPECT_EQ(dense.blocks_per_page[kFull], 10);
  EXPECT_EQ(dense.page_bytes / (10 * 16), 80 << 10);  // 10 · 2 · 4 · 512 · 2 bytes
}

TEST(KvPageLayoutTest, TheLargerGroupTakesAPagePerBlockAndPagesAreWholeRows) {
  // Full blocks larger: a full layer of 4 heads of 512 beside a sliding layer of 1 × 256.
  const KvPageLayout full_larger =
      KvPageLayout::For(WithVProj(Layers(2, 2, 1, 4)), 16, DType::kF32);
  EXPECT_EQ(full_larger.blocks_per_page[kFull], 1);
  EXPECT_EQ(full_larger.blocks_per_page[kSliding], 8);
  EXPECT_EQ(full_larger.page_bytes, full_larger.block_bytes[kFull]);

  // Not a multiple: three sliding layers of 1 × 256 (96 KiB a block) and one full of 1 × 512
  // (64 KiB): two full blocks to a page of 128 KiB, a sliding block leaving 32 KiB unused.
  const KvPageLayout uneven = KvPageLayout::For(WithVProj(Layers(4, 4, 1, 1)), 16, DType::kF32);
  EXPECT_EQ(uneven.blocks_per_page[kSliding], 1);
  EXPECT_EQ(uneven.blocks_per_page[kFull], 2);
  EXPECT_EQ(uneven.page_bytes, 128 << 10);
  EXPECT_EQ(uneven.page_bytes % (256 * 4), 0);  // whole sliding rows: an integral block stride
  EXPECT_EQ(uneven.PagesIn(uneven.MemoryBytes(7)), 7);
  EXPECT_EQ(uneven.PagesIn(uneven.MemoryBytes(7) - 1), 6);
}

// Three sliding layers of 2 × 32 and a full layer of 1 × 64 per period, blocks of 4 tokens, six
// pages; the full layers with a v_proj or without one (keys rebuilt from values).
void ExpectEveryLayerKeepsItsOwnRows(bool k_eq_v) {
  std::vector<LayerWeights> layers = Layers(8, 4, 2, 1, 32, 64);
  for (LayerWeights& layer : layers) {
    layer.geometry.has_v_proj = !k_eq_v || layer.geometry.kind == LayerKind::kSliding;
  }
  KvCacheOptions options;
  options.block_size = 4;
  options.num_pages = 6;
  KvCache cache(layers, options);
  // A sliding block is 3 · 2 · 4 · 2 · 32 floats; a full one 2 (or 1) · 4 · 64.
  const int64_t full_per_page = k_eq_v ? 6 : 3;
  ASSERT_EQ(cache.layout().blocks_per_page[kFull], full_per_page);
  EXPECT_EQ(cache.num_blocks(LayerKind::kSliding), 6);
  EXPECT_EQ(cache.num_blocks(LayerKind::kFull), 6 * full_per_page);
  // Sliding blocks in pages 0, 2, 4; full blocks in pages 1, 3, 5.
  std::vector<std::vector<int32_t>> blocks = {{0, 2, 4}, {}};
  for (int32_t page : {1, 3, 5}) {
    for (int64_t i = 0; i < full_per_page; ++i) {
      blocks[kFull].push_back(static_cast<int32_t>(page * full_per_page + i));
    }
  }
  const KvGeometry& geometry = cache.geometry();
  auto Value = [](int64_t layer, int64_t block, int64_t row, int64_t element, bool v) {
    return static_cast<float>(((layer * 32 + block) * 8 + row) * 1000 + element) * (v ? -1 : 1);
  };
  for (size_t l = 0; l < layers.size(); ++l) {
    const int g = static_cast<int>(layers[l].geometry.kind);
    const int64_t row = layers[l].num_kv_heads_local * layers[l].geometry.head_dim;
    std::vector<float> k, v;
    std::vector<int32_t> slots;
    for (int32_t block : blocks[g]) {
      for (int64_t r = 0; r < options.block_size; ++r) {
        slots.push_back(static_cast<int32_t>(block * geometry.block_stride[g] + r));
        for (int64_t e = 0; e < row; ++e) {
          k.push_back(Value(l, block, r, e, false));
          v.push_back(Value(l, block, r, e, true));
        }
      }
    }
    const int64_t n = static_cast<int64_t>(slots.size());
    const Shape shape = {n, layers[l].num_kv_heads_local, layers[l].geometry.head_dim};
    EXPECT_EQ(cache.k(l).defined(), layers[l].geometry.has_v_proj);
    ops::WriteKvCache(Tensor::FromVector(k, shape), Tensor::FromVector(v, shape),
                      Tensor::FromInts(slots, {n}), cache.k(l), cache.v(l));
  }
  // Read back after every layer wrote: nothing was overwritten.
  for (size_t l = 0; l < layers.size(); ++l) {
    const int g = static_cast<int>(layers[l].geometry.kind);
    const int64_t row = layers[l].num_kv_heads_local * layers[l].geometry.head_dim;
    ASSERT_EQ(cache.v(l).dim(1), geometry.block_stride[g]);
    const bool keys = cache.k(l).defined();
    for (int32_t block : blocks[g]) {
      for (int64_t r = 0; r < options.block_size; ++r) {
        const int64_t at = (block * geometry.block_stride[g] + r) * row;
        for (int64_t e = 0; e < row; ++e) {
          if (keys) {
            ASSERT_EQ(cache.k(l).data<float>()[at + e], Value(l, block, r, e, false))
                << "layer " << l << " block " << block << " row " << r;
          }
          ASSERT_EQ(cache.v(l).data<float>()[at + e], Value(l, block, r, e, true))
              << "layer " << l << " block " << block << " row " << r;
        }
      }
    }
  }
  EXPECT_EQ(cache.bytes(), cache.layout().MemoryBytes(6));
}

TEST(KvCacheTest, EveryLayerOfBothGroupsKeepsItsOwnRowsInSharedPages) {
  ExpectEveryLayerKeepsItsOwnRows(/*k_eq_v=*/false);
}

TEST(KvCacheTest, KEqVLayersKeepTheirValuesOnlyAndTwiceTheBlocksFitAPage) {
  ExpectEveryLayerKeepsItsOwnRows(/*k_eq_v=*/true);
}

}  // namespace
}  // namespace gemmaserve::model
