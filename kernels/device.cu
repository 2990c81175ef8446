#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/device.h"

namespace gemmaserve::kernels {

bool BuiltWithCuda() { return true; }

absl::StatusOr<std::vector<CudaDevice>> ListCudaDevices() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice) return std::vector<CudaDevice>{};
  if (err != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorString(err)));
  }
  std::vector<CudaDevice> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    devices.push_back({i, prop.name, prop.major, prop.minor, static_cast<int64_t>(prop.totalGlobalMem)});
  }
  return devices;
}

absl::Status CheckCudaDevice(int ordinal) {
  absl::StatusOr<std::vector<CudaDevice>> devices = ListCudaDevices();
  if (!devices.ok()) return devices.status();
  if (ordinal < 0 || ordinal >= static_cast<int>(devices->size())) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuda:", ordinal, ": no such GPU (", devices->size(), " visible)"));
  }
  return absl::OkStatus();
}

}  // namespace gemmaserve::kernels
