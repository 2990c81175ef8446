// Every build of the row loops this CPU runs against double-precision references, on lengths that
// leave every vector tail (1 … 2 × 16 + a remainder, and a whole vocabulary of 262,144), and
// against each other bit for bit.
#include "ops/vector_loops.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "ops/linear.h"
#include "ops/panel_kernel.h"
#include "ops/rope.h"

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
      ASSERT_NEAR(x[i], expected, 1e-5 * std::max(1.0, std::abs(expected)))
          << "n " << n << " i " << i;
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

TEST_P(VectorLoopsTest, ExpShiftWritesTheWeightsAndSumsThemWithoutSubnormals) {
  for (int64_t n : kLengths) {
    std::vector<float> x = Logits(n, 6, 30.0f);  // many weights far below e^−40 of the shift
    const std::vector<float> original = x;
    float shift = 0.0f;  // the row's maximum, as the attention passes it
    for (float v : original) shift = std::max(shift, v);
    const float sum = ExpShiftRow(x.data(), n, shift);
    double expected_sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double t = double{original[i]} - shift;
      if (t < -40.0) {
        ASSERT_EQ(x[i], 0.0f) << "n " << n << " i " << i;
        continue;
      }
      ASSERT_NEAR(x[i], std::exp(t), 2e-6 * std::exp(t)) << "n " << n << " i " << i;
      ASSERT_TRUE(std::isnormal(x[i])) << x[i];
      expected_sum += x[i];
    }
    EXPECT_NEAR(sum, expected_sum, 1e-5 * std::max(1.0, expected_sum)) << "n " << n;
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
      const double gelu =
          0.5 * g * (1.0 + std::tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
      ASSERT_NEAR(out[i], gelu * up[i], 1e-5 * std::max(1.0, std::abs(gelu * up[i])))
          << "n " << n << " i " << i;
    }
  }
}

// Keys rebuilt from values are bitwise Rotary::Apply of values ⊙ weight, for Gemma 4's full
// layers (512 dims, 64 angles) and sliding ones (256, 128), at positions past 200,000.
TEST_P(VectorLoopsTest, KeysFromValuesRowsAreWhatRotaryApplyGives) {
  for (const auto [head_dim, angles, theta] :
       {std::tuple<int64_t, int64_t, double>{512, 64, 1e6}, {256, 128, 1e4}}) {
    constexpr int64_t kRows = 37;
    constexpr int64_t kFirst = 200000;
    const std::vector<float> values = Logits(kRows * head_dim, 9, 1.0f);
    const std::vector<float> weight = Logits(head_dim, 10, 0.5f);
    std::vector<float> expected(kRows * head_dim);
    std::vector<int32_t> positions(kRows);
    for (int64_t r = 0; r < kRows; ++r) {
      positions[r] = static_cast<int32_t>(kFirst + r);
      for (int64_t e = 0; e < head_dim; ++e) {
        expected[r * head_dim + e] = values[r * head_dim + e] * weight[e];
      }
    }
    Rotary rotary(head_dim, angles, theta);
    Tensor rotated = Tensor::FromVector(expected, {kRows, 1, head_dim});
    rotary.Apply(rotated, Tensor::FromInts(positions, {kRows}));
    std::vector<float> keys(kRows * head_dim, NAN);
    const RopeTable table = rotary.Table(kFirst + kRows);
    KeysFromValuesRows(values.data(), kRows, head_dim, weight.data(), table.Row(kFirst), angles,
                       keys.data());
    for (int64_t i = 0; i < kRows * head_dim; ++i) {
      ASSERT_EQ(keys[i], rotated.data<float>()[i]) << "head_dim " << head_dim << " element " << i;
    }
  }
}

// Each function's results under every cap this CPU admits, bit for bit against the portable build.
TEST(VectorLoopsBitwiseTest, EveryBuildGivesTheSameBits) {
  struct Results {
    std::vector<float> softcap, exp_shift, gelu;
    std::vector<double> sum_exp;
    std::vector<float> sums, maxima;
  };
  auto run = [](const std::string& cap) {
    EXPECT_TRUE(SetMaxCpuIsa(cap).ok());
    Results r;
    for (int64_t n : {int64_t{1000}, int64_t{262144} + 5}) {
      std::vector<float> x = Logits(n, 8, 20.0f);
      r.maxima.push_back(MaxRow(x.data(), n));
      r.sum_exp.push_back(SumExpRow(x.data(), n, 0.9f, r.maxima.back() * 0.9f));
      std::vector<float> gelu(n);
      GeluTanhGateRow(x.data(), x.data() + n / 2, n / 2, gelu.data());
      r.gelu.insert(r.gelu.end(), gelu.begin(), gelu.begin() + n / 2);
      std::vector<float> weights = x;
      r.sums.push_back(ExpShiftRow(weights.data(), n, r.maxima.back()));
      r.exp_shift.insert(r.exp_shift.end(), weights.begin(), weights.end());
      SoftcapRow(x.data(), n, 30.0f);
      r.softcap.insert(r.softcap.end(), x.begin(), x.end());
    }
    EXPECT_TRUE(SetMaxCpuIsa("").ok());
    return r;
  };
  const Results portable = run("portable");
  std::vector<std::string> caps;
  if (internal::CpuHasAvx2Fma()) caps.push_back("avx2");
  if (internal::CpuHasAvx512f()) caps.push_back("avx512");
  if (caps.empty()) GTEST_SKIP() << "only the portable build runs here";
  for (const std::string& cap : caps) {
    const Results r = run(cap);
    EXPECT_TRUE(r.softcap == portable.softcap) << cap;
    EXPECT_TRUE(r.exp_shift == portable.exp_shift) << cap;
    EXPECT_TRUE(r.gelu == portable.gelu) << cap;
    EXPECT_TRUE(r.sum_exp == portable.sum_exp) << cap;
    EXPECT_TRUE(r.sums == portable.sums) << cap;
    EXPECT_TRUE(r.maxima == portable.maxima) << cap;
  }
}

INSTANTIATE_TEST_SUITE_P(EveryInstructionSet, VectorLoopsTest,
                         testing::Values("portable", "avx2", "avx512"),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace gemmaserve::ops
