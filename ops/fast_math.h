// exp and tanh in plain float arithmetic that the compiler vectorises, for the element-wise ops
// on the hot path (the final softcap touches every logit of every sequence, 262,144 per token).
// libm's expf and tanhf are scalar calls; these are a branch-free Cody–Waite reduction and a
// degree-6 polynomial. Accuracy (tests/ops/fast_math_test.cc): FastExp within 2 ulp on
// [−87, 88]; FastTanh within 2e-7 absolute and 1e-6 relative, which is what softcap and GELU
// need: both scale tanh by at most 30 and are checked against references at 1e-3.
// Always inlined: a call left in a loop would keep it from being vectorised (vector_loops.cc).
// Pure functions; thread-safe.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace gemmaserve::ops {

[[gnu::always_inline]] inline float FastExp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln 2 split so that n · kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  x = std::min(std::max(x, -87.0f), 88.0f);
  // n = round(x / ln 2): adding 1.5 · 2^23 leaves it in the low bits of the mantissa. No
  // float-to-int conversion: with SSE4.1 GCC makes that a rounding call, and a loop that selects
  // around a call (FastTanh's) is not vectorised.
  constexpr float kShifter = 12582912.0f;
  const float t = x * kLog2e + kShifter;
  const float nf = t - kShifter;
  int32_t t_bits;
  std::memcpy(&t_bits, &t, sizeof(t_bits));
  const int32_t n = t_bits - 0x4b400000;  // the bits of kShifter
  const float r = (x - nf * kLn2Hi) - nf * kLn2Lo;  // |r| ≤ ln 2 / 2
  // exp(r) by its Taylor polynomial (Cephes' expf coefficients).
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (n + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// tanh as Cephes' tanhf computes it: an odd polynomial below 0.625, where 1 − 2 / (exp(2x) + 1)
// would cancel, and that formula above, saturating to ±1. Both sides are computed and one is
// selected, so loops over it stay branch-free.
[[gnu::always_inline]] inline float FastTanh(float x) {
  const float a = std::fabs(x);
  const float s = x * x;
  float small = -5.70498872745e-3f;
  small = small * s + 2.06390887954e-2f;
  small = small * s - 5.37397155531e-2f;
  small = small * s + 1.33314422036e-1f;
  small = small * s - 3.33332819422e-1f;
  small = small * s * x + x;
  const float e = FastExp(2.0f * std::min(a, 10.0f));
  const float large = std::copysign(1.0f - 2.0f / (e + 1.0f), x);
  return a < 0.625f ? small : large;
}

}  // namespace gemmaserve::ops
