// Linear on the bench-dense shapes (hidden 1536): the packed kernel against OpenBLAS on the same
// weight row-major, for the row counts of decode steps (1 … 64 sequences) and of prefill chunks.
// Not a ctest test; run from the repository root with the machine otherwise idle:
//   build/tests/ops/linear_bench --benchmark_min_time=0.5
// Counters: GFLOP/s of arithmetic and GB/s of weight bytes streamed from memory.
#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "ops/linear.h"

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

// Arguments: out, in, rows, packed (1) or row-major through OpenBLAS (0).
void BM_Linear(benchmark::State& state) {
  const int64_t out = state.range(0), in = state.range(1), rows = state.range(2);
  SetNumThreads(kThreads);
  const Tensor row_major = Random({out, in}, 1);
  const Tensor w = state.range(3) != 0 ? PackLinearWeight(row_major) : row_major;
  const Tensor x = Random({rows, in}, 2);
  Tensor y = Tensor::Empty(DType::kF32, {rows, out});
  for (auto _ : state) {
    Linear(x, w, y);
    benchmark::DoNotOptimize(y.data<float>());
  }
  const double calls = static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * out * in * calls / 1e9,
                                                 benchmark::Counter::kIsRate);
  state.counters["weight_GB/s"] = benchmark::Counter(4.0 * out * in * calls / 1e9,
                                                     benchmark::Counter::kIsRate);
}

void Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"out", "in", "rows", "packed"});
  // gate_up [12288, 1536], down [1536, 6144], and a 64k-row slice of the LM head.
  for (const auto& [out, in] : std::vector<std::pair<int64_t, int64_t>>{
           {12288, 1536}, {1536, 6144}, {65536, 1536}}) {
    for (const int64_t rows : {1, 2, 4, 8, 16, 32, 64, 128, 512}) {
      for (const int64_t packed : {1, 0}) b->Args({out, in, rows, packed});
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_Linear)->Apply(Shapes);

}  // namespace
}  // namespace gemmaserve::ops

BENCHMARK_MAIN();
