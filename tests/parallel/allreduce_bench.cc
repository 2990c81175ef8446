// Gloo all-reduce latency for hidden-size f32 vectors, two ranks on loopback (two threads of this
// process, each with its own GlooCommunicator over TCP 127.0.0.1).
//
//   build/tests/parallel/allreduce_bench [--benchmark_repetitions=3]
//
// Arguments: the vector length. 2816 and 5376 are the hidden sizes of the Gemma 4 26B-A4B and 31B
// models; 16·5376 is one all-reduce of a 16-token prefill chunk of the 31B model.
#include <thread>

#include "benchmark/benchmark.h"
#include "common/check.h"
#include "parallel/gloo_communicator.h"
#include "parallel/key_value_store.h"

namespace gemmaserve::parallel {
namespace {

constexpr int kWorldSize = 2;
constexpr int64_t kIterations = 5000;

std::unique_ptr<GlooCommunicator> Join(int rank, KeyValueStore& store) {
  absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
      GlooCommunicator::Create(rank, kWorldSize, store, "127.0.0.1", absl::Seconds(30));
  CHECK(comm.ok()) << comm.status();
  return std::move(*comm);
}

// Rank 0 is timed by the benchmark loop; rank 1 runs the same number of all-reduces beside it.
// The iteration count is fixed so that both ranks know it in advance.
void BM_GlooAllReduceSum(benchmark::State& state) {
  const int64_t n = state.range(0);
  InMemoryKeyValueStore store;
  std::thread peer([&] {
    std::unique_ptr<GlooCommunicator> comm = Join(1, store);
    Tensor x = Tensor::Zeros(DType::kF32, {n});
    for (int64_t i = 0; i < kIterations; ++i) comm->AllReduceSum(x);
  });
  std::unique_ptr<GlooCommunicator> comm = Join(0, store);
  Tensor x = Tensor::Zeros(DType::kF32, {n});
  for (auto _ : state) comm->AllReduceSum(x);
  peer.join();
  state.SetBytesProcessed(state.iterations() * n * static_cast<int64_t>(sizeof(float)));
}
BENCHMARK(BM_GlooAllReduceSum)
    ->Arg(2816)
    ->Arg(5376)
    ->Arg(16 * 5376)
    ->Iterations(kIterations)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace gemmaserve::parallel

BENCHMARK_MAIN();
