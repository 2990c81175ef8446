// Linear: y = x · Wᵀ with W stored [out_features, in_features] (the nn.Linear layout Gemma 4
// checkpoints use; no linear layer in the decoder has a bias). Runs through OpenBLAS: a
// few rows (decode of a small batch) use one sgemv per row, each streaming W at memory bandwidth;
// more rows use sgemm.
#pragma once

#include "common/tensor.h"

namespace gemmaserve::ops {

// x: [rows, in] f32; w: [out, in] f32; y: [rows, out] f32 (overwritten). x and y must not alias.
void Linear(const Tensor& x, const Tensor& w, Tensor& y);

// Sets the number of threads OpenBLAS uses for every later call in this process.
void SetBlasThreads(int num_threads);

}  // namespace gemmaserve::ops
