#include "ops/weights.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "ops/copy.h"
#include "ops/linear.h"

namespace gemmaserve::ops {
namespace {

// `w` (host memory) as `dtype`: itself when it is already, else converted.
Tensor AsDType(const Tensor& w, DType dtype) {
  if (w.dtype() == dtype) return w;
  Tensor f32 = w.ToF32();
  if (dtype == DType::kF32) return f32;
  Tensor bf16 = Tensor::Empty(DType::kBF16, w.shape());
  for (int64_t i = 0; i < f32.numel(); ++i) {
    bf16.data<uint16_t>()[i] = F32ToBf16(f32.data<float>()[i]);
  }
  return bf16;
}

}  // namespace

absl::Status CheckWeightFormat(const WeightFormat& format) {
  const DType dtype = format.matrix_dtype;
  if (format.device.is_cpu()) {
    if (dtype == DType::kF32) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "weights in ", std::string(DTypeName(dtype)), " on the CPU: the CPU computes in f32"));
  }
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights in ", std::string(DTypeName(dtype)), " on ", format.device.ToString(),
        ": expected f32 or bf16"));
  }
#ifdef GEMMASERVE_HAVE_CUDA
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError(absl::StrCat(
      "weights on ", format.device.ToString(), ": this build has no CUDA (GEMMASERVE_CUDA=OFF)"));
#endif
}

absl::StatusOr<WeightFormat> WeightFormatFor(const Device& device, const std::string& precision) {
  if (precision != "f32" && precision != "bf16") {
    return absl::InvalidArgumentError(
        absl::StrCat("--precision \"", precision, "\": expected f32 or bf16"));
  }
  WeightFormat format;
  format.device = device;
  format.matrix_dtype = precision == "bf16" ? DType::kBF16 : DType::kF32;
  if (device.is_cpu() && format.matrix_dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--precision ", precision, " needs a GPU (--device cuda); on the CPU use --cpu-precision"));
  }
  RETURN_IF_ERROR(CheckWeightFormat(format));
  return format;
}

Tensor PrepareLinearWeight(const Tensor& w, const WeightFormat& format) {
  // The CPU keeps bf16 checkpoints' matrices in bf16 (its tiles widen them exactly in registers):
  // half the memory and half the bytes a decode step streams.
  if (format.device.is_cpu()) {
    return PackLinearWeight(w, w.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32);
  }
  return ToDevice(AsDType(w, format.matrix_dtype), format.device);
}

Tensor PrepareWeight(const Tensor& w, const WeightFormat& format) {
  Tensor f32 = w.ToF32();
  return format.device.is_cpu() ? f32 : ToDevice(f32, format.device);
}

int64_t PreparedWeightBytes(int64_t num_elements, DType checkpoint_dtype,
                            const WeightFormat& format) {
  const DType dtype = format.device.is_cpu()
                          ? (checkpoint_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32)
                          : format.matrix_dtype;
  return num_elements * static_cast<int64_t>(DTypeSize(dtype));
}

}  // namespace gemmaserve::ops
