#include "ops/rope.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::Clone;
using test_util::ExpectAllNear;
using test_util::Ints;
using test_util::RandomTensor;

// NeoX RoPE in double: for j < rope_angles, dims (j, j + head_dim/2) rotate by
// position · theta^(−2j/head_dim); every other dim passes through.
std::vector<double> ReferenceRope(const Tensor& x, const std::vector<int32_t>& positions,
                                  int64_t rope_angles, double theta) {
  const int64_t num_heads = x.dim(1), head_dim = x.dim(2), half = head_dim / 2;
  std::vector<double> y(x.data<float>(), x.data<float>() + x.numel());
  for (int64_t t = 0; t < x.dim(0); ++t) {
    for (int64_t h = 0; h < num_heads; ++h) {
      double* head = y.data() + (t * num_heads + h) * head_dim;
      for (int64_t j = 0; j < rope_angles; ++j) {
        const double angle = positions[t] * std::pow(theta, -2.0 * j / head_dim);
        const double a = head[j], b = head[j + half];
        head[j] = a * std::cos(angle) - b * std::sin(angle);
        head[j + half] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  }
  return y;
}

TEST(RotaryTest, RotatesHalvesNotInterleavedPairs) {
  // head_dim 4, theta 1e4: inv_freq = [1, 0.01]; dim 0 pairs with dim 2 and dim 1 with dim 3.
  Tensor x = Tensor::FromVector({1, 2, 3, 4}, {1, 1, 4});
  const int32_t position = 1;
  Rotary(4, 2, 10000.0).Apply(x, Ints({position}));
  const double c0 = std::cos(1.0), s0 = std::sin(1.0), c1 = std::cos(0.01), s1 = std::sin(0.01);
  ExpectAllNear(x, {1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1}, 1e-6);
}

TEST(RotaryTest, PositionZeroIsIdentity) {
  std::mt19937 rng(40);
  Tensor x = RandomTensor({2, 3, 16}, rng);
  const Tensor before = Clone(x);
  const std::vector<int32_t> positions = {0, 0};
  Rotary(16, 8, 10000.0).Apply(x, Ints(positions));
  ExpectAllNear(x, std::vector<double>(before.data<float>(), before.data<float>() + x.numel()),
                0.0);
}

TEST(RotaryTest, DefaultMatchesReferenceForEveryTokenAndHead) {
  // Gemma 4 sliding layers: head_dim 256, all 128 angles, theta 1e4; one position per token.
  std::mt19937 rng(41);
  Tensor x = RandomTensor({4, 3, 256}, rng);
  const std::vector<int32_t> positions = {0, 1, 37, 190};
  const std::vector<double> expected = ReferenceRope(x, positions, 128, 10000.0);
  Rotary(256, 128, 10000.0).Apply(x, Ints(positions));
  ExpectAllNear(x, expected, 1e-4);
}

TEST(RotaryTest, ProportionalPairsDimsZeroTo63With256To319) {
  // Gemma 4 full layers: head_dim 512, rope_angles 64, theta 1e6. A unit vector in dim 0 turns
  // into dim 256 by the angle `position` (inv_freq[0] = 1); nothing else moves.
  Tensor x = Tensor::Zeros(DType::kF32, {1, 1, 512});
  x.data<float>()[0] = 1.0f;
  const int32_t position = 2;
  Rotary(512, 64, 1e6).Apply(x, Ints({position}));
  std::vector<double> expected(512, 0.0);
  expected[0] = std::cos(2.0);
  expected[256] = std::sin(2.0);
  ExpectAllNear(x, expected, 1e-6);
}

TEST(RotaryTest, ProportionalExponentDividesByFullHeadDim) {
  // The last rotated angle, j = 63, has inv_freq 1e6^(−126/512) (not 1e6^(−126/128)).
  Tensor x = Tensor::Zeros(DType::kF32, {1, 1, 512});
  x.data<float>()[63] = 1.0f;
  const int32_t position = 100;
  Rotary(512, 64, 1e6).Apply(x, Ints({position}));
  const double angle = 100.0 * std::pow(1e6, -126.0 / 512.0);
  EXPECT_NEAR(x.data<float>()[63], std::cos(angle), 1e-5);
  EXPECT_NEAR(x.data<float>()[319], std::sin(angle), 1e-5);
}

TEST(RotaryTest, ProportionalLeavesNopeDimsUntouched) {
  std::mt19937 rng(42);
  Tensor x = RandomTensor({3, 2, 512}, rng);
  const Tensor before = Clone(x);
  const std::vector<int32_t> positions = {5, 77, 1023};
  const std::vector<double> expected = ReferenceRope(x, positions, 64, 1e6);
  Rotary(512, 64, 1e6).Apply(x, Ints(positions));
  // f32 angles (as HF computes them) drift ~1e-4 rad from double by position 1023.
  ExpectAllNear(x, expected, 5e-4);
  for (int64_t row = 0; row < 3 * 2; ++row) {
    for (int64_t d = 0; d < 512; ++d) {
      const bool rotated = d < 64 || (d >= 256 && d < 320);
      const float* now = x.data<float>() + row * 512;
      const float* was = before.data<float>() + row * 512;
      if (!rotated) {
        ASSERT_EQ(now[d], was[d]) << "dim " << d << " of row " << row << " moved";
      } else if (d < 64) {
        EXPECT_NE(now[d], was[d]) << "dim " << d << " of row " << row << " did not rotate";
      }
    }
  }
}

// Positions past 200,000 (Gemma 4's context reaches 262,144): the angle is the f32 product of the
// position and the f32 inverse frequency, as the reference computes it (HF:
// `inv_freq = 1 / theta ** (arange(0, 2·angles, 2).float() / head_dim)`, then
// `inv_freq @ position_ids.float()` in f32). An angle of ~2·10⁵ rad is only known to its f32 ulp
// (0.016 rad), so the double formula would be off by that much: the reference here takes the same
// f32 angle and rotates in double. Both RoPE kinds of the model.
TEST(RotaryTest, PositionsPast200000MatchTheF32AngleFormula) {
  struct Kind {
    int64_t head_dim, rope_angles;
    float theta;
  };
  for (const Kind kind : {Kind{256, 128, 1e4f}, Kind{512, 64, 1e6f}}) {
    SCOPED_TRACE(kind.head_dim);
    std::mt19937 rng(7);
    Tensor x = RandomTensor({4, 2, kind.head_dim}, rng);
    const std::vector<int32_t> positions = {200001, 231071, 262143, 250000};
    const int64_t half = kind.head_dim / 2;
    std::vector<double> expected(x.data<float>(), x.data<float>() + x.numel());
    for (int64_t t = 0; t < 4; ++t) {
      for (int64_t j = 0; j < kind.rope_angles; ++j) {
        const float exponent = static_cast<float>(2 * j) / static_cast<float>(kind.head_dim);
        const float inv_freq = 1.0f / std::pow(kind.theta, exponent);
        const float angle = static_cast<float>(positions[t]) * inv_freq;
        for (int64_t h = 0; h < 2; ++h) {
          double* head = expected.data() + (t * 2 + h) * kind.head_dim;
          const double a = head[j], b = head[j + half];
          head[j] = a * std::cos(double{angle}) - b * std::sin(double{angle});
          head[j + half] = b * std::cos(double{angle}) + a * std::sin(double{angle});
        }
      }
    }
    Rotary(kind.head_dim, kind.rope_angles, kind.theta).Apply(x, Ints(positions));
    ExpectAllNear(x, expected, 2e-6);
  }
}

TEST(RotaryTest, TheTableGrowsAndHoldsTheCosAndSinApplyRotatesBy) {
  // A full layer's proportional RoPE; the table asked for more positions three times.
  Rotary rotary(512, 64, 1e6);
  EXPECT_GE(rotary.Table(3).positions, 3);
  EXPECT_GE(rotary.Table(1000).positions, 1000);
  const RopeTable table = rotary.Table(1001);
  ASSERT_GE(table.positions, 1001);
  ASSERT_EQ(table.angles, 64);
  // Rotating (1, 0) pairs gives (cos, sin) exactly.
  const std::vector<int32_t> positions = {0, 2, 999, 1000};
  Tensor x = Tensor::Zeros(DType::kF32, {4, 1, 512});
  for (int64_t t = 0; t < 4; ++t) {
    for (int64_t j = 0; j < 64; ++j) x.data<float>()[t * 512 + j] = 1.0f;
  }
  rotary.Apply(x, Ints(positions));
  for (int64_t t = 0; t < 4; ++t) {
    const float* row = table.Row(positions[t]);
    for (int64_t j = 0; j < 64; ++j) {
      const float* rotated = x.data<float>() + t * 512;
      ASSERT_EQ(row[j], rotated[j]) << "cos, position " << positions[t];
      ASSERT_EQ(row[64 + j], rotated[256 + j]) << "sin, position " << positions[t];
    }
  }
}

TEST(RotaryTest, PreservesNormOfEveryPair) {
  std::mt19937 rng(43);
  Tensor x = RandomTensor({2, 4, 64}, rng, -3.0f, 3.0f);
  const Tensor before = Clone(x);
  const std::vector<int32_t> positions = {3, 500};
  Rotary(64, 32, 10000.0).Apply(x, Ints(positions));
  for (int64_t row = 0; row < 2 * 4; ++row) {
    for (int64_t j = 0; j < 32; ++j) {
      const float* now = x.data<float>() + row * 64;
      const float* was = before.data<float>() + row * 64;
      EXPECT_NEAR(std::hypot(now[j], now[j + 32]), std::hypot(was[j], was[j + 32]), 1e-5);
    }
  }
}

using RotaryDeathTest = test_util::ThreadsafeDeathTest;

TEST_F(RotaryDeathTest, InputOfOtherHeadDimDies) {
  Tensor x = Tensor::Zeros(DType::kF32, {1, 1, 128});
  const int32_t position = 0;
  EXPECT_DEATH(Rotary(256, 128, 1e4).Apply(x, Ints({position})), "CHECK failed");
}

TEST_F(RotaryDeathTest, MoreAnglesThanHalfHeadDimDies) {
  EXPECT_DEATH(Rotary(64, 33, 1e4), "rope_angles 33");
}

}  // namespace
}  // namespace gemmaserve::ops
