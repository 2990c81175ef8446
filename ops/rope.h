// Rotary position embedding, NeoX style (rotate halves, not interleaved pairs), as Gemma 4 uses it
// on both layer kinds (GEMMA4.md §2.6): x' = x·cos + rotate_half(x)·sin, where dim j pairs with
// dim j + head_dim/2 and angle j is position · inv_freq[j].
//
// `rope_angles` angles rotate; the rest have inv_freq 0 and pass through. Default RoPE has
// rope_angles = head_dim/2 and inv_freq[j] = theta^(−2j/head_dim). Gemma 4's proportional RoPE on
// full layers rotates only rope_angles = factor·head_dim/2 angles but keeps head_dim in the
// exponent, so with head_dim 512 dims 0–63 pair with 256–319 (not "the first 128 dims").
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"

namespace gemmaserve::ops {

class Rotary {
 public:
  // The frequencies are computed on the host and kept on `device`, where Apply runs.
  Rotary(int64_t head_dim, int64_t rope_angles, double theta, const Device& device = Device::Cpu());

  int64_t head_dim() const { return head_dim_; }
  // x: [num_tokens, num_heads, head_dim] f32 on the device, rotated in place; positions:
  // [num_tokens] i32, absolute.
  void Apply(Tensor& x, const Tensor& positions) const;

 private:
  int64_t head_dim_;
  Tensor inv_freq_;  // [rope_angles] f32, computed in f32 as the reference does
};

}  // namespace gemmaserve::ops
