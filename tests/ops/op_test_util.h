// Helpers shared by the op tests: seeded random f32 tensors and a max-error comparison against a
// reference computed in double.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "common/tensor.h"
#include "gtest/gtest.h"

namespace gemmaserve::ops::test_util {

// A CPU f32 tensor of `shape` with values uniform in [lo, hi) drawn from `rng`.
inline Tensor RandomTensor(Shape shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// A CPU f32 tensor of `shape` filled with NaN: an output the op must overwrite, or a cache whose
// unwritten slots poison any result that reads them.
inline Tensor NanTensor(Shape shape) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<float>()[i] = std::numeric_limits<float>::quiet_NaN();
  return t;
}

// A copy of `t` (CPU f32) in fresh storage, so an in-place op can be compared with its input.
inline Tensor Clone(const Tensor& t) {
  Tensor copy = Tensor::Empty(DType::kF32, t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) copy.data<float>()[i] = t.data<float>()[i];
  return copy;
}

// Expects every element of `actual` within `tolerance` of `expected`; on failure reports the
// worst index once instead of one line per element.
inline void ExpectAllNear(const Tensor& actual, const std::vector<double>& expected,
                          double tolerance) {
  ASSERT_EQ(static_cast<size_t>(actual.numel()), expected.size());
  double worst_error = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double difference = std::abs(actual.data<float>()[i] - expected[i]);
    const double error = std::isnan(difference) ? INFINITY : difference;
    if (error > worst_error) {
      worst_error = error;
      worst = i;
    }
  }
  EXPECT_LE(worst_error, tolerance)
      << "worst at flat index " << worst << ": actual " << actual.data<float>()[worst]
      << ", expected " << expected[worst];
}

// Base for death-test suites: OpenBLAS has started its thread pool by then, so the child
// re-executes the binary ("threadsafe") instead of forking a threaded process.
class ThreadsafeDeathTest : public ::testing::Test {
 protected:
  ThreadsafeDeathTest() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

}  // namespace gemmaserve::ops::test_util
