#include "kernels/linear.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/cuda_util.h"

namespace gemmaserve::kernels {
namespace {

using internal::Blocks;
using internal::CheckDType;
using internal::UseDeviceOf;

#define GS_CUBLAS_CHECK(expr)                                                                \
  do {                                                                                       \
    const cublasStatus_t gs_cublas_status_ = (expr);                                         \
    if (gs_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                        \
      internal::CallFailed(#expr, cublasGetStatusString(gs_cublas_status_));                 \
    }                                                                                        \
  } while (false)

// cuBLAS's workspace: what it recommends for Hopper. Ours, not its default pool, so that eager
// steps and graph captures (which may not allocate) choose the same algorithms.
constexpr int64_t kBlasWorkspaceBytes = int64_t{32} << 20;

// A device's cuBLAS handle, its workspace, and the scratch for bf16 matmul inputs; created on
// first use and kept for the life of the process (a handle is expensive to create and holds
// device memory).
struct DeviceBlas {
  cublasHandle_t handle = nullptr;
  Tensor workspace;               // kBlasWorkspaceBytes
  cudaStream_t stream = nullptr;  // the handle's stream now
  Tensor scratch;           // bf16, at least the largest x rounded so far
  Tensor group_pointers;    // GroupedLinearBf16's A, B and C pointer arrays, on the device
  bool groups_unsupported = false;  // cuBLAS refused bf16 groups once: never asked again
};

std::atomic<int64_t> scratch_generation{0};

DeviceBlas& BlasFor(int ordinal) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<DeviceBlas>> devices;
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<int>(devices.size()) <= ordinal) devices.resize(ordinal + 1);
  if (devices[ordinal] == nullptr) {
    auto blas = std::make_unique<DeviceBlas>();
    GS_CUBLAS_CHECK(cublasCreate(&blas->handle));
    blas->workspace = Tensor::Empty(DType::kI32, {kBlasWorkspaceBytes / 4}, Device::Cuda(ordinal));
    GS_CUBLAS_CHECK(cublasSetWorkspace(blas->handle, blas->workspace.raw_data(),
                                       static_cast<size_t>(kBlasWorkspaceBytes)));
    devices[ordinal] = std::move(blas);
  }
  return *devices[ordinal];
}

// The handle, on this thread's current stream. cublasSetStream drops the workspace (back to
// cuBLAS's pool), so it is set again with it.
cublasHandle_t HandleOnStream(DeviceBlas& blas) {
  if (blas.stream != internal::Stream()) {
    blas.stream = internal::Stream();
    GS_CUBLAS_CHECK(cublasSetStream(blas.handle, blas.stream));
    GS_CUBLAS_CHECK(cublasSetWorkspace(blas.handle, blas.workspace.raw_data(),
                                       static_cast<size_t>(kBlasWorkspaceBytes)));
  }
  return blas.handle;
}

__global__ void RoundToBf16Kernel(const float* x, __nv_bfloat16* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = __float2bfloat16_rn(x[i]);
  }
}

// x rounded to bf16 into the device's scratch, which grows to fit.
const __nv_bfloat16* RoundedToBf16(DeviceBlas& blas, const Tensor& x) {
  if (blas.scratch.numel() < x.numel()) {
    blas.scratch = Tensor::Empty(DType::kBF16, {x.numel()}, x.device());
    scratch_generation.fetch_add(1);
  }
  const unsigned blocks = std::min<unsigned>(Blocks(x.numel(), 256), 65535u * 16);
  RoundToBf16Kernel<<<blocks, 256, 0, internal::Stream()>>>(
      x.data<float>(), blas.scratch.data<__nv_bfloat16>(), x.numel());
  GS_CUDA_CHECK_LAUNCH("Linear (rounding x to bf16)");
  return blas.scratch.data<__nv_bfloat16>();
}

}  // namespace

int64_t ScratchGeneration() { return scratch_generation.load(); }

bool GroupedLinearBf16(const Tensor& x, const Tensor& w, const int32_t* offsets, Tensor& y) {
  UseDeviceOf({&x, &w, &y}, "GroupedLinear");
  CheckDType(x, DType::kF32, "GroupedLinear x");
  CheckDType(w, DType::kBF16, "GroupedLinear w");
  CheckDType(y, DType::kF32, "GroupedLinear y");
  CHECK(x.rank() == 2 && w.rank() == 3 && y.rank() == 2 && w.dim(2) == x.dim(1) &&
        y.dim(0) == x.dim(0) && y.dim(1) == w.dim(1))
      << "GroupedLinear: x " << x.DebugString() << " · w " << w.DebugString() << " -> "
      << y.DebugString();
  DeviceBlas& blas = BlasFor(x.device().ordinal);
  if (blas.groups_unsupported) return false;
  const int64_t experts = w.dim(0);
  const int64_t out = w.dim(1);
  const int64_t in = w.dim(2);
  // One group per expert with rows; each group a single product (group_size 1).
  std::vector<int> m, n, k, lda, ldb, ldc, size;
  std::vector<float> alpha, beta;
  std::vector<cublasOperation_t> transa, transb;
  std::vector<const void*> a_pointers, b_pointers;
  std::vector<void*> c_pointers;
  const __nv_bfloat16* x_bf16 = RoundedToBf16(blas, x);
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t rows = offsets[e + 1] - offsets[e];
    if (rows == 0) continue;
    transa.push_back(CUBLAS_OP_T);
    transb.push_back(CUBLAS_OP_N);
    m.push_back(static_cast<int>(out));
    n.push_back(static_cast<int>(rows));
    k.push_back(static_cast<int>(in));
    lda.push_back(static_cast<int>(in));
    ldb.push_back(static_cast<int>(in));
    ldc.push_back(static_cast<int>(out));
    size.push_back(1);
    alpha.push_back(1.0f);
    beta.push_back(0.0f);
    a_pointers.push_back(w.data<__nv_bfloat16>() + e * out * in);
    b_pointers.push_back(x_bf16 + int64_t{offsets[e]} * in);
    c_pointers.push_back(y.data<float>() + int64_t{offsets[e]} * out);
  }
  const int groups = static_cast<int>(size.size());
  if (groups == 0) return true;
  // The pointer arrays live on the device: one copy of the three.
  std::vector<const void*> pointers(a_pointers);
  pointers.insert(pointers.end(), b_pointers.begin(), b_pointers.end());
  pointers.insert(pointers.end(), c_pointers.begin(), c_pointers.end());
  if (blas.group_pointers.numel() < static_cast<int64_t>(pointers.size())) {
    blas.group_pointers = Tensor::Empty(DType::kI64, {static_cast<int64_t>(pointers.size())},
                                        x.device());
    scratch_generation.fetch_add(1);
  }
  const void** device_pointers = static_cast<const void**>(blas.group_pointers.raw_data());
  GS_CUDA_CHECK(cudaMemcpy(device_pointers, pointers.data(), pointers.size() * sizeof(void*),
                           cudaMemcpyHostToDevice));
  const cublasStatus_t status = cublasGemmGroupedBatchedEx(
      HandleOnStream(blas), transa.data(), transb.data(), m.data(), n.data(), k.data(),
      alpha.data(), device_pointers, CUDA_R_16BF, lda.data(), device_pointers + groups, CUDA_R_16BF,
      ldb.data(), beta.data(), const_cast<void* const*>(device_pointers + 2 * groups), CUDA_R_32F,
      ldc.data(), groups, size.data(), CUBLAS_COMPUTE_32F);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    blas.groups_unsupported = true;
    return false;
  }
  GS_CUBLAS_CHECK(status);
  return true;
}

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
    GS_CUBLAS_CHECK(cublasGemmEx(
        HandleOnStream(blas), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out),
        static_cast<int>(rows), static_cast<int>(in), &alpha, w.raw_data(), CUDA_R_32F,
        static_cast<int>(in), x.raw_data(), CUDA_R_32F, static_cast<int>(in), &beta, y.raw_data(),
        CUDA_R_32F, static_cast<int>(out), CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
    return;
  }
  CheckDType(w, DType::kBF16, "Linear w");
  const __nv_bfloat16* x_bf16 = RoundedToBf16(blas, x);
  GS_CUBLAS_CHECK(cublasGemmEx(HandleOnStream(blas), CUBLAS_OP_T, CUBLAS_OP_N,
                               static_cast<int>(out), static_cast<int>(rows), static_cast<int>(in),
                               &alpha, w.raw_data(), CUDA_R_16BF, static_cast<int>(in), x_bf16,
                               CUDA_R_16BF, static_cast<int>(in), &beta, y.raw_data(), CUDA_R_32F,
                               static_cast<int>(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace gemmaserve::kernels
