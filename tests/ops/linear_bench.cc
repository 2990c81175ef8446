// Linear on the bench-dense shapes (hidden 1536): the packed kernels (AVX2, AVX-512; whichever
// the CPU runs; f32 or bf16 panels) against OpenBLAS on the same weight row-major, for the row
// counts of decode steps (1 … 64 sequences) and of prefill chunks.
// Not a ctest test; run from the repository root with the machine otherwise idle:
//   build/tests/ops/linear_bench --benchmark_min_time=0.5
// Counters: GFLOP/s of arithmetic and GB/s of weight bytes streamed from memory.
#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "ops/linear.h"
#include "ops/panel_kernel.h"

namespace gemmaserve::ops {
namespace {

constexpr int kThreads = 2;

Tensor Random(Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

enum Impl : int64_t { kOpenBlas = 0, kAvx2 = 1, kAvx512 = 2, kAvx2Bf16 = 3, kAvx512Bf16 = 4 };

// Arguments: out, in, rows, impl (OpenBLAS on the row-major f32 weight, or a packed kernel on f32
// or bf16 panels).
void BM_Linear(benchmark::State& state) {
  const int64_t out = state.range(0), in = state.range(1), rows = state.range(2);
  const auto impl = static_cast<Impl>(state.range(3));
  const bool avx512 = impl == kAvx512 || impl == kAvx512Bf16;
  const bool bf16 = impl == kAvx2Bf16 || impl == kAvx512Bf16;
  if ((impl != kOpenBlas && !avx512 && !internal::CpuHasAvx2Fma()) ||
      (avx512 && !internal::CpuHasAvx512f())) {
    state.SkipWithError("this CPU does not run the kernel");
    return;
  }
  SetNumThreads(kThreads);
  const Tensor row_major = Random({out, in}, 1);
  const Tensor w = impl == kOpenBlas ? row_major
                                     : PackLinearWeight(row_major, bf16 ? DType::kBF16 : DType::kF32);
  const Tensor x = Random({rows, in}, 2);
  Tensor y = Tensor::Empty(DType::kF32, {rows, out});
  const internal::PanelKernel& kernel = avx512 ? internal::kAvx512Kernel : internal::kAvx2Kernel;
  for (auto _ : state) {
    if (impl == kOpenBlas) {
      Linear(x, w, y);
    } else {
      internal::PackedMatmul(kernel, x.data<float>(), rows, in, w.raw_data(), w.dtype(),
                             w.dim(0), y.data<float>(), out);
    }
    benchmark::DoNotOptimize(y.data<float>());
  }
  const double calls = static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * out * in * calls / 1e9,
                                                 benchmark::Counter::kIsRate);
  const double weight_bytes = static_cast<double>(w.nbytes());
  state.counters["weight_GB/s"] = benchmark::Counter(weight_bytes * calls / 1e9,
                                                     benchmark::Counter::kIsRate);
}

void Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"out", "in", "rows", "impl"});
  // gate_up [12288, 1536], down [1536, 6144], and a 64k-row slice of the LM head.
  for (const auto& [out, in] : std::vector<std::pair<int64_t, int64_t>>{
           {12288, 1536}, {1536, 6144}, {65536, 1536}}) {
    for (const int64_t rows : {1, 2, 4, 8, 16, 32, 64, 128, 512}) {
      for (const int64_t impl : {kAvx512Bf16, kAvx512, kAvx2Bf16, kAvx2, kOpenBlas}) {
        b->Args({out, in, rows, impl});
      }
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_Linear)->Apply(Shapes);

}  // namespace
}  // namespace gemmaserve::ops

BENCHMARK_MAIN();
