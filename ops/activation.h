// The gated GELU of Gemma's MLPs: out = gelu_tanh(gate) · up, with PyTorch's tanh approximation
// gelu_tanh(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
#pragma once

#include "common/tensor.h"
#include "ops/fast_math.h"

namespace gemmaserve::ops {

[[gnu::always_inline]] inline float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  constexpr float kCoefficient = 0.044715f;
  const float inner = kSqrt2OverPi * (x + kCoefficient * x * x * x);
  return 0.5f * x * (1.0f + FastTanh(inner));
}

// gate_up: [rows, 2·width] f32 holding gate in columns [0, width) and up in [width, 2·width);
// out: [rows, width] f32.
void GeluTanhGate(const Tensor& gate_up, Tensor& out);

}  // namespace gemmaserve::ops
