// What every kernel file shares: checking CUDA calls, checking that tensors are on one GPU, and
// launch sizes. Internal to kernels/.
//
// Streams: every kernel launches on internal::Stream(), the calling thread's current stream: the
// legacy default stream of the current device (as the NCCL communicator's collectives are ordered
// against it), or while a CudaGraph records (kernels/graph.h), the stream it captures. Consecutive
// ops are so ordered without events. A kernel launch is asynchronous; its errors surface at the
// next synchronising call (ToHost, a collective), where GS_CUDA_CHECK turns them into a CHECK
// failure naming the call. tests/kernels/launches_name_the_stream.py fails on a launch that does
// not name the stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "common/check.h"
#include "common/tensor.h"

namespace gemmaserve::kernels::internal {

// The first call that failed while a CudaGraph recorded on this thread (kernels/graph.h).
struct CaptureFailure {
  std::string call;
  std::string message;
};

// Set while a CudaGraph records on this thread: a failed CUDA or cuBLAS call is noted there (the
// recording then fails with it, and the caller carries on without the graph) instead of failing
// a CHECK. Nothing executes while recording, so nothing is lost but the graph.
inline thread_local CaptureFailure* capture_failure = nullptr;

// Points capture_failure at `failure` while it lives.
class CaptureFailureScope {
 public:
  explicit CaptureFailureScope(CaptureFailure* failure) : previous_(capture_failure) {
    capture_failure = failure;
  }
  ~CaptureFailureScope() { capture_failure = previous_; }
  CaptureFailureScope(const CaptureFailureScope&) = delete;
  CaptureFailureScope& operator=(const CaptureFailureScope&) = delete;

 private:
  CaptureFailure* previous_;
};

// What GS_CUDA_CHECK and GS_CUBLAS_CHECK do with a failed call.
inline void CallFailed(const char* call, const char* message) {
  if (capture_failure != nullptr) {
    if (capture_failure->call.empty()) *capture_failure = {call, message};
    return;
  }
  CHECK(false) << call << ": " << message;
}

}  // namespace gemmaserve::kernels::internal

#define GS_CUDA_CHECK(expr)                                                                   \
  do {                                                                                        \
    const cudaError_t gs_cuda_error_ = (expr);                                                \
    if (gs_cuda_error_ != cudaSuccess) {                                                      \
      ::gemmaserve::kernels::internal::CallFailed(#expr, cudaGetErrorString(gs_cuda_error_)); \
    }                                                                                         \
  } while (false)

// After a launch: reports a bad launch configuration at once.
#define GS_CUDA_CHECK_LAUNCH(name) GS_CUDA_CHECK(cudaPeekAtLastError())

namespace gemmaserve::kernels::internal {

// This thread's current stream (null: the legacy default stream); set by StreamScope.
inline thread_local cudaStream_t current_stream = nullptr;

inline cudaStream_t Stream() { return current_stream; }

// Makes `stream` this thread's current stream while it lives.
class StreamScope {
 public:
  explicit StreamScope(cudaStream_t stream) : previous_(current_stream) { current_stream = stream; }
  ~StreamScope() { current_stream = previous_; }
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  cudaStream_t previous_;
};

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

#if defined(__CUDACC__)
// Sum over the block of one value per thread; every thread gets the total. Each warp adds by
// shuffles, then the first warp adds the warps' sums: the same order for the same block size.
__device__ inline float BlockSum(float value) {
  __shared__ float partial[32];
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = value;
  __syncthreads();
  const int num_warps = (blockDim.x + 31) / 32;
  value = lane < num_warps ? partial[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  __syncthreads();  // partial may be reused by the next call
  return value;
}

// RMSNorm's factor of one row, the block's threads striding over it: (mean(row²) + eps)^−1/2
// with powf as the CPU. Every norm kernel computes it so, hence bitwise one another's at equal
// block sizes.
__device__ inline float InverseRms(const float* row, int64_t dim, float eps) {
  float sum_squares = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    sum_squares = __fadd_rn(sum_squares, __fmul_rn(row[i], row[i]));
  }
  sum_squares = BlockSum(sum_squares);
  return powf(__fadd_rn(__fdiv_rn(sum_squares, static_cast<float>(dim)), eps), -0.5f);
}
#endif

// Blocks of `threads` covering n items, at least one.
inline unsigned Blocks(int64_t n, int threads) {
  return static_cast<unsigned>(n <= 0 ? 1 : (n + threads - 1) / threads);
}

}  // namespace gemmaserve::kernels::internal
