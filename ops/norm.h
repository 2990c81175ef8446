// RMSNorm as Gemma 4 defines it (GEMMA4.md §2.1): y = x · (mean(x²) + eps)^(−1/2) · w, in f32.
// The weight multiplies directly (x·w), NOT x·(1+w) as in Gemma 1–3. Without a weight (v_norm,
// router.norm) the normalised x is returned as is.
#pragma once

#include "common/tensor.h"

namespace gemmaserve::ops {

// x, y: [rows, dim] f32 (y may be x); weight: [dim] f32, or an undefined Tensor for no weight.
// Tensors of rank > 2 normalise over their last dimension.
void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y);

// The residual update that ends each half of a Gemma 4 layer and the norm that starts the next,
// in one pass over the rows: residual = (residual + RmsNorm(x, post_weight)) · scale, then, when
// next_weight is defined, next = RmsNorm(residual, next_weight). Bitwise RmsNorm, AddInPlace,
// ScaleInPlace (skipped at scale 1) and RmsNorm in turn, on either device (each device's own).
// x, residual, next: [rows, dim] f32, next distinct from both; weights: [dim] f32.
void AddRmsNorm(const Tensor& x, const Tensor& post_weight, float scale,
                const Tensor& next_weight, float eps, Tensor& residual, Tensor& next);

}  // namespace gemmaserve::ops
