#include "ops/activation.h"

#include <algorithm>

#include "ops/ops_util.h"
#include "ops/vector_loops.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/elementwise.h"
#endif

namespace gemmaserve::ops {

void GeluTanhGate(const Tensor& gate_up, Tensor& out) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (out.device().is_cuda()) return kernels::GeluTanhGate(gate_up, out);
#endif
  CheckCpuF32(gate_up, "GeluTanhGate gate_up");
  CheckCpuF32(out, "GeluTanhGate out");
  CHECK_EQ(gate_up.rank(), 2);
  const int64_t rows = gate_up.dim(0);
  const int64_t width = gate_up.dim(1) / 2;
  CHECK_EQ(gate_up.dim(1), 2 * width);
  CheckShape(out, {rows, width}, "GeluTanhGate out");
  const float* in = gate_up.data<float>();
  float* dst = out.data<float>();
  // Split over elements, not rows: a decode step of one sequence has one row.
  ParallelRanges(rows * width, rows * width > kParallelElements, [&](int64_t begin, int64_t end) {
    while (begin < end) {
      const int64_t r = begin / width;
      const int64_t i = begin - r * width;
      const int64_t count = std::min(end - begin, width - i);
      const float* gate = in + r * 2 * width + i;
      GeluTanhGateRow(gate, gate + width, count, dst + begin);
      begin += count;
    }
  });
}

}  // namespace gemmaserve::ops
