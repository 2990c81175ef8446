#include "ops/copy.h"

#include <cstring>

#include "ops/ops_util.h"

namespace gemmaserve::ops {

void GatherRows(const Tensor& x, const Tensor& rows, Tensor& out) {
  CheckCpuF32(x, "GatherRows x");
  CheckCpuI32(rows, "GatherRows rows");
  CheckCpuF32(out, "GatherRows out");
  CHECK_EQ(x.rank(), 2) << "GatherRows x: " << x.DebugString();
  const int64_t dim = x.dim(1);
  CheckShape(out, {rows.numel(), dim}, "GatherRows out");
  const int32_t* index = rows.data<int32_t>();
  for (int64_t i = 0; i < rows.numel(); ++i) {
    CHECK(index[i] >= 0 && index[i] < x.dim(0)) << "GatherRows: row " << index[i] << " of "
                                                << x.DebugString();
    std::memcpy(out.data<float>() + i * dim, x.data<float>() + index[i] * dim,
                dim * sizeof(float));
  }
}

void InterleaveShards(const Tensor& gathered, int64_t world_size, Tensor& out) {
  CheckCpuF32(gathered, "InterleaveShards gathered");
  CheckCpuF32(out, "InterleaveShards out");
  CHECK(world_size >= 1 && gathered.rank() == 2 && gathered.dim(0) % world_size == 0)
      << "InterleaveShards: " << gathered.DebugString() << " over " << world_size << " ranks";
  const int64_t rows = gathered.dim(0) / world_size;
  const int64_t shard = gathered.dim(1);
  CheckShape(out, {rows, world_size * shard}, "InterleaveShards out");
  for (int64_t r = 0; r < world_size; ++r) {
    for (int64_t i = 0; i < rows; ++i) {
      std::memcpy(out.data<float>() + i * world_size * shard + r * shard,
                  gathered.data<float>() + (r * rows + i) * shard, shard * sizeof(float));
    }
  }
}

void Copy(const Tensor& src, Tensor& dst) {
  CHECK(src.device().is_cpu() && dst.device().is_cpu())
      << "Copy: " << src.DebugString() << " to " << dst.DebugString()
      << ": this build has no copy between devices";
  CHECK(src.dtype() == dst.dtype() && src.numel() == dst.numel())
      << "Copy: " << src.DebugString() << " to " << dst.DebugString();
  std::memcpy(dst.raw_data(), src.raw_data(), src.nbytes());
}

Tensor ToDevice(const Tensor& x, const Device& device) {
  CHECK(x.device().is_cpu() && device.is_cpu())
      << "ToDevice: " << x.DebugString() << " to " << device.ToString()
      << ": this build has no copy between devices";
  return x;
}

Tensor ToHost(const Tensor& x) {
  CHECK(x.device().is_cpu()) << "ToHost: " << x.DebugString()
                             << " is on a device this build has no copy for";
  return x;
}

}  // namespace gemmaserve::ops
