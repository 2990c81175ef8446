// Weight preparation: each backend turns the checkpoint's tensors into the form its ops read, once,
// at load. The loader (model/weights.cc) reads a rank's slices in the checkpoint's dtype and hands
// each to one of these functions; nothing else in the model knows how a device keeps weights.
//
// The CPU backend widens matrices to f32 (its kernels compute in f32, and bf16 → f32 loses
// nothing) and packs every matrix whose output count is a multiple of 16 into the panels of the
// packed Linear (linear.h). The CUDA backend keeps the checkpoint's [out, in] layout on the GPU, in
// f32 (the exact reference precision) or bf16 (the serving precision, as in the checkpoint).
// Vectors (norm weights, scales) are f32 everywhere.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/tensor.h"

namespace gemmaserve::ops {

// Where, and so in which form, a model's weights will live.
struct WeightFormat {
  Device device = Device::Cpu();
  DType matrix_dtype = DType::kF32;  // f32; or bf16 on a GPU
};

// OK when this build has a backend for `format`; otherwise an error naming what is missing.
absl::Status CheckWeightFormat(const WeightFormat& format);

// A matrix the model multiplies by, [..., out, in] (a stack of experts may lead), f32, bf16 or
// f16 in host memory, prepared for the device's Linear and GroupedLinear.
Tensor PrepareLinearWeight(const Tensor& w, const WeightFormat& format);

// Any other weight (norm weights, scales, per-expert vectors), as f32 on the device.
Tensor PrepareWeight(const Tensor& w, const WeightFormat& format);

// Bytes that `num_elements` elements of matrices take once prepared: the memory a shard needs.
int64_t PreparedWeightBytes(int64_t num_elements, const WeightFormat& format);

}  // namespace gemmaserve::ops
