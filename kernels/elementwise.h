// CUDA kernels of ops/elementwise.h, activation.h and norm.h: same names, same contracts; tensors
// on one GPU, f32 activations. Tested against the CPU ops in tests/kernels/gpu_ops_test.cc.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace gemmaserve::kernels {

void SetZero(Tensor& x);
void AddInPlace(Tensor& x, const Tensor& y);
void ScaleInPlace(Tensor& x, float scale);
void MultiplyInPlace(Tensor& x, const Tensor& w, float scale);
// tanh in libdevice's tanhf (the CPU's FastTanh is within 2e-7 of it).
void SoftcapInPlace(Tensor& x, float cap);
// table: [rows, dim] f32 or bf16, row-major (the checkpoint's layout, as the CUDA backend keeps
// the embedding / tied LM head).
void EmbeddingLookup(const Tensor& table, const Tensor& ids, float scale, Tensor& out,
                     int64_t first_row);
void GeluTanhGate(const Tensor& gate_up, Tensor& out);
// One block per row; the sum of squares in f32, then (mean + eps)^−1/2 with powf as the CPU.
void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y);
// One block per row, each step as RmsNorm's, AddInPlace's and ScaleInPlace's kernels compute it:
// bitwise those kernels in turn.
void AddRmsNorm(const Tensor& x, const Tensor& post_weight, float scale,
                const Tensor& next_weight, float eps, Tensor& residual, Tensor& next);

}  // namespace gemmaserve::kernels
