// CUDA kernels of ops/copy.h, and the copies between host and device memory.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace gemmaserve::kernels {

void GatherRows(const Tensor& x, const Tensor& rows, Tensor& out);
void InterleaveShards(const Tensor& gathered, int64_t world_size, Tensor& out);
// dst = src between any two of host memory and CUDA devices (equal bytes); synchronous when
// either side is host memory.
void Copy(const Tensor& src, Tensor& dst);

}  // namespace gemmaserve::kernels
