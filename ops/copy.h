// Ops that move data and compute nothing: row gathers, the vocab-shard interleave, and the one
// way a tensor leaves its device for the host.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"

namespace gemmaserve::ops {

// Indices [begin, end) of dimension `dim` of `x` (host memory, any dtype): a view when dim is 0,
// else a copy that reads only the bytes of the slice (e.g. one rank's columns of a checkpoint
// tensor in its mmap).
Tensor SliceDim(const Tensor& x, int dim, int64_t begin, int64_t end);

// `parts` (host memory, equal dtype and shapes but for dimension `dim`, which is 0 or 1) joined
// along `dim`, in a new tensor.
Tensor Concat(const std::vector<Tensor>& parts, int dim);

// The single element of `x` (any float dtype, any device) as a float on the host.
float ScalarToHost(const Tensor& x);

// Whether a and b (host memory) have one dtype and shape and the same bytes: bitwise equality,
// for which NaN equals NaN of the same bits and 0 differs from −0.
bool SameBits(const Tensor& a, const Tensor& b);

// out[i, :] = x[rows[i], :]. x: [n, dim] f32; rows: [m] i32, each in [0, n); out: [m, dim] f32.
void GatherRows(const Tensor& x, const Tensor& rows, Tensor& out);

// Reassembles rows that a vocab-parallel LM head computed in shards and an all-gather stacked rank
// by rank: gathered [world · rows, shard] holds rank r's rows at [r · rows, (r + 1) · rows);
// out: [rows, world · shard] with rank r's shard at columns [r · shard, (r + 1) · shard).
void InterleaveShards(const Tensor& gathered, int64_t world_size, Tensor& out);

// dst = src: equal dtype and element count, on any devices (synchronous when one is the host).
void Copy(const Tensor& src, Tensor& dst);

// `x` itself when it is on `device` already; otherwise a new copy there.
Tensor ToDevice(const Tensor& x, const Device& device);

// `x` itself when it is in host memory; otherwise a host copy (synchronous).
Tensor ToHost(const Tensor& x);

}  // namespace gemmaserve::ops
