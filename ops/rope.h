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

// cos and sin of the rotating angles at positions [0, positions), the values Apply rotates by:
// position p's row is cos of angles 0 … angles − 1, then their sin (host memory).
struct RopeTable {
  const float* values = nullptr;
  int64_t positions = 0;
  int64_t angles = 0;

  const float* Row(int64_t position) const { return values + position * 2 * angles; }
};

class Rotary {
 public:
  // The frequencies are computed on the host and kept on `device`, where Apply runs.
  Rotary(int64_t head_dim, int64_t rope_angles, double theta, const Device& device = Device::Cpu());

  int64_t head_dim() const { return head_dim_; }
  // [rope_angles] f32 on the device.
  const Tensor& inv_freq() const { return inv_freq_; }
  // x: [num_tokens, num_heads, head_dim] f32 on the device, rotated in place; positions:
  // [num_tokens] i32, absolute.
  void Apply(Tensor& x, const Tensor& positions) const;

  // The table of positions [0, positions) at least, bitwise the values Apply uses; kept and grown
  // on demand (by half again at least), for kernels that rotate keys as they read them
  // (ops/attention.h: KeysFromValues): 8 bytes per angle and position, 128 MiB for 262,144
  // positions of a Gemma 4 full layer's 64 angles. The table is valid until the next call. Not
  // thread-safe.
  RopeTable Table(int64_t positions);

 private:
  int64_t head_dim_;
  Tensor inv_freq_;  // [rope_angles] f32, computed in f32 as the reference does
  std::vector<float> host_inv_freq_;
  std::vector<float> table_;  // see RopeTable
};

}  // namespace gemmaserve::ops
