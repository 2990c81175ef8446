// CUDA device discovery. Built as CUDA code when GEMMASERVE_CUDA is on; otherwise a stub that
// reports no device. This is how every part of gemmaserve finds out, without crashing, that there
// is no GPU to run on (CI builds the CUDA code on machines with the toolkit but no GPU).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor.h"

namespace gemmaserve::kernels {

struct CudaDevice {
  int ordinal = 0;
  std::string name;
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
  int64_t memory_bytes = 0;
  std::string uuid;  // the GPU's UUID in hex: the same GPU under any CUDA_VISIBLE_DEVICES ordinal
};

// A GPU's memory now, bytes (cudaMemGetInfo).
struct CudaMemory {
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};

// Whether this build has CUDA kernels at all.
bool BuiltWithCuda();

// The visible CUDA devices. An empty list when there are none; UNAVAILABLE (with the CUDA
// runtime's message, e.g. "no CUDA-capable device is detected") when the driver cannot be asked;
// FAILED_PRECONDITION in a build without CUDA.
absl::StatusOr<std::vector<CudaDevice>> ListCudaDevices();

// OK when `ordinal` names a visible device; otherwise an error saying why not, for --device.
absl::Status CheckCudaDevice(int ordinal);

// Free and total bytes of device `ordinal` now; FAILED_PRECONDITION without CUDA.
absl::StatusOr<CudaMemory> CudaMemoryInfo(int ordinal);

// Bytes free on device `ordinal` now; FAILED_PRECONDITION without CUDA.
absl::StatusOr<int64_t> FreeCudaMemory(int ordinal);

// A --device value: "cpu", "cuda" (device 0) or "cuda:N", checked against this build and the
// visible GPUs. INVALID_ARGUMENT for another spelling; the device check's error for a GPU that
// is not there or a build without CUDA.
absl::StatusOr<Device> ParseDevice(const std::string& name);

}  // namespace gemmaserve::kernels
