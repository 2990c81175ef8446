#include "ops/linear.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "ops/ops_util.h"
#include "ops/panel_kernel.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/linear.h"
#endif

namespace gemmaserve::ops {

Tensor PackLinearWeight(const Tensor& w) {
  CHECK(w.device().is_cpu()) << "PackLinearWeight: " << w.DebugString();
  CHECK_GE(w.rank(), 2) << "PackLinearWeight: " << w.DebugString();
  const int64_t out = w.dim(w.rank() - 2);
  const int64_t in = w.dim(w.rank() - 1);
  if (out % kPanelRows != 0) return w.dtype() == DType::kF32 ? w : w.ToF32();
  Shape shape(w.shape().begin(), w.shape().end() - 2);
  shape.insert(shape.end(), {out / kPanelRows, in, kPanelRows});
  Tensor packed = Tensor::Empty(DType::kF32, shape);
  const int64_t num_panels = w.numel() / (kPanelRows * in);  // over every matrix of the stack
  const size_t element = DTypeSize(w.dtype());
  const char* src = static_cast<const char*>(w.raw_data());
#pragma omp parallel
  {
    std::vector<float> rows(static_cast<size_t>(kPanelRows * in));
#pragma omp for
    for (int64_t p = 0; p < num_panels; ++p) {
      // A panel's 16 rows are consecutive rows of its matrix; widen them, then store k-major.
      ConvertToF32(w.dtype(), src + p * kPanelRows * in * element, rows.data(), rows.size());
      float* dst = packed.data<float>() + p * in * kPanelRows;
      for (int64_t lane = 0; lane < kPanelRows; ++lane) {
        for (int64_t k = 0; k < in; ++k) dst[k * kPanelRows + lane] = rows[lane * in + k];
      }
    }
  }
  return packed;
}

bool IsPackedLinearWeight(const Tensor& w) {
  return w.rank() == 3 && w.dim(2) == kPanelRows;
}

int64_t LinearOutFeatures(const Tensor& w) {
  return IsPackedLinearWeight(w) ? w.dim(0) * kPanelRows : w.dim(0);
}

int64_t LinearInFeatures(const Tensor& w) { return w.dim(1); }

void CopyLinearWeightRow(const Tensor& w, int64_t row, float* out) {
  const int64_t in = LinearInFeatures(w);
  CHECK(row >= 0 && row < LinearOutFeatures(w)) << "row " << row << " of " << w.DebugString();
  const float* data = w.data<float>();
  if (!IsPackedLinearWeight(w)) {
    std::copy(data + row * in, data + (row + 1) * in, out);
    return;
  }
  const float* panel = data + (row / kPanelRows) * in * kPanelRows + row % kPanelRows;
  for (int64_t k = 0; k < in; ++k) out[k] = panel[k * kPanelRows];
}

void Linear(const Tensor& x, const Tensor& w, Tensor& y) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (x.device().is_cuda()) return kernels::Linear(x, w, y);
#endif
  CheckCpuF32(x, "Linear x");
  CheckCpuF32(w, "Linear w");
  CheckCpuF32(y, "Linear y");
  CHECK_EQ(x.rank(), 2);
  CHECK(w.rank() == 2 || IsPackedLinearWeight(w)) << "Linear w: " << w.DebugString();
  const int64_t rows = x.dim(0);
  const int64_t in = x.dim(1);
  const int64_t out = LinearOutFeatures(w);
  CHECK_EQ(LinearInFeatures(w), in) << "Linear: x " << x.DebugString() << " · w "
                                    << w.DebugString();
  CheckShape(y, {rows, out}, "Linear y");
  if (rows == 0 || out == 0) return;
  if (IsPackedLinearWeight(w)) {
    internal::PackedMatmul(internal::BestPanelKernel(), x.data<float>(), rows, in,
                           w.data<float>(), w.dim(0), y.data<float>(), out);
    return;
  }
  if (rows == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(out), static_cast<blasint>(in),
                1.0f, w.data<float>(), static_cast<blasint>(in), x.data<float>(), 1, 0.0f,
                y.data<float>(), 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(rows),
              static_cast<blasint>(out), static_cast<blasint>(in), 1.0f, x.data<float>(),
              static_cast<blasint>(in), w.data<float>(), static_cast<blasint>(in), 0.0f,
              y.data<float>(), static_cast<blasint>(out));
}

absl::Status SetMaxCpuIsa(const std::string& max_isa) {
  absl::StatusOr<const internal::PanelKernel*> kernel = internal::PanelKernelFor(max_isa.c_str());
  if (!kernel.ok()) return kernel.status();
  internal::SetPanelKernel(**kernel);
  return absl::OkStatus();
}

const char* CpuKernelName() { return internal::BestPanelKernel().name; }

void SetNumThreads(int num_threads) {
  openblas_set_num_threads(num_threads);
  omp_set_num_threads(num_threads);
}

}  // namespace gemmaserve::ops
