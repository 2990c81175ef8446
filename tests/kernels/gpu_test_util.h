// What the GPU tests share: skipping where no GPU is visible, moving tensors to and from the GPU,
// random inputs, and the comparison of a kernel's output with its CPU op's. Test-only.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/device.h"
#include "ops/copy.h"

namespace gemmaserve::testing {

// Why no GPU test can run here, or empty when device 0 is usable.
inline std::string NoGpuReason() {
  const absl::StatusOr<std::vector<kernels::CudaDevice>> devices = kernels::ListCudaDevices();
  if (!devices.ok()) return std::string(devices.status().message());
  if (devices->empty()) return "no CUDA device is visible";
  return "";
}

#define GS_REQUIRE_GPU()                                          \
  do {                                                            \
    const std::string gs_no_gpu_ = ::gemmaserve::testing::NoGpuReason(); \
    if (!gs_no_gpu_.empty()) GTEST_SKIP() << gs_no_gpu_;          \
  } while (false)

inline Device Gpu() { return Device::Cuda(0); }
inline Tensor ToGpu(const Tensor& host) { return ops::ToDevice(host, Gpu()); }
inline Tensor ToCpu(const Tensor& device) { return ops::ToHost(device); }

// A CPU tensor of `shape` and `dtype` (f32 or i32) with values uniform in [lo, hi).
inline Tensor Random(Shape shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// A CPU f32 tensor of NaN: an output every element of which the kernel must write.
inline Tensor Nan(Shape shape) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  std::fill_n(t.data<float>(), t.numel(), std::nanf(""));
  return t;
}

inline Tensor Ints(const std::vector<int32_t>& values) {
  return Tensor::FromInts(values, {static_cast<int64_t>(values.size())});
}

// f32 values rounded to bf16, as a bf16 tensor and as the f32 tensor of the same values.
inline Tensor ToBf16(const Tensor& f32) {
  Tensor out = Tensor::Empty(DType::kBF16, f32.shape());
  for (int64_t i = 0; i < f32.numel(); ++i) out.data<uint16_t>()[i] = F32ToBf16(f32.data<float>()[i]);
  return out;
}
inline Tensor RoundedToBf16(const Tensor& f32) { return ToBf16(f32).ToF32(); }

// Expects max |actual − expected| ≤ tolerance · max(max |expected|, 1e-30) over all elements (both
// host f32 of equal size), reporting the worst element; NaN never passes.
inline void ExpectClose(const Tensor& actual, const Tensor& expected, double tolerance,
                        const std::string& what) {
  ASSERT_EQ(actual.numel(), expected.numel()) << what;
  const Tensor a = actual.ToF32();
  const Tensor e = expected.ToF32();
  double scale = 1e-30;
  for (int64_t i = 0; i < e.numel(); ++i) scale = std::max(scale, std::fabs(double{e.data<float>()[i]}));
  double worst = 0;
  int64_t worst_index = 0;
  for (int64_t i = 0; i < e.numel(); ++i) {
    const double diff = std::fabs(double{a.data<float>()[i]} - e.data<float>()[i]);
    const double error = std::isnan(diff) ? INFINITY : diff;
    if (error > worst) {
      worst = error;
      worst_index = i;
    }
  }
  EXPECT_LE(worst, tolerance * scale)
      << what << ": worst at " << worst_index << ", kernel " << a.data<float>()[worst_index]
      << " vs op " << e.data<float>()[worst_index] << " (max |ref| " << scale << ")";
}

}  // namespace gemmaserve::testing
