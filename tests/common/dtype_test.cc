#include "common/dtype.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace gemmaserve {
namespace {

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  // 1 + 2^-8 lies exactly between two bf16 values; the even one (1.0) wins.
  EXPECT_EQ(F32ToBf16(1.00390625f), 0x3f80);
  EXPECT_EQ(F32ToBf16(1.01171875f), 0x3f82);  // 1 + 3·2^-8: ties to the even mantissa 2
  EXPECT_FLOAT_EQ(RoundToBf16(std::sqrt(5376.0f)), 73.5f);  // GEMMA4.md §2.2 table
  EXPECT_FLOAT_EQ(RoundToBf16(std::sqrt(2816.0f)), 53.0f);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(NAN))));
}

TEST(DTypeTest, Bf16RoundTripsEveryBf16Value) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const float value = Bf16ToF32(static_cast<uint16_t>(bits));
    if (std::isnan(value)) continue;
    ASSERT_EQ(F32ToBf16(value), bits);
  }
}

TEST(DTypeTest, F16RoundTripsEveryF16Value) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const float value = F16ToF32(static_cast<uint16_t>(bits));
    if (std::isnan(value)) continue;
    ASSERT_EQ(F32ToF16(value), bits) << "bits " << bits << " value " << value;
  }
}

TEST(DTypeTest, F16KnownValues) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xc000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(1e6f), 0x7c00);
  EXPECT_FLOAT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
}

TEST(DTypeTest, ParsesNames) {
  EXPECT_EQ(ParseDType("bf16").value(), DType::kBF16);
  EXPECT_FALSE(ParseDType("f8").ok());
}

}  // namespace
}  // namespace gemmaserve
