// What every kernel file shares: checking CUDA calls, checking that tensors are on one GPU, and
// launch sizes. Internal to kernels/.
//
// Streams: every kernel runs on the legacy default stream of the current device (as the NCCL
// communicator's collectives are ordered against it), so consecutive ops are ordered without
// events. A kernel launch is asynchronous; its errors surface at the next synchronising call
// (ToHost, a collective), where GS_CUDA_CHECK turns them into a CHECK failure naming the call.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/check.h"
#include "common/tensor.h"

#define GS_CUDA_CHECK(expr)                                                              \
  do {                                                                                   \
    const cudaError_t gs_cuda_error_ = (expr);                                           \
    CHECK(gs_cuda_error_ == cudaSuccess) << #expr << ": " << cudaGetErrorString(gs_cuda_error_); \
  } while (false)

// After a launch: reports a bad launch configuration at once.
#define GS_CUDA_CHECK_LAUNCH(name) GS_CUDA_CHECK(cudaPeekAtLastError())

namespace gemmaserve::kernels::internal {

// Every tensor on the same CUDA device, which becomes the current device.
inline void UseDeviceOf(std::initializer_list<const Tensor*> tensors, const char* op) {
  const Device& device = (*tensors.begin())->device();
  for (const Tensor* t : tensors) {
    CHECK(t->device().is_cuda() && t->device() == device)
        << op << ": " << t->DebugString() << " is not on " << device.ToString();
  }
  GS_CUDA_CHECK(cudaSetDevice(device.ordinal));
}

inline void CheckDType(const Tensor& t, DType dtype, const char* what) {
  CHECK(t.dtype() == dtype) << what << ": expected " << DTypeName(dtype) << ", got "
                            << t.DebugString();
}

// Blocks of `threads` covering n items, at least one.
inline unsigned Blocks(int64_t n, int threads) {
  return static_cast<unsigned>(n <= 0 ? 1 : (n + threads - 1) / threads);
}

}  // namespace gemmaserve::kernels::internal
