// Weight preparation: each backend turns the checkpoint's tensors into the form its ops read, once,
// at load. The loader (model/weights.cc) reads a rank's slices in the checkpoint's dtype and hands
// each to one of these functions; nothing else in the model knows how a device keeps weights.
//
// The CPU backend packs every matrix whose output count is a multiple of 16 into the panels of the
// packed Linear (linear.h), in bf16 when the checkpoint is bf16 (its tiles widen the weights to
// f32 in registers: exact, and half the bytes of an f32 copy), else in f32. The CUDA backend keeps the checkpoint's [out, in] layout on the GPU, in
// f32 (the exact reference precision) or bf16 (the serving precision, as in the checkpoint).
// Vectors (norm weights, scales) are f32 everywhere.
#pragma once

#include <string>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor.h"

namespace gemmaserve::ops {

// Where, and so in which form, a model's weights will live.
struct WeightFormat {
  Device device = Device::Cpu();
  // On a GPU, the matrices' dtype: f32 (the exact reference) or bf16 (serving). The CPU computes
  // in f32 whatever its matrices are stored in, and takes only f32 here.
  DType matrix_dtype = DType::kF32;
};

// OK when this build has a backend for `format`; otherwise an error naming what is missing.
absl::Status CheckWeightFormat(const WeightFormat& format);

// The format of a --device (already parsed) and a --precision flag ("f32" or "bf16"), checked:
// INVALID_ARGUMENT naming the flag for another precision or bf16 on the CPU (whose flag is
// --cpu-precision), CheckWeightFormat's error for a backend this build lacks.
absl::StatusOr<WeightFormat> WeightFormatFor(const Device& device, const std::string& precision);

// A matrix the model multiplies by, [..., out, in] (a stack of experts may lead), f32, bf16 or
// f16 in host memory, prepared for the device's Linear and GroupedLinear.
Tensor PrepareLinearWeight(const Tensor& w, const WeightFormat& format);

// Any other weight (norm weights, scales, per-expert vectors), as f32 on the device.
Tensor PrepareWeight(const Tensor& w, const WeightFormat& format);

// Bytes that `num_elements` checkpoint elements of `checkpoint_dtype` take once prepared: the
// memory a shard needs.
int64_t PreparedWeightBytes(int64_t num_elements, DType checkpoint_dtype,
                            const WeightFormat& format);

}  // namespace gemmaserve::ops
