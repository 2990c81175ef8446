#include <cuda_runtime.h>

#include <string>
#include <utility>

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
    std::string uuid;
    for (const char byte : prop.uuid.bytes) {
      absl::StrAppend(&uuid, absl::Hex(static_cast<unsigned char>(byte), absl::kZeroPad2));
    }
    devices.push_back({i, prop.name, prop.major, prop.minor,
                       static_cast<int64_t>(prop.totalGlobalMem), std::move(uuid)});
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

absl::StatusOr<CudaMemory> CudaMemoryInfo(int ordinal) {
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
  return CudaMemory{static_cast<int64_t>(free_bytes), static_cast<int64_t>(total_bytes)};
}

absl::StatusOr<int64_t> FreeCudaMemory(int ordinal) {
  ASSIGN_OR_RETURN(const CudaMemory memory, CudaMemoryInfo(ordinal));
  return memory.free_bytes;
}

}  // namespace gemmaserve::kernels
