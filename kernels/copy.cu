#include "kernels/copy.h"

#include "kernels/cuda_util.h"

namespace gemmaserve::kernels {
namespace {

using internal::CheckDType;
using internal::UseDeviceOf;

// One block per output row.
__global__ void GatherRowsKernel(const float* x, const int32_t* rows, float* out, int64_t dim) {
  const float* src = x + static_cast<int64_t>(rows[blockIdx.x]) * dim;
  float* dst = out + blockIdx.x * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = src[j];
}

// One block per (rank, row) of the gathered shards.
__global__ void InterleaveKernel(const float* gathered, float* out, int64_t rows, int64_t shard,
                                 int64_t world_size) {
  const int64_t r = blockIdx.x / rows;
  const int64_t i = blockIdx.x % rows;
  const float* src = gathered + (r * rows + i) * shard;
  float* dst = out + i * world_size * shard + r * shard;
  for (int64_t j = threadIdx.x; j < shard; j += blockDim.x) dst[j] = src[j];
}

}  // namespace

void GatherRows(const Tensor& x, const Tensor& rows, Tensor& out) {
  UseDeviceOf({&x, &rows, &out}, "GatherRows");
  CheckDType(x, DType::kF32, "GatherRows x");
  CheckDType(rows, DType::kI32, "GatherRows rows");
  CheckDType(out, DType::kF32, "GatherRows out");
  CHECK(x.rank() == 2 && out.rank() == 2 && out.dim(0) == rows.numel() && out.dim(1) == x.dim(1))
      << "GatherRows: " << x.DebugString() << " -> " << out.DebugString();
  if (rows.numel() == 0) return;
  GatherRowsKernel<<<static_cast<unsigned>(rows.numel()), 256, 0, internal::Stream()>>>(
      x.data<float>(), rows.data<int32_t>(), out.data<float>(), x.dim(1));
  GS_CUDA_CHECK_LAUNCH("GatherRows");
}

void InterleaveShards(const Tensor& gathered, int64_t world_size, Tensor& out) {
  UseDeviceOf({&gathered, &out}, "InterleaveShards");
  CheckDType(gathered, DType::kF32, "InterleaveShards gathered");
  CheckDType(out, DType::kF32, "InterleaveShards out");
  CHECK(world_size >= 1 && gathered.rank() == 2 && gathered.dim(0) % world_size == 0)
      << "InterleaveShards: " << gathered.DebugString() << " over " << world_size << " ranks";
  const int64_t rows = gathered.dim(0) / world_size;
  const int64_t shard = gathered.dim(1);
  CHECK(out.rank() == 2 && out.dim(0) == rows && out.dim(1) == world_size * shard)
      << "InterleaveShards out: " << out.DebugString();
  if (rows == 0) return;
  InterleaveKernel<<<static_cast<unsigned>(world_size * rows), 256, 0, internal::Stream()>>>(
      gathered.data<float>(), out.data<float>(), rows, shard, world_size);
  GS_CUDA_CHECK_LAUNCH("InterleaveShards");
}

void Copy(const Tensor& src, Tensor& dst) {
  CHECK(src.nbytes() == dst.nbytes()) << "Copy: " << src.DebugString() << " to "
                                      << dst.DebugString();
  if (src.nbytes() == 0) return;
  const Device& device = src.device().is_cuda() ? src.device() : dst.device();
  GS_CUDA_CHECK(cudaSetDevice(device.ordinal));
  // Unified addressing tells each pointer's side; a copy from or to pageable host memory returns
  // once the bytes have arrived.
  GS_CUDA_CHECK(cudaMemcpy(dst.raw_data(), src.raw_data(), src.nbytes(), cudaMemcpyDefault));
}

}  // namespace gemmaserve::kernels
