#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/device.h"

namespace gemmaserve::kernels {

bool BuiltWithCuda() { return true; }

absl::StatusOr<std::vector<CudaDevice>> ListCudaDevices() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice) return std::vector<CudaDevice>{};
  if (err != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("no usable CUDA GPU (cudaGetDeviceCount: ",
                                               cudaGetErrorString(err), ")"));
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

absl::StatusOr<int64_t> FreeCudaMemory(int ordinal) {
  RETURN_IF_ERROR(CheckCudaDevice(ordinal));
  if (cudaSetDevice(ordinal) != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("cuda:", ordinal, ": cannot make it current"));
  }
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  const cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (err != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("cudaMemGetInfo: ", cudaGetErrorString(err)));
  }
  return static_cast<int64_t>(free_bytes);
}

}  // namespace gemmaserve::kernels
