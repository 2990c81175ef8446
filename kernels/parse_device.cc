// ParseDevice (device.h): the same in builds with and without CUDA; the device query says what
// is missing.
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/device.h"

namespace gemmaserve::kernels {

absl::StatusOr<Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return Device::Cpu();
  int ordinal = 0;
  if (name != "cuda" && (name.rfind("cuda:", 0) != 0 || !absl::SimpleAtoi(name.substr(5), &ordinal) ||
                         ordinal < 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device \"", name, "\": expected cpu, cuda or cuda:N"));
  }
  const absl::Status usable = CheckCudaDevice(ordinal);
  if (!usable.ok()) {
    return absl::Status(usable.code(), absl::StrCat("--device ", name, ": ", usable.message()));
  }
  return Device::Cuda(ordinal);
}

}  // namespace gemmaserve::kernels
