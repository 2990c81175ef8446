// FastExp and FastTanh against libm in double over their whole useful range.
#include "ops/fast_math.h"

#include <cmath>

#include "gtest/gtest.h"

namespace gemmaserve::ops {
namespace {

TEST(FastMathTest, ExpIsWithinTwoUlpsOfLibm) {
  double worst = 0.0;
  for (float x = -87.0f; x <= 88.0f; x += 0.00731f) {
    const double expected = std::exp(static_cast<double>(x));
    const double relative = std::abs(FastExp(x) - expected) / expected;
    worst = std::max(worst, relative);
  }
  EXPECT_LT(worst, 2.5e-7);  // 2 ulp of a float is 2.4e-7 relative
  EXPECT_EQ(FastExp(0.0f), 1.0f);
}

TEST(FastMathTest, TanhIsWithinTwoTenMillionthsAndOneMillionthRelative) {
  double worst_absolute = 0.0;
  double worst_relative = 0.0;
  for (float x = -40.0f; x <= 40.0f; x += 0.000913f) {
    const double expected = std::tanh(static_cast<double>(x));
    const double error = std::abs(FastTanh(x) - expected);
    worst_absolute = std::max(worst_absolute, error);
    if (expected != 0.0) worst_relative = std::max(worst_relative, error / std::abs(expected));
  }
  EXPECT_LT(worst_absolute, 2e-7);
  EXPECT_LT(worst_relative, 1e-6);
  EXPECT_EQ(FastTanh(0.0f), 0.0f);
  EXPECT_EQ(FastTanh(1e6f), 1.0f);
  EXPECT_EQ(FastTanh(-1e6f), -1.0f);
  EXPECT_FLOAT_EQ(FastTanh(-0.5f), -FastTanh(0.5f));
}

}  // namespace
}  // namespace gemmaserve::ops
