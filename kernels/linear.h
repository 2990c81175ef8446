// The CUDA kernel of ops::Linear (ops/linear.h): y = x · Wᵀ through cuBLAS, with W in the
// checkpoint's [out, in] layout on the device.
//   - W f32: exact f32 (CUBLAS_COMPUTE_32F_PEDANTIC: no TF32, no reduced-precision shortcuts).
//   - W bf16: x is rounded to bf16 on the device, the product runs on the tensor cores with f32
//     accumulation and an f32 y (the bf16 precision's matmuls).
// Each device has one cuBLAS handle on the legacy default stream and a scratch buffer for the
// rounded x that grows to the largest step and stays (no allocation in a steady state).
#pragma once

#include "common/tensor.h"

namespace gemmaserve::kernels {

// x: [rows, in] f32; w: [out, in] f32 or bf16; y: [rows, out] f32 (overwritten).
void Linear(const Tensor& x, const Tensor& w, Tensor& y);

}  // namespace gemmaserve::kernels
