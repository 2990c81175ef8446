#include "ops/copy.h"

#include <cstring>

#include "ops/ops_util.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/copy.h"
#endif

namespace gemmaserve::ops {

Tensor SliceDim(const Tensor& x, int dim, int64_t begin, int64_t end) {
  CHECK(x.device().is_cpu()) << "SliceDim: " << x.DebugString();
  CHECK(dim >= 0 && dim < x.rank() && 0 <= begin && begin <= end && end <= x.dim(dim))
      << "SliceDim: [" << begin << ", " << end << ") of dimension " << dim << " of "
      << x.DebugString();
  if (dim == 0) return x.Slice(begin, end);
  Shape shape = x.shape();
  int64_t outer = 1;
  for (int i = 0; i < dim; ++i) outer *= shape[i];
  int64_t inner = 1;
  for (int i = dim + 1; i < x.rank(); ++i) inner *= shape[i];
  const int64_t full = shape[dim];
  shape[dim] = end - begin;
  Tensor out = Tensor::Empty(x.dtype(), shape);
  const size_t element = DTypeSize(x.dtype());
  const size_t run_bytes = static_cast<size_t>((end - begin) * inner) * element;
  const char* src = static_cast<const char*>(x.raw_data());
  for (int64_t o = 0; o < outer; ++o) {
    std::memcpy(static_cast<char*>(out.raw_data()) + o * run_bytes,
                src + ((o * full + begin) * inner) * element, run_bytes);
  }
  return out;
}

Tensor Concat(const std::vector<Tensor>& parts, int dim) {
  CHECK(!parts.empty() && (dim == 0 || dim == 1)) << "Concat along " << dim;
  Shape shape = parts[0].shape();
  shape[dim] = 0;
  for (const Tensor& part : parts) {
    Shape expected = shape;
    expected[dim] = part.dim(dim);
    CHECK(part.device().is_cpu() && part.dtype() == parts[0].dtype() && part.shape() == expected)
        << "Concat: " << part.DebugString() << " with " << parts[0].DebugString();
    shape[dim] += part.dim(dim);
  }
  Tensor out = Tensor::Empty(parts[0].dtype(), shape);
  const int64_t outer = dim == 0 ? 1 : shape[0];
  char* dst = static_cast<char*>(out.raw_data());
  for (int64_t o = 0; o < outer; ++o) {
    for (const Tensor& part : parts) {
      const size_t bytes = part.nbytes() / outer;
      std::memcpy(dst, static_cast<const char*>(part.raw_data()) + o * bytes, bytes);
      dst += bytes;
    }
  }
  return out;
}

float ScalarToHost(const Tensor& x) {
  CHECK_EQ(x.numel(), 1) << "ScalarToHost: " << x.DebugString();
  float value = 0.0f;
  ConvertToF32(x.dtype(), ToHost(x).raw_data(), &value, 1);
  return value;
}

bool SameBits(const Tensor& a, const Tensor& b) {
  CHECK(a.device().is_cpu() && b.device().is_cpu())
      << "SameBits: " << a.DebugString() << " and " << b.DebugString();
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

void GatherRows(const Tensor& x, const Tensor& rows, Tensor& out) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (out.device().is_cuda()) return kernels::GatherRows(x, rows, out);
#endif
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
#ifdef GEMMASERVE_HAVE_CUDA
  if (out.device().is_cuda()) return kernels::InterleaveShards(gathered, world_size, out);
#endif
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
  CHECK(src.dtype() == dst.dtype() && src.numel() == dst.numel())
      << "Copy: " << src.DebugString() << " to " << dst.DebugString();
#ifdef GEMMASERVE_HAVE_CUDA
  if (src.device().is_cuda() || dst.device().is_cuda()) return kernels::Copy(src, dst);
#endif
  CHECK(src.device().is_cpu() && dst.device().is_cpu())
      << "Copy: " << src.DebugString() << " to " << dst.DebugString()
      << ": this build has no CUDA";
  std::memcpy(dst.raw_data(), src.raw_data(), src.nbytes());
}

Tensor ToDevice(const Tensor& x, const Device& device) {
  if (x.device() == device) return x;
  Tensor copy = Tensor::Empty(x.dtype(), x.shape(), device);
  Copy(x, copy);
  return copy;
}

Tensor ToHost(const Tensor& x) { return ToDevice(x, Device::Cpu()); }

}  // namespace gemmaserve::ops
