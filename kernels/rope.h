// The CUDA kernel of ops::Rotary::Apply (ops/rope.h): the same rotation, with the frequencies the
// CPU computed (uploaded, so both use bitwise the same f32 inv_freq) and CUDA's sincosf, which
// reduces large angles exactly (positions up to 262,143).
#pragma once

#include "common/tensor.h"

namespace gemmaserve::kernels {

// x: [num_tokens, num_heads, head_dim] f32, rotated in place; positions: [num_tokens] i32;
// inv_freq: [rope_angles] f32; dims j < rope_angles pair with j + head_dim / 2.
void ApplyRope(Tensor& x, const Tensor& positions, const Tensor& inv_freq);

}  // namespace gemmaserve::kernels
