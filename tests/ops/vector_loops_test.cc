// Every build of the row loops this CPU runs against double-precision references, on lengths that
// leave every vector tail (1 … 2 × 16 + a remainder, and a whole vocabulary of 262,144).
#include "ops/vector_loops.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ops/linear.h"
#include "ops/panel_kernel.h"

namespace gemmaserve::ops {
namespace {

class VectorLoopsTest : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string cap = GetParam();
    if (cap == "avx2" && !internal::CpuHasAvx2Fma()) GTEST_SKIP() << "no AVX2 + FMA here";
    if (cap == "avx512" && !internal::CpuHasAvx512f()) GTEST_SKIP() << "no AVX-512F here";
    ASSERT_TRUE(SetMaxCpuIsa(cap).ok());
    ASSERT_EQ(std::string(VectorLoopsName()), cap);
  }
  void TearDown() override { ASSERT_TRUE(SetMaxCpuIsa("").ok()); }
};

std::vector<float> Logits(int64_t n, uint32_t seed, float spread) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, spread);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

const int64_t kLengths[] = {0, 1, 7, 15, 16, 17, 31, 33, 255, 256, 257, 1000, 262144};

TEST_P(VectorLoopsTest, SoftcapMatchesTanh) {
  for (int64_t n : kLengths) {
    std::vector<float> x = Logits(n, 1, 40.0f);
    const std::vector<float> original = x;
    SoftcapRow(x.data(), n, 30.0f);
    for (int64_t i = 0; i < n; ++i) {
      const double expected = 30.0 * std::tanh(double{original[i]} / 30.0);
      ASSERT_NEAR(x[i], expected, 1e-5 * std::max(1.0, std::abs(expected))) << "n " << n << " i " << i;
    }
  }
}

TEST_P(VectorLoopsTest, SumExpMatchesDouble) {
  for (int64_t n : kLengths) {
    const std::vector<float> x = Logits(n, 2, 5.0f);
    for (const float scale : {1.0f, 0.7f}) {
      double top = -INFINITY;
      for (float v : x) top = std::max(top, double{v} * scale);
      const float shift = n == 0 ? 0.0f : static_cast<float>(top);
      double expected = 0.0;
      for (float v : x) expected += std::exp(double{v} * scale - shift);
      EXPECT_NEAR(SumExpRow(x.data(), n, scale, shift), expected, 1e-6 * std::max(1.0, expected))
          << "n " << n << " scale " << scale;
    }
  }
}

TEST_P(VectorLoopsTest, MaxFindsTheLargestAndSkipsNaN) {
  for (int64_t n : kLengths) {
    std::vector<float> x = Logits(n, 3, 10.0f);
    float expected = -INFINITY;
    for (float v : x) expected = std::max(expected, v);
    EXPECT_EQ(MaxRow(x.data(), n), expected) << "n " << n;
    if (n < 2) continue;
    x[n / 2] = NAN;
    x[n - 1] = 1e30f;  // after a NaN, in the tail
    EXPECT_EQ(MaxRow(x.data(), n), 1e30f) << "n " << n;
  }
  const std::vector<float> nans(19, NAN);
  EXPECT_EQ(MaxRow(nans.data(), 19), -INFINITY);
}

TEST_P(VectorLoopsTest, GeluTanhGateMatchesTheFormula) {
  for (int64_t n : kLengths) {
    const std::vector<float> gate = Logits(n, 4, 3.0f);
    const std::vector<float> up = Logits(n, 5, 1.0f);
    std::vector<float> out(n, NAN);
    GeluTanhGateRow(gate.data(), up.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate[i];
      const double gelu = 0.5 * g * (1.0 + std::tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
      ASSERT_NEAR(out[i], gelu * up[i], 1e-5 * std::max(1.0, std::abs(gelu * up[i])))
          << "n " << n << " i " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryInstructionSet, VectorLoopsTest,
                         testing::Values("portable", "avx2", "avx512"),
                         [](const testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace gemmaserve::ops
