#include "ops/norm.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "ops/elementwise.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::ExpectAllNear;
using test_util::RandomTensor;

constexpr float kEps = 1e-6f;

// y = x · (mean(x²) + eps)^(−1/2) · w over the last dimension, in double; empty w means no weight.
std::vector<double> ReferenceRmsNorm(const Tensor& x, const std::vector<float>& w, double eps) {
  const int64_t dim = x.dim(-1);
  std::vector<double> y(x.numel());
  for (int64_t r = 0; r < x.numel() / dim; ++r) {
    const float* row = x.data<float>() + r * dim;
    double sum_squares = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_squares += double{row[i]} * row[i];
    const double inv_rms = 1.0 / std::sqrt(sum_squares / dim + eps);
    for (int64_t i = 0; i < dim; ++i) {
      y[r * dim + i] = row[i] * inv_rms * (w.empty() ? 1.0 : w[i]);
    }
  }
  return y;
}

std::vector<float> ToVector(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

TEST(RmsNormTest, MultipliesByWeightNotOnePlusWeight) {
  // x = [3, 4]: mean(x²) = 12.5, so x/rms = [0.8485, 1.1314]. With w = [0.5, 2] Gemma 4 gives
  // [0.4243, 2.2627]; the Gemma 1–3 convention x·(1+w) would give [1.2728, 3.3941].
  Tensor x = Tensor::FromVector({3.0f, 4.0f}, {1, 2});
  Tensor w = Tensor::FromVector({0.5f, 2.0f}, {2});
  Tensor y = Tensor::Empty(DType::kF32, {1, 2});
  RmsNorm(x, w, kEps, y);
  const double inv_rms = 1.0 / std::sqrt(12.5 + 1e-6);
  EXPECT_NEAR(y.data<float>()[0], 3.0 * inv_rms * 0.5, 1e-6);
  EXPECT_NEAR(y.data<float>()[1], 4.0 * inv_rms * 2.0, 1e-6);
}

TEST(RmsNormTest, ZeroWeightGivesZeroOutput) {
  // Under x·(1+w) a zero weight would be the identity scale; under x·w it zeroes the row.
  Tensor x = Tensor::FromVector({1.0f, -2.0f, 3.0f}, {1, 3});
  Tensor w = Tensor::Zeros(DType::kF32, {3});
  Tensor y = Tensor::Empty(DType::kF32, {1, 3});
  RmsNorm(x, w, kEps, y);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(y.data<float>()[i], 0.0f);
}

TEST(RmsNormTest, MatchesReferenceWithWeight) {
  std::mt19937 rng(1);
  Tensor x = RandomTensor({5, 64}, rng, -3.0f, 3.0f);
  Tensor w = RandomTensor({64}, rng, -2.0f, 2.0f);
  Tensor y = Tensor::Empty(DType::kF32, {5, 64});
  RmsNorm(x, w, kEps, y);
  ExpectAllNear(y, ReferenceRmsNorm(x, ToVector(w), kEps), 1e-5);
}

TEST(RmsNormTest, UndefinedWeightNormalisesOnly) {
  std::mt19937 rng(2);
  Tensor x = RandomTensor({4, 32}, rng, -5.0f, 5.0f);
  Tensor y = Tensor::Empty(DType::kF32, {4, 32});
  RmsNorm(x, Tensor(), kEps, y);
  ExpectAllNear(y, ReferenceRmsNorm(x, {}, kEps), 1e-5);
  // Each row now has mean square 1 (up to eps).
  for (int r = 0; r < 4; ++r) {
    double sum_squares = 0.0;
    for (int i = 0; i < 32; ++i) sum_squares += std::pow(y.data<float>()[r * 32 + i], 2);
    EXPECT_NEAR(sum_squares / 32, 1.0, 1e-4);
  }
}

TEST(RmsNormTest, WeightedIsTheWeightlessNormTimesTheWeightBitwise) {
  // What lets an attention_k_eq_v layer store values only (ops::KeysFromValues): k_norm(raw) is
  // k_norm.weight ⊙ v_norm(raw), exactly.
  std::mt19937 rng(7);
  const Tensor x = RandomTensor({5, 3, 64}, rng, -4.0f, 4.0f);
  const Tensor w = RandomTensor({64}, rng, 0.5f, 1.5f);
  Tensor weighted = Tensor::Empty(DType::kF32, x.shape());
  Tensor plain = Tensor::Empty(DType::kF32, x.shape());
  RmsNorm(x, w, 1e-6f, weighted);
  RmsNorm(x, Tensor(), 1e-6f, plain);
  for (int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_EQ(weighted.data<float>()[i], plain.data<float>()[i] * w.data<float>()[i % 64]) << i;
  }
}

TEST(RmsNormTest, InPlaceMatchesOutOfPlace) {
  std::mt19937 rng(3);
  Tensor x = RandomTensor({3, 48}, rng);
  Tensor w = RandomTensor({48}, rng);
  const std::vector<double> expected = ReferenceRmsNorm(x, ToVector(w), kEps);
  RmsNorm(x, w, kEps, x);
  ExpectAllNear(x, expected, 1e-5);
}

TEST(RmsNormTest, RankThreeInputNormalisesEachHeadOverLastDim) {
  // The q/k/v norms run on [num_tokens, num_heads, head_dim]: every head is its own row.
  std::mt19937 rng(4);
  Tensor x = RandomTensor({2, 3, 16}, rng, -4.0f, 4.0f);
  Tensor w = RandomTensor({16}, rng);
  Tensor y = Tensor::Empty(DType::kF32, {2, 3, 16});
  RmsNorm(x, w, kEps, y);
  ExpectAllNear(y, ReferenceRmsNorm(x, ToVector(w), kEps), 1e-5);
}

TEST(RmsNormTest, EpsKeepsZeroRowFinite) {
  Tensor x = Tensor::Zeros(DType::kF32, {1, 8});
  Tensor y = Tensor::Empty(DType::kF32, {1, 8});
  RmsNorm(x, Tensor(), kEps, y);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y.data<float>()[i], 0.0f);
}

// The unfused sequence AddRmsNorm stands for; `next` untouched when next_weight is undefined.
void UnfusedAddRmsNorm(const Tensor& x, const Tensor& post_weight, float scale,
                       const Tensor& next_weight, Tensor& residual, Tensor& next) {
  Tensor normed = Tensor::Empty(DType::kF32, x.shape());
  RmsNorm(x, post_weight, kEps, normed);
  AddInPlace(residual, normed);
  ScaleInPlace(residual, scale);
  if (next_weight.defined()) RmsNorm(residual, next_weight, kEps, next);
}

TEST(AddRmsNormTest, IsTheNormsAndAdditionsOneAtATimeBitwise) {
  std::mt19937 rng(9);
  for (const float scale : {1.0f, 0.37f}) {
    for (const bool with_next : {true, false}) {
      const Tensor x = RandomTensor({6, 320}, rng, -4.0f, 4.0f);
      const Tensor post = RandomTensor({320}, rng, 0.5f, 3.0f);
      const Tensor next_weight = with_next ? RandomTensor({320}, rng, 0.5f, 3.0f) : Tensor();
      const Tensor start = RandomTensor({6, 320}, rng, -20.0f, 20.0f);
      Tensor fused = start.ToF32();
      Tensor fused_next = Tensor::Zeros(DType::kF32, {6, 320});
      AddRmsNorm(x, post, scale, next_weight, kEps, fused, fused_next);
      Tensor unfused = start.ToF32();
      Tensor unfused_next = Tensor::Zeros(DType::kF32, {6, 320});
      UnfusedAddRmsNorm(x, post, scale, next_weight, unfused, unfused_next);
      for (int64_t i = 0; i < x.numel(); ++i) {
        ASSERT_EQ(fused.data<float>()[i], unfused.data<float>()[i]) << "residual " << i;
        ASSERT_EQ(fused_next.data<float>()[i], unfused_next.data<float>()[i]) << "next " << i;
      }
    }
  }
}

using RmsNormDeathTest = test_util::ThreadsafeDeathTest;

TEST_F(RmsNormDeathTest, AddRmsNormIntoItsOwnInputDies) {
  Tensor x = Tensor::Zeros(DType::kF32, {2, 8});
  Tensor w = Tensor::Zeros(DType::kF32, {8});
  Tensor residual = Tensor::Zeros(DType::kF32, {2, 8});
  EXPECT_DEATH(AddRmsNorm(x, w, 1.0f, w, kEps, residual, residual), "AddRmsNorm next");
}

TEST_F(RmsNormDeathTest, WeightOfWrongLengthDies) {
  Tensor x = Tensor::Zeros(DType::kF32, {2, 8});
  Tensor w = Tensor::Zeros(DType::kF32, {7});
  Tensor y = Tensor::Empty(DType::kF32, {2, 8});
  EXPECT_DEATH(RmsNorm(x, w, kEps, y), "RmsNorm weight");
}

TEST_F(RmsNormDeathTest, OutputOfOtherShapeDies) {
  Tensor x = Tensor::Zeros(DType::kF32, {2, 8});
  Tensor y = Tensor::Empty(DType::kF32, {8, 2});
  EXPECT_DEATH(RmsNorm(x, Tensor(), kEps, y), "RmsNorm");
}

}  // namespace
}  // namespace gemmaserve::ops
