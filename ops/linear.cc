#include "ops/linear.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ops/ops_util.h"
#include "ops/panel_kernel.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/linear.h"
#endif

namespace gemmaserve::ops {

namespace {

// --cpu-precision bf16 (SetCpuPrecision): large steps on bf16 panels compute in bf16.
std::atomic<bool> g_bf16_compute{false};

}  // namespace

namespace {

// Stores panel p (16 consecutive rows of `in` weights, widened into `rows`) k-major at `dst`.
void StorePanel(const std::vector<float>& rows, int64_t in, float* dst) {
  for (int64_t lane = 0; lane < kPanelRows; ++lane) {
    for (int64_t k = 0; k < in; ++k) dst[k * kPanelRows + lane] = rows[lane * in + k];
  }
}
// bf16 panels pair k: weight (k, lane) at 32·(k/2) + 2·lane + k%2 (panel_kernel.h).
void StorePanel(const std::vector<float>& rows, int64_t in, uint16_t* dst) {
  for (int64_t lane = 0; lane < kPanelRows; ++lane) {
    for (int64_t k = 0; k < in; ++k) {
      dst[2 * kPanelRows * (k / 2) + 2 * lane + k % 2] = F32ToBf16(rows[lane * in + k]);
    }
  }
}

}  // namespace

Tensor PackLinearWeight(const Tensor& w, DType panel_dtype) {
  CHECK(w.device().is_cpu()) << "PackLinearWeight: " << w.DebugString();
  CHECK_GE(w.rank(), 2) << "PackLinearWeight: " << w.DebugString();
  CHECK(panel_dtype == DType::kF32 || panel_dtype == DType::kBF16) << DTypeName(panel_dtype);
  const int64_t out = w.dim(w.rank() - 2);
  const int64_t in = w.dim(w.rank() - 1);
  if (out % kPanelRows != 0) return w.dtype() == DType::kF32 ? w : w.ToF32();
  if (in % 2 != 0) panel_dtype = DType::kF32;  // bf16 panels pair k
  Shape shape(w.shape().begin(), w.shape().end() - 2);
  shape.insert(shape.end(), {out / kPanelRows, in, kPanelRows});
  Tensor packed = Tensor::Empty(panel_dtype, shape);
  const int64_t num_panels = w.numel() / (kPanelRows * in);  // over every matrix of the stack
  const size_t element = DTypeSize(w.dtype());
  const char* src = static_cast<const char*>(w.raw_data());
#pragma omp parallel
  {
    std::vector<float> rows(static_cast<size_t>(kPanelRows * in));
#pragma omp for
    for (int64_t p = 0; p < num_panels; ++p) {
      // A panel's 16 rows are consecutive rows of its matrix; widen them, then store k-major
      // (bf16 → f32 → bf16 gives back the same bits).
      ConvertToF32(w.dtype(), src + p * kPanelRows * in * element, rows.data(), rows.size());
      if (panel_dtype == DType::kF32) {
        StorePanel(rows, in, packed.data<float>() + p * in * kPanelRows);
      } else {
        StorePanel(rows, in, packed.data<uint16_t>() + p * in * kPanelRows);
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
  if (!IsPackedLinearWeight(w)) {
    ConvertToF32(w.dtype(), static_cast<const char*>(w.raw_data()) + row * in * DTypeSize(w.dtype()),
                 out, static_cast<size_t>(in));
    return;
  }
  const int64_t first = (row / kPanelRows) * in * kPanelRows + row % kPanelRows;
  if (w.dtype() == DType::kBF16) {
    const uint16_t* panel = w.data<uint16_t>() + (row / kPanelRows) * in * kPanelRows;
    const int64_t lane = row % kPanelRows;
    for (int64_t k = 0; k < in; ++k) {
      out[k] = Bf16ToF32(panel[2 * kPanelRows * (k / 2) + 2 * lane + k % 2]);
    }
    return;
  }
  const float* panel = w.data<float>() + first;
  for (int64_t k = 0; k < in; ++k) out[k] = panel[k * kPanelRows];
}

void Linear(const Tensor& x, const Tensor& w, Tensor& y) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (x.device().is_cuda()) return kernels::Linear(x, w, y);
#endif
  CheckCpuF32(x, "Linear x");
  CheckCpuF32(y, "Linear y");
  CHECK(w.device().is_cpu() && (w.dtype() == DType::kF32 ||
                                (w.dtype() == DType::kBF16 && IsPackedLinearWeight(w))))
      << "Linear w: " << w.DebugString() << " (f32, or bf16 packed, on the CPU)";
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
    const internal::Bf16Engine engine = internal::BestBf16Engine();
    if (w.dtype() == DType::kBF16 && rows >= kBf16MinRows && in % internal::kBf16TileDepth == 0 &&
        engine != internal::Bf16Engine::kNone && g_bf16_compute.load(std::memory_order_relaxed)) {
      internal::PackedMatmulBf16(engine, x.data<float>(), rows, in, w.raw_data(), w.dim(0),
                                 y.data<float>(), out);
      return;
    }
    internal::PackedMatmul(internal::BestPanelKernel(), x.data<float>(), rows, in, w.raw_data(),
                           w.dtype(), w.dim(0), y.data<float>(), out);
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

absl::Status SetCpuPrecision(DType precision) {
  if (precision != DType::kF32 && precision != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CPU precision ", std::string(DTypeName(precision)), ": expected f32 or bf16"));
  }
  g_bf16_compute.store(precision == DType::kBF16, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status SetCpuPrecision(const std::string& name) {
  if (name == "f32") return SetCpuPrecision(DType::kF32);
  if (name == "bf16") return SetCpuPrecision(DType::kBF16);
  return absl::InvalidArgumentError(
      absl::StrCat("--cpu-precision \"", name, "\": expected f32 or bf16"));
}

absl::Status SetMaxCpuIsa(const std::string& max_isa) {
  absl::StatusOr<const internal::PanelKernel*> kernel = internal::PanelKernelFor(max_isa.c_str());
  if (!kernel.ok()) return kernel.status();
  internal::SetPanelKernel(**kernel, *internal::Bf16EngineFor(max_isa.c_str()));
  return absl::OkStatus();
}

const char* CpuKernelName() { return internal::BestPanelKernel().name; }

const char* CpuBf16EngineName() { return internal::Bf16EngineName(internal::BestBf16Engine()); }

void SetNumThreads(int num_threads) {
  openblas_set_num_threads(num_threads);
  omp_set_num_threads(num_threads);
}

}  // namespace gemmaserve::ops
