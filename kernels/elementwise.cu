#include "kernels/elementwise.h"

#include <cuda_bf16.h>

#include "kernels/cuda_util.h"

namespace gemmaserve::kernels {
namespace {

using internal::Blocks;
using internal::CheckDType;
using internal::InverseRms;
using internal::UseDeviceOf;

constexpr int kThreads = 256;

// Multiplications and additions below use the _rn intrinsics where the CPU op computes the same
// expression: nvcc would otherwise fuse them into FMAs, whose single rounding differs from the
// CPU's two (the CPU build has no FMA outside the matmul tiles).

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = __fadd_rn(x[i], y[i]);
  }
}

__global__ void ScaleKernel(float* x, float scale, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = __fmul_rn(x[i], scale);
  }
}

__global__ void MultiplyKernel(float* x, const float* w, float scale, int64_t n, int64_t dim) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = __fmul_rn(__fmul_rn(x[i], w[i % dim]), scale);
  }
}

__global__ void SoftcapKernel(float* x, float cap, float inverse, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = __fmul_rn(cap, tanhf(__fmul_rn(x[i], inverse)));
  }
}

__device__ inline float Load(const float* p) { return *p; }
__device__ inline float Load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

template <typename T>
__global__ void EmbeddingKernel(const T* table, const int32_t* ids, float scale, float* out,
                                int64_t dim, int64_t first_row, int64_t rows_held) {
  const int64_t row = static_cast<int64_t>(ids[blockIdx.x]) - first_row;
  float* dst = out + blockIdx.x * dim;
  const bool held = row >= 0 && row < rows_held;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    dst[j] = held ? __fmul_rn(Load(table + row * dim + j), scale) : 0.0f;
  }
}

__device__ inline float GeluTanh(float x) {
  const float k_sqrt_2_over_pi = 0.7978845608028654f;
  const float k_coefficient = 0.044715f;
  const float cube = __fmul_rn(__fmul_rn(__fmul_rn(k_coefficient, x), x), x);
  const float inner = __fmul_rn(k_sqrt_2_over_pi, __fadd_rn(x, cube));
  return __fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.0f, tanhf(inner)));
}

__global__ void GeluTanhGateKernel(const float* gate_up, float* out, int64_t rows,
                                   int64_t width) {
  const int64_t n = rows * width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / width;
    const int64_t c = i % width;
    const float* row = gate_up + r * 2 * width;
    out[i] = __fmul_rn(GeluTanh(row[c]), row[width + c]);
  }
}

// One block per row. y may alias x: every thread reads its elements before the reduction's
// barrier and writes only those same elements after it.
__global__ void RmsNormKernel(const float* x, const float* w, float eps, float* y, int64_t dim) {
  const float* row = x + blockIdx.x * dim;
  float* dst = y + blockIdx.x * dim;
  const float inv_rms = InverseRms(row, dim, eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float normed = __fmul_rn(row[i], inv_rms);
    dst[i] = w == nullptr ? normed : __fmul_rn(normed, w[i]);
  }
}

// One block per row: RmsNormKernel on x, AddKernel and ScaleKernel on the row, RmsNormKernel on
// the sum, with each sum of squares over the same thread-to-element assignment, so the same
// bits. Each thread rereads only the residual elements it wrote.
__global__ void AddRmsNormKernel(const float* x, const float* post_weight, float scale,
                                 const float* next_weight, float eps, float* residual, float* next,
                                 int64_t dim) {
  const float* row = x + blockIdx.x * dim;
  float* sum = residual + blockIdx.x * dim;
  const float inv_rms = InverseRms(row, dim, eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float value = __fadd_rn(sum[i], __fmul_rn(__fmul_rn(row[i], inv_rms), post_weight[i]));
    if (scale != 1.0f) value = __fmul_rn(value, scale);
    sum[i] = value;
  }
  if (next_weight == nullptr) return;  // uniform over the block
  const float inv_sum_rms = InverseRms(sum, dim, eps);  // each thread rereads what it wrote
  float* dst = next + blockIdx.x * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    dst[i] = __fmul_rn(__fmul_rn(sum[i], inv_sum_rms), next_weight[i]);
  }
}

unsigned GridFor(int64_t n) {
  const unsigned blocks = Blocks(n, kThreads);
  return blocks > 65535u * 16 ? 65535u * 16 : blocks;
}

}  // namespace

void SetZero(Tensor& x) {
  UseDeviceOf({&x}, "SetZero");
  GS_CUDA_CHECK(cudaMemsetAsync(x.raw_data(), 0, x.nbytes(), internal::Stream()));
}

void AddInPlace(Tensor& x, const Tensor& y) {
  UseDeviceOf({&x, &y}, "AddInPlace");
  CheckDType(x, DType::kF32, "AddInPlace x");
  CheckDType(y, DType::kF32, "AddInPlace y");
  CHECK_EQ(x.numel(), y.numel()) << x.DebugString() << " += " << y.DebugString();
  AddKernel<<<GridFor(x.numel()), kThreads, 0, internal::Stream()>>>(x.data<float>(),
                                                                     y.data<float>(), x.numel());
  GS_CUDA_CHECK_LAUNCH("AddInPlace");
}

void ScaleInPlace(Tensor& x, float scale) {
  UseDeviceOf({&x}, "ScaleInPlace");
  CheckDType(x, DType::kF32, "ScaleInPlace x");
  ScaleKernel<<<GridFor(x.numel()), kThreads, 0, internal::Stream()>>>(x.data<float>(), scale,
                                                                       x.numel());
  GS_CUDA_CHECK_LAUNCH("ScaleInPlace");
}

void MultiplyInPlace(Tensor& x, const Tensor& w, float scale) {
  UseDeviceOf({&x, &w}, "MultiplyInPlace");
  CheckDType(x, DType::kF32, "MultiplyInPlace x");
  CheckDType(w, DType::kF32, "MultiplyInPlace w");
  CHECK(x.rank() == 2 && w.numel() == x.dim(1)) << x.DebugString() << " · " << w.DebugString();
  MultiplyKernel<<<GridFor(x.numel()), kThreads, 0, internal::Stream()>>>(
      x.data<float>(), w.data<float>(), scale, x.numel(), x.dim(1));
  GS_CUDA_CHECK_LAUNCH("MultiplyInPlace");
}

void SoftcapInPlace(Tensor& x, float cap) {
  UseDeviceOf({&x}, "SoftcapInPlace");
  CheckDType(x, DType::kF32, "SoftcapInPlace x");
  CHECK_GT(cap, 0.0f);
  SoftcapKernel<<<GridFor(x.numel()), kThreads, 0, internal::Stream()>>>(x.data<float>(), cap,
                                                                         1.0f / cap, x.numel());
  GS_CUDA_CHECK_LAUNCH("SoftcapInPlace");
}

void EmbeddingLookup(const Tensor& table, const Tensor& ids, float scale, Tensor& out,
                     int64_t first_row) {
  UseDeviceOf({&table, &ids, &out}, "EmbeddingLookup");
  CheckDType(ids, DType::kI32, "EmbeddingLookup ids");
  CheckDType(out, DType::kF32, "EmbeddingLookup out");
  CHECK_EQ(table.rank(), 2) << "EmbeddingLookup table: " << table.DebugString();
  const int64_t dim = table.dim(1);
  CHECK(out.rank() == 2 && out.dim(0) == ids.numel() && out.dim(1) == dim)
      << "EmbeddingLookup out: " << out.DebugString();
  if (ids.numel() == 0) return;
  if (table.dtype() == DType::kBF16) {
    EmbeddingKernel<<<static_cast<unsigned>(ids.numel()), kThreads, 0, internal::Stream()>>>(
        table.data<__nv_bfloat16>(), ids.data<int32_t>(), scale, out.data<float>(), dim, first_row,
        table.dim(0));
  } else {
    CheckDType(table, DType::kF32, "EmbeddingLookup table");
    EmbeddingKernel<<<static_cast<unsigned>(ids.numel()), kThreads, 0, internal::Stream()>>>(
        table.data<float>(), ids.data<int32_t>(), scale, out.data<float>(), dim, first_row,
        table.dim(0));
  }
  GS_CUDA_CHECK_LAUNCH("EmbeddingLookup");
}

void GeluTanhGate(const Tensor& gate_up, Tensor& out) {
  UseDeviceOf({&gate_up, &out}, "GeluTanhGate");
  CheckDType(gate_up, DType::kF32, "GeluTanhGate gate_up");
  CheckDType(out, DType::kF32, "GeluTanhGate out");
  CHECK_EQ(gate_up.rank(), 2);
  const int64_t rows = gate_up.dim(0);
  const int64_t width = gate_up.dim(1) / 2;
  CHECK(gate_up.dim(1) == 2 * width && out.rank() == 2 && out.dim(0) == rows &&
        out.dim(1) == width)
      << "GeluTanhGate: " << gate_up.DebugString() << " -> " << out.DebugString();
  GeluTanhGateKernel<<<GridFor(rows * width), kThreads, 0, internal::Stream()>>>(
      gate_up.data<float>(), out.data<float>(), rows, width);
  GS_CUDA_CHECK_LAUNCH("GeluTanhGate");
}

void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  const bool has_weight = weight.defined() && weight.numel() > 0;
  if (has_weight) {
    UseDeviceOf({&x, &y, &weight}, "RmsNorm");
    CheckDType(weight, DType::kF32, "RmsNorm weight");
  } else {
    UseDeviceOf({&x, &y}, "RmsNorm");
  }
  CheckDType(x, DType::kF32, "RmsNorm x");
  CheckDType(y, DType::kF32, "RmsNorm y");
  CHECK(x.rank() >= 1 && x.shape() == y.shape())
      << "RmsNorm: " << x.DebugString() << " -> " << y.DebugString();
  const int64_t dim = x.dim(-1);
  CHECK(!has_weight || weight.numel() == dim) << "RmsNorm weight: " << weight.DebugString();
  const int64_t rows = dim == 0 ? 0 : x.numel() / dim;
  if (rows == 0) return;
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, internal::Stream()>>>(
      x.data<float>(), has_weight ? weight.data<float>() : nullptr, eps, y.data<float>(), dim);
  GS_CUDA_CHECK_LAUNCH("RmsNorm");
}

void AddRmsNorm(const Tensor& x, const Tensor& post_weight, float scale,
                const Tensor& next_weight, float eps, Tensor& residual, Tensor& next) {
  const bool has_next = next_weight.defined();
  if (has_next) {
    UseDeviceOf({&x, &post_weight, &residual, &next_weight, &next}, "AddRmsNorm");
  } else {
    UseDeviceOf({&x, &post_weight, &residual}, "AddRmsNorm");
  }
  CheckDType(x, DType::kF32, "AddRmsNorm x");
  CheckDType(residual, DType::kF32, "AddRmsNorm residual");
  CheckDType(post_weight, DType::kF32, "AddRmsNorm post_weight");
  CHECK(x.rank() == 2 && x.shape() == residual.shape())
      << "AddRmsNorm: " << residual.DebugString() << " += " << x.DebugString();
  const int64_t rows = x.dim(0);
  const int64_t dim = x.dim(1);
  CHECK_EQ(post_weight.numel(), dim) << "AddRmsNorm post_weight: " << post_weight.DebugString();
  if (has_next) {
    CheckDType(next_weight, DType::kF32, "AddRmsNorm next_weight");
    CheckDType(next, DType::kF32, "AddRmsNorm next");
    CHECK_EQ(next_weight.numel(), dim) << "AddRmsNorm next_weight: " << next_weight.DebugString();
    CHECK(next.shape() == x.shape() && next.raw_data() != x.raw_data() &&
          next.raw_data() != residual.raw_data())
        << "AddRmsNorm next: " << next.DebugString();
  }
  if (rows == 0) return;
  AddRmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, internal::Stream()>>>(
      x.data<float>(), post_weight.data<float>(), scale,
      has_next ? next_weight.data<float>() : nullptr, eps, residual.data<float>(),
      has_next ? next.data<float>() : nullptr, dim);
  GS_CUDA_CHECK_LAUNCH("AddRmsNorm");
}

}  // namespace gemmaserve::kernels
