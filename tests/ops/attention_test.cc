// WriteKvCache and hand-computed PagedAttention cases that pin Gemma 4's conventions; the
// randomised multi-sequence comparison with a dense reference is in paged_attention_test.cc.
#include "ops/attention.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::ExpectAllNear;
using test_util::Ints;
using test_util::Metadata;
using test_util::NanTensor;
using test_util::RandomTensor;

TEST(WriteKvCacheTest, CopiesEachTokenToItsSlotOnly) {
  // 3 blocks of 2 slots, 2 KV heads of dim 3. Token 0 goes to slot 5 (block 2, row 1), token 1
  // to slot 0; the other four slots stay zero.
  std::mt19937 rng(60);
  Tensor k = RandomTensor({2, 2, 3}, rng);
  Tensor v = RandomTensor({2, 2, 3}, rng);
  Tensor k_cache = Tensor::Zeros(DType::kF32, {3, 2, 2, 3});
  Tensor v_cache = Tensor::Zeros(DType::kF32, {3, 2, 2, 3});
  const std::vector<int32_t> slots = {5, 0};
  WriteKvCache(k, v, Ints(slots), k_cache, v_cache);
  const int64_t row = 2 * 3;
  for (int64_t slot = 0; slot < 6; ++slot) {
    const int64_t token = slot == 5 ? 0 : slot == 0 ? 1 : -1;
    for (int64_t i = 0; i < row; ++i) {
      const float want_k = token < 0 ? 0.0f : k.data<float>()[token * row + i];
      const float want_v = token < 0 ? 0.0f : v.data<float>()[token * row + i];
      EXPECT_EQ(k_cache.data<float>()[slot * row + i], want_k) << "slot " << slot;
      EXPECT_EQ(v_cache.data<float>()[slot * row + i], want_v) << "slot " << slot;
    }
  }
}

TEST(WriteKvCacheTest, ABf16CacheHoldsTheRoundedValues) {
  std::mt19937 rng(62);
  Tensor k = RandomTensor({2, 1, 4}, rng);
  Tensor v = RandomTensor({2, 1, 4}, rng);
  Tensor k_cache = Tensor::Zeros(DType::kBF16, {2, 2, 1, 4});
  Tensor v_cache = Tensor::Zeros(DType::kBF16, {2, 2, 1, 4});
  WriteKvCache(k, v, Ints({3, 1}), k_cache, v_cache);
  for (int64_t token = 0; token < 2; ++token) {
    const int64_t slot = token == 0 ? 3 : 1;
    for (int64_t i = 0; i < 4; ++i) {
      EXPECT_EQ(k_cache.data<uint16_t>()[slot * 4 + i], F32ToBf16(k.data<float>()[token * 4 + i]));
      EXPECT_EQ(v_cache.data<uint16_t>()[slot * 4 + i], F32ToBf16(v.data<float>()[token * 4 + i]));
    }
  }
}

TEST(PagedAttentionTest, ABf16CacheEqualsAnF32CacheOfTheRoundedKeysAndValues) {
  // The bf16 cache changes only what is stored: attention over it equals attention over an f32
  // cache holding the same rounded values (up to f32 rounding: the widened rows reach BLAS with
  // another stride, which may sum in another order).
  std::mt19937 rng(63);
  const int64_t context = 11;
  Tensor keys = RandomTensor({context, 2, 8}, rng, -2.0f, 2.0f);
  Tensor values = RandomTensor({context, 2, 8}, rng, -2.0f, 2.0f);
  Tensor rounded_keys = Tensor::Empty(DType::kF32, keys.shape());
  Tensor rounded_values = Tensor::Empty(DType::kF32, values.shape());
  for (int64_t i = 0; i < keys.numel(); ++i) {
    rounded_keys.data<float>()[i] = RoundToBf16(keys.data<float>()[i]);
    rounded_values.data<float>()[i] = RoundToBf16(values.data<float>()[i]);
  }
  const std::vector<int32_t> table = {2, 0, 1};
  std::vector<int32_t> slots;
  for (int64_t p = 0; p < context; ++p) slots.push_back(table[p / 4] * 4 + p % 4);
  Tensor q = RandomTensor({3, 4, 8}, rng);  // the last 3 positions, GQA 4 over 2
  const AttentionMetadata metadata = Metadata({{0, 3, context, table.data()}}, 4);
  Tensor bf16_k = Tensor::Zeros(DType::kBF16, {3, 4, 2, 8});
  Tensor bf16_v = Tensor::Zeros(DType::kBF16, bf16_k.shape());
  WriteKvCache(keys, values, Ints(slots), bf16_k, bf16_v);
  Tensor f32_k = Tensor::Zeros(DType::kF32, bf16_k.shape());
  Tensor f32_v = Tensor::Zeros(DType::kF32, bf16_k.shape());
  WriteKvCache(rounded_keys, rounded_values, Ints(slots), f32_k, f32_v);
  for (int64_t window : {0, 5}) {
    Tensor from_bf16 = NanTensor(q.shape());
    Tensor from_f32 = NanTensor(q.shape());
    PagedAttention(q, bf16_k, bf16_v, metadata, window, 1.0f, from_bf16);
    PagedAttention(q, f32_k, f32_v, metadata, window, 1.0f, from_f32);
    ExpectAllNear(from_bf16,
                  std::vector<double>(from_f32.data<float>(), from_f32.data<float>() + q.numel()),
                  1e-6);
  }
}

// One sequence's cache (block_size 4, unwritten slots NaN) and its block table.
struct OneSequence {
  Tensor k_cache, v_cache;
  std::vector<int32_t> block_table;

  OneSequence(int64_t num_blocks, int64_t num_kv_heads, int64_t head_dim,
              std::vector<int32_t> table)
      : k_cache(NanTensor({num_blocks, 4, num_kv_heads, head_dim})),
        v_cache(NanTensor({num_blocks, 4, num_kv_heads, head_dim})),
        block_table(std::move(table)) {}

  // keys, values: [context_len, num_kv_heads, head_dim], positions 0 … context_len − 1.
  void Fill(const Tensor& keys, const Tensor& values) {
    std::vector<int32_t> slots;
    for (int64_t p = 0; p < keys.dim(0); ++p) slots.push_back(block_table[p / 4] * 4 + p % 4);
    WriteKvCache(keys, values, Ints(slots), k_cache, v_cache);
  }

  // Attention of the single query `q` [1, num_heads, head_dim] at the last position.
  Tensor AttendLast(const Tensor& q, int64_t context_len, int64_t window, float scale) {
    Tensor out = Tensor::Empty(DType::kF32, q.shape());
    PagedAttention(q, k_cache, v_cache, Metadata({{0, 1, context_len, block_table.data()}}, 4),
                   window, scale, out);
    return out;
  }
};

TEST(PagedAttentionTest, UsesTheScaleAsPassedWithNoImplicitRootHeadDim) {
  // Keys e0, e1 with values e0, e1; q = [ln 3, 0] at position 1 scores [ln 3, 0]. Scale 1.0 (what
  // Gemma 4 passes) gives softmax [3/4, 1/4]; a hidden 1/sqrt(2) would give [0.685, 0.315].
  OneSequence seq(1, 1, 2, {0});
  Tensor kv = Tensor::FromVector({1, 0, 0, 1}, {2, 1, 2});
  seq.Fill(kv, kv);
  Tensor q = Tensor::FromVector({std::log(3.0f), 0.0f}, {1, 1, 2});
  ExpectAllNear(seq.AttendLast(q, 2, 0, 1.0f), {0.75, 0.25}, 1e-6);
  // Scale 2 squares the odds: [9/10, 1/10].
  ExpectAllNear(seq.AttendLast(q, 2, 0, 2.0f), {0.9, 0.1}, 1e-6);
}

TEST(PagedAttentionTest, SlidingWindowSeesExactlyWKeysIncludingItself) {
  // Six positions over two blocks mapped in reverse; all keys are zero so attention is uniform
  // over the visible keys, and value p is [p, 1]. The query at position 5 with window W averages
  // positions max(0, 6 − W) … 5.
  OneSequence seq(2, 1, 2, {1, 0});
  Tensor keys = Tensor::Zeros(DType::kF32, {6, 1, 2});
  Tensor values = Tensor::FromVector({0, 1, 1, 1, 2, 1, 3, 1, 4, 1, 5, 1}, {6, 1, 2});
  seq.Fill(keys, values);
  Tensor q = Tensor::FromVector({0.3f, -0.7f}, {1, 1, 2});
  ExpectAllNear(seq.AttendLast(q, 6, 1, 1.0f), {5.0, 1.0}, 1e-6);    // only itself
  ExpectAllNear(seq.AttendLast(q, 6, 2, 1.0f), {4.5, 1.0}, 1e-6);    // 4, 5
  ExpectAllNear(seq.AttendLast(q, 6, 4, 1.0f), {3.5, 1.0}, 1e-6);    // 2 … 5
  ExpectAllNear(seq.AttendLast(q, 6, 6, 1.0f), {2.5, 1.0}, 1e-6);    // 0 … 5
  ExpectAllNear(seq.AttendLast(q, 6, 0, 1.0f), {2.5, 1.0}, 1e-6);    // 0 means full causal
  ExpectAllNear(seq.AttendLast(q, 6, 100, 1.0f), {2.5, 1.0}, 1e-6);  // window beyond the start
}

TEST(PagedAttentionTest, GqaQueryHeadReadsKvHeadHOverGroup) {
  // 4 query heads over 2 KV heads: heads 0, 1 read KV head 0 (value 10) and heads 2, 3 read KV
  // head 1 (value 20); an h % num_kv_heads mapping would interleave them.
  OneSequence seq(1, 2, 2, {0});
  Tensor keys = Tensor::Zeros(DType::kF32, {1, 2, 2});
  Tensor values = Tensor::FromVector({10, 10, 20, 20}, {1, 2, 2});
  seq.Fill(keys, values);
  std::mt19937 rng(61);
  Tensor q = RandomTensor({1, 4, 2}, rng);
  ExpectAllNear(seq.AttendLast(q, 1, 0, 1.0f), {10, 10, 10, 10, 20, 20, 20, 20}, 1e-5);
}

using PagedAttentionDeathTest = test_util::ThreadsafeDeathTest;
using WriteKvCacheDeathTest = test_util::ThreadsafeDeathTest;

TEST_F(PagedAttentionDeathTest, HeadsNotAMultipleOfKvHeadsDie) {
  Tensor cache = Tensor::Zeros(DType::kF32, {1, 4, 2, 8});
  Tensor q = Tensor::Zeros(DType::kF32, {1, 3, 8});
  Tensor out = Tensor::Empty(DType::kF32, {1, 3, 8});
  const int32_t block = 0;
  EXPECT_DEATH(PagedAttention(q, cache, cache, Metadata({{0, 1, 1, &block}}, 4), 0, 1.0f, out),
               "3 heads over 2");
}

TEST_F(PagedAttentionDeathTest, HeadDimMismatchWithCacheDies) {
  Tensor cache = Tensor::Zeros(DType::kF32, {1, 4, 2, 8});
  Tensor q = Tensor::Zeros(DType::kF32, {1, 2, 16});
  Tensor out = Tensor::Empty(DType::kF32, {1, 2, 16});
  const int32_t block = 0;
  EXPECT_DEATH(PagedAttention(q, cache, cache, Metadata({{0, 1, 1, &block}}, 4), 0, 1.0f, out), "CHECK failed");
}

TEST_F(WriteKvCacheDeathTest, SlotOutsideCacheDies) {
  Tensor kv = Tensor::Zeros(DType::kF32, {1, 2, 3});
  Tensor cache = Tensor::Zeros(DType::kF32, {2, 4, 2, 3});
  EXPECT_DEATH(WriteKvCache(kv, kv, Ints(std::vector<int32_t>{8}), cache, cache), "slot 8 of 8");
}

}  // namespace
}  // namespace gemmaserve::ops
