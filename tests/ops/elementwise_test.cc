#include "ops/elementwise.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "ops/linear.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::Clone;
using test_util::ExpectAllNear;
using test_util::Ints;
using test_util::RandomTensor;

TEST(AddInPlaceTest, AddsElementwise) {
  std::mt19937 rng(20);
  Tensor x = RandomTensor({6, 17}, rng);
  Tensor y = RandomTensor({6, 17}, rng);
  std::vector<double> expected(x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) {
    expected[i] = double{x.data<float>()[i]} + y.data<float>()[i];
  }
  AddInPlace(x, y);
  ExpectAllNear(x, expected, 1e-6);
}

TEST(AddInPlaceTest, AcceptsSameCountInOtherShape) {
  // The contract is on element count: a [T, H] residual takes a [T·H] flat view.
  Tensor x = Tensor::FromVector({1, 2, 3, 4}, {2, 2});
  Tensor y = Tensor::FromVector({10, 20, 30, 40}, {4});
  AddInPlace(x, y);
  ExpectAllNear(x, {11, 22, 33, 44}, 0.0);
}

TEST(MultiplyInPlaceTest, ScalesEachColumnByItsWeightThenTheScalar) {
  Tensor x = Tensor::FromVector({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor w = Tensor::FromVector({1, 10, 100}, {3});
  MultiplyInPlace(x, w, 0.5f);
  ExpectAllNear(x, {0.5, 10, 150, 2, 25, 300}, 0.0);
}

TEST(SetZeroTest, ZeroesEveryByteOfAnyDtype) {
  Tensor x = Tensor::Empty(DType::kI64, {3, 2});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<int64_t>()[i] = -1;
  SetZero(x);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(x.data<int64_t>()[i], 0);
}

TEST(ScaleInPlaceTest, MultipliesEveryElement) {
  std::mt19937 rng(21);
  Tensor x = RandomTensor({3, 5, 7}, rng, -10.0f, 10.0f);
  const Tensor before = Clone(x);
  ScaleInPlace(x, 0.37f);
  std::vector<double> expected(x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) expected[i] = before.data<float>()[i] * 0.37;
  ExpectAllNear(x, expected, 1e-5);
}

TEST(SoftcapInPlaceTest, CapsAtThirtyWithTanh) {
  // 30·tanh(x/30): 30 -> 22.8478, −60 -> −28.9208, 1e6 -> 30, and small values pass almost as is.
  Tensor x = Tensor::FromVector({30.0f, -60.0f, 1e6f, 0.01f, 0.0f}, {5});
  SoftcapInPlace(x, 30.0f);
  EXPECT_NEAR(x.data<float>()[0], 22.8478247, 1e-5);
  EXPECT_NEAR(x.data<float>()[1], -28.9208274, 1e-5);
  EXPECT_EQ(x.data<float>()[2], 30.0f);
  EXPECT_NEAR(x.data<float>()[3], 0.01f, 1e-8);
  EXPECT_EQ(x.data<float>()[4], 0.0f);
}

TEST(SoftcapInPlaceTest, MatchesReferenceOnRandomLogits) {
  std::mt19937 rng(22);
  Tensor x = RandomTensor({4, 257}, rng, -200.0f, 200.0f);
  std::vector<double> expected(x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) expected[i] = 30.0 * std::tanh(x.data<float>()[i] / 30.0);
  SoftcapInPlace(x, 30.0f);
  ExpectAllNear(x, expected, 1e-5);
}

TEST(EmbeddingLookupTest, CopiesScaledRowsInIdOrder) {
  std::mt19937 rng(23);
  const int64_t vocab = 11, dim = 9;
  Tensor table = RandomTensor({vocab, dim}, rng);
  const std::vector<int32_t> ids = {7, 0, 7, 10, 3};
  Tensor out = Tensor::Empty(DType::kF32, {5, dim});
  const float scale = 39.25f;  // E2B's sqrt(H) rounded to bf16
  EmbeddingLookup(table, Ints(ids), scale, out);
  std::vector<double> expected;
  for (int32_t id : ids) {
    for (int64_t j = 0; j < dim; ++j) expected.push_back(table.data<float>()[id * dim + j] * 39.25);
  }
  ExpectAllNear(out, expected, 1e-5);
}

TEST(EmbeddingLookupTest, APackedTableGivesTheSameRows) {
  // The embedding is also the tied LM head, so the loader packs it as a Linear weight.
  std::mt19937 rng(24);
  Tensor table = RandomTensor({32, 5}, rng);
  Tensor packed = PackLinearWeight(table);
  ASSERT_TRUE(IsPackedLinearWeight(packed));
  const std::vector<int32_t> ids = {31, 0, 17, 16, 30};
  Tensor from_rows = Tensor::Empty(DType::kF32, {5, 5});
  Tensor from_panels = Tensor::Empty(DType::kF32, {5, 5});
  EmbeddingLookup(table, Ints(ids), 3.0f, from_rows);
  EmbeddingLookup(packed, Ints(ids), 3.0f, from_panels);
  ExpectAllNear(from_panels,
                std::vector<double>(from_rows.data<float>(), from_rows.data<float>() + 25), 0.0);
}

TEST(EmbeddingLookupTest, AVocabShardFillsItsRowsAndZerosTheRest) {
  // This shard holds vocabulary rows [4, 8) of a 12-token vocabulary.
  constexpr int64_t kDim = 3;
  std::vector<float> rows;
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t j = 0; j < kDim; ++j) rows.push_back(static_cast<float>(10 * (r + 4) + j));
  }
  const Tensor table = Tensor::FromVector(rows, {4, kDim});
  const std::vector<int32_t> ids = {3, 4, 7, 8, 11, 5};
  Tensor out = Tensor::Empty(DType::kF32, {6, kDim});
  EmbeddingLookup(table, Ints(ids), 2.0f, out, /*first_row=*/4);
  std::vector<double> expected;
  for (int32_t id : ids) {
    for (int64_t j = 0; j < kDim; ++j) {
      expected.push_back(id >= 4 && id < 8 ? 2.0 * (10 * id + j) : 0.0);
    }
  }
  ExpectAllNear(out, expected, 0.0);
}

using AddInPlaceDeathTest = test_util::ThreadsafeDeathTest;

TEST_F(AddInPlaceDeathTest, ElementCountMismatchDies) {
  Tensor x = Tensor::Zeros(DType::kF32, {2, 3});
  Tensor y = Tensor::Zeros(DType::kF32, {5});
  EXPECT_DEATH(AddInPlace(x, y), "\\+=");
}

}  // namespace
}  // namespace gemmaserve::ops
