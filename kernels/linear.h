// The CUDA kernel of ops::Linear (ops/linear.h): y = x · Wᵀ through cuBLAS, with W in the
// checkpoint's [out, in] layout on the device.
//   - W f32: exact f32 (CUBLAS_COMPUTE_32F_PEDANTIC: no TF32, no reduced-precision shortcuts).
//   - W bf16: x is rounded to bf16 on the device, the product runs on the tensor cores with f32
//     accumulation and an f32 y (the bf16 precision's matmuls).
// Each device has one cuBLAS handle (on the calling thread's current stream, kernels/cuda_util.h),
// with a workspace of its own, and a scratch buffer for the rounded x that grows to the largest
// step and stays (no allocation in a steady state).
#pragma once

#include "common/tensor.h"

namespace gemmaserve::kernels {

// x: [rows, in] f32; w: [out, in] f32 or bf16; y: [rows, out] f32 (overwritten).
void Linear(const Tensor& x, const Tensor& w, Tensor& y);

// ops::GroupedLinear over bf16 experts in one cuBLAS call (cublasGemmGroupedBatchedEx, a group
// per expert with rows): y[offsets[e], offsets[e + 1]) = x[those rows] · w[e]ᵀ, x rounded to bf16
// as Linear rounds it. x: [rows, in] f32; w: [experts, out, in] bf16; offsets: experts + 1
// ascending row bounds, on the host; y: [rows, out] f32. False, nothing computed, where this
// cuBLAS does not take bf16 groups with an f32 result: the caller then calls Linear per expert.
bool GroupedLinearBf16(const Tensor& x, const Tensor& w, const int32_t* offsets, Tensor& y);

// Counts the moves of the buffers above (the rounded x's scratch growing, the grouped pointers'):
// a CUDA graph that captured a Linear names the scratch it had then, so it is stale once this
// changes.
int64_t ScratchGeneration();

}  // namespace gemmaserve::kernels
