#include "ops/activation.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::ExpectAllNear;
using test_util::RandomTensor;

// PyTorch gelu(approximate="tanh"), in double.
double ReferenceGeluTanh(double x) {
  const double kSqrt2OverPi = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(kSqrt2OverPi * (x + 0.044715 * x * x * x)));
}

TEST(GeluTanhTest, UsesTanhApproximationNotErf) {
  // gelu_tanh(1) = 0.841192; the exact erf GELU gives 0.841345, which is 1.5e-4 away.
  EXPECT_NEAR(GeluTanh(1.0f), 0.8411920, 1e-6);
  EXPECT_GT(std::abs(GeluTanh(1.0f) - 0.5 * (1.0 + std::erf(1.0 / std::sqrt(2.0)))), 1e-4);
  EXPECT_EQ(GeluTanh(0.0f), 0.0f);
  EXPECT_NEAR(GeluTanh(-1.0f), -0.1588080, 1e-6);
}

TEST(GeluTanhTest, MatchesReferenceOverWideRange) {
  std::mt19937 rng(10);
  std::uniform_real_distribution<float> dist(-12.0f, 12.0f);
  for (int i = 0; i < 2000; ++i) {
    const float x = dist(rng);
    EXPECT_NEAR(GeluTanh(x), ReferenceGeluTanh(x), 1e-5 * (1.0 + std::abs(x))) << "x = " << x;
  }
}

TEST(GeluTanhGateTest, GatesFirstHalfAndMultipliesBySecondHalf) {
  // One row, width 2: gate = [1, 0], up = [3, 5] -> [3·gelu(1), 5·gelu(0)] = [2.523576, 0].
  Tensor gate_up = Tensor::FromVector({1.0f, 0.0f, 3.0f, 5.0f}, {1, 4});
  Tensor out = Tensor::Empty(DType::kF32, {1, 2});
  GeluTanhGate(gate_up, out);
  EXPECT_NEAR(out.data<float>()[0], 3.0 * 0.8411920, 1e-5);
  EXPECT_EQ(out.data<float>()[1], 0.0f);
}

TEST(GeluTanhGateTest, MatchesReferenceOnRandomRows) {
  std::mt19937 rng(11);
  const int64_t rows = 7, width = 33;
  Tensor gate_up = RandomTensor({rows, 2 * width}, rng, -4.0f, 4.0f);
  Tensor out = Tensor::Empty(DType::kF32, {rows, width});
  GeluTanhGate(gate_up, out);
  std::vector<double> expected(rows * width);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < width; ++i) {
      const float gate = gate_up.data<float>()[r * 2 * width + i];
      const float up = gate_up.data<float>()[r * 2 * width + width + i];
      expected[r * width + i] = ReferenceGeluTanh(gate) * up;
    }
  }
  ExpectAllNear(out, expected, 1e-5);
}

using GeluTanhGateDeathTest = test_util::ThreadsafeDeathTest;

TEST_F(GeluTanhGateDeathTest, OddInputWidthDies) {
  Tensor gate_up = Tensor::Zeros(DType::kF32, {2, 5});
  Tensor out = Tensor::Empty(DType::kF32, {2, 2});
  EXPECT_DEATH(GeluTanhGate(gate_up, out), "CHECK failed");
}

TEST_F(GeluTanhGateDeathTest, OutputOfWrongWidthDies) {
  Tensor gate_up = Tensor::Zeros(DType::kF32, {2, 8});
  Tensor out = Tensor::Empty(DType::kF32, {2, 8});
  EXPECT_DEATH(GeluTanhGate(gate_up, out), "GeluTanhGate out");
}

}  // namespace
}  // namespace gemmaserve::ops
