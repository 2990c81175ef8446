// The device query of a build without CUDA: there is never a GPU.
#include "kernels/device.h"

namespace gemmaserve::kernels {

bool BuiltWithCuda() { return false; }

absl::StatusOr<std::vector<CudaDevice>> ListCudaDevices() {
  return absl::FailedPreconditionError("this build has no CUDA support (GEMMASERVE_CUDA=OFF)");
}

absl::Status CheckCudaDevice(int) { return ListCudaDevices().status(); }

absl::StatusOr<CudaMemory> CudaMemoryInfo(int) { return ListCudaDevices().status(); }

absl::StatusOr<int64_t> FreeCudaMemory(int) { return ListCudaDevices().status(); }

}  // namespace gemmaserve::kernels
