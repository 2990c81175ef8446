#include "kernels/linear.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <memory>
#include <mutex>
#include <vector>

#include "kernels/cuda_util.h"

namespace gemmaserve::kernels {
namespace {

using internal::Blocks;
using internal::CheckDType;
using internal::UseDeviceOf;

#define GS_CUBLAS_CHECK(expr)                                                   \
  do {                                                                          \
    const cublasStatus_t gs_cublas_status_ = (expr);                            \
    CHECK(gs_cublas_status_ == CUBLAS_STATUS_SUCCESS)                           \
        << #expr << ": " << cublasGetStatusString(gs_cublas_status_);          \
  } while (false)

// A device's cuBLAS handle and the scratch for bf16 matmul inputs; created on first use and kept
// for the life of the process (a handle is expensive to create and holds device memory).
struct DeviceBlas {
  cublasHandle_t handle = nullptr;
  Tensor scratch;  // bf16, at least the largest x rounded so far
};

DeviceBlas& BlasFor(int ordinal) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<DeviceBlas>> devices;
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<int>(devices.size()) <= ordinal) devices.resize(ordinal + 1);
  if (devices[ordinal] == nullptr) {
    auto blas = std::make_unique<DeviceBlas>();
    GS_CUBLAS_CHECK(cublasCreate(&blas->handle));
    devices[ordinal] = std::move(blas);
  }
  return *devices[ordinal];
}

__global__ void RoundToBf16Kernel(const float* x, __nv_bfloat16* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = __float2bfloat16_rn(x[i]);
  }
}

}  // namespace

void Linear(const Tensor& x, const Tensor& w, Tensor& y) {
  UseDeviceOf({&x, &w, &y}, "Linear");
  CheckDType(x, DType::kF32, "Linear x");
  CheckDType(y, DType::kF32, "Linear y");
  CHECK(x.rank() == 2 && w.rank() == 2 && y.rank() == 2 && w.dim(1) == x.dim(1) &&
        y.dim(0) == x.dim(0) && y.dim(1) == w.dim(0))
      << "Linear: x " << x.DebugString() << " · w " << w.DebugString() << " -> "
      << y.DebugString();
  const int64_t rows = x.dim(0);
  const int64_t in = x.dim(1);
  const int64_t out = w.dim(0);
  if (rows == 0 || out == 0) return;
  DeviceBlas& blas = BlasFor(x.device().ordinal);
  const float alpha = 1.0f;
  const float beta = 0.0f;
  // Row-major y[rows, out] = x[rows, in] · w[out, in]ᵀ is column-major yᵀ[out, rows] =
  // wᵀᵀ · xᵀ: A = w seen column-major [in, out] and transposed, B = x seen as [in, rows].
  if (w.dtype() == DType::kF32) {
    GS_CUBLAS_CHECK(cublasGemmEx(blas.handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out),
                                 static_cast<int>(rows), static_cast<int>(in), &alpha,
                                 w.raw_data(), CUDA_R_32F, static_cast<int>(in), x.raw_data(),
                                 CUDA_R_32F, static_cast<int>(in), &beta, y.raw_data(), CUDA_R_32F,
                                 static_cast<int>(out), CUBLAS_COMPUTE_32F_PEDANTIC,
                                 CUBLAS_GEMM_DEFAULT));
    return;
  }
  CheckDType(w, DType::kBF16, "Linear w");
  if (blas.scratch.numel() < x.numel()) {
    blas.scratch = Tensor::Empty(DType::kBF16, {x.numel()}, x.device());
  }
  RoundToBf16Kernel<<<Blocks(x.numel(), 256) < 65535u * 16 ? Blocks(x.numel(), 256) : 65535u * 16,
                      256>>>(x.data<float>(), blas.scratch.data<__nv_bfloat16>(), x.numel());
  GS_CUDA_CHECK_LAUNCH("Linear (rounding x to bf16)");
  GS_CUBLAS_CHECK(cublasGemmEx(blas.handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out),
                               static_cast<int>(rows), static_cast<int>(in), &alpha, w.raw_data(),
                               CUDA_R_16BF, static_cast<int>(in), blas.scratch.raw_data(),
                               CUDA_R_16BF, static_cast<int>(in), &beta, y.raw_data(), CUDA_R_32F,
                               static_cast<int>(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace gemmaserve::kernels
