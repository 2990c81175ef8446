#include "ops/weights.h"

#include "absl/strings/str_cat.h"
#include "ops/linear.h"

namespace gemmaserve::ops {

absl::Status CheckWeightFormat(const WeightFormat& format) {
  if (format.device.is_cpu()) return absl::OkStatus();
  return absl::UnimplementedError(
      absl::StrCat("weights on ", format.device.ToString(), ": this build computes on the CPU only"));
}

Tensor PrepareLinearWeight(const Tensor& w, const WeightFormat& format) {
  CHECK(format.device.is_cpu()) << "PrepareLinearWeight for " << format.device.ToString();
  return PackLinearWeight(w);
}

Tensor PrepareWeight(const Tensor& w, const WeightFormat& format) {
  CHECK(format.device.is_cpu()) << "PrepareWeight for " << format.device.ToString();
  return w.ToF32();
}

int64_t PreparedWeightBytes(int64_t num_elements, const WeightFormat& format) {
  CHECK(format.device.is_cpu()) << "PreparedWeightBytes for " << format.device.ToString();
  return num_elements * static_cast<int64_t>(sizeof(float));
}

}  // namespace gemmaserve::ops
