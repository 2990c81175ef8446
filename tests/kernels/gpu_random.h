// Random tensors made on the GPU (a counter-based hash of the element index and a seed), for the
// benchmarks' 31B-sized weights, which would take minutes to copy from the host. Test-only.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace gemmaserve::testing {

// Fills an f32 or bf16 tensor on a GPU with values uniform in [lo, hi) (bf16: rounded).
void FillUniformOnGpu(Tensor& t, uint64_t seed, float lo, float hi);

}  // namespace gemmaserve::testing
