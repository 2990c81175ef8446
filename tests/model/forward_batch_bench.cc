// A worker's host time per decode step apart from the model and the plan's parsing:
// ForwardBatch::Finalize (validating every block a token reads, deriving positions, slots and the
// [S, max_blocks] tables) and, where the step replays a decode graph, PadForGraph. At 32 and 128
// sequences over contexts of 1,024 and 32,768 tokens of the 31B's geometry (blocks of 16, a
// 1,024-token window whose freed front is −1 in the sliding table, as StepExecutor fills it).
// tests/coordinator/scheduler_bench.cc measures the coordinator's side of the same steps.
//
//   build/tests/model/forward_batch_bench
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "model/forward_batch.h"
#include "model/random_checkpoint.h"

namespace gemmaserve::model {
namespace {

constexpr int64_t kBlockSize = 16;

// state.range(0) sequences, each decoding its token state.range(1) of context.
ForwardBatch DecodeBatch(const Gemma4Config& config, int64_t num_sequences, int64_t context) {
  const int64_t blocks = (context + kBlockSize - 1) / kBlockSize;
  const int64_t first_sliding = (context - config.sliding_window) / kBlockSize;
  ForwardBatch batch;
  for (int64_t s = 0; s < num_sequences; ++s) {
    BatchSequence seq;
    seq.num_cached = context - 1;
    seq.num_tokens = 1;
    for (int g = 0; g < kNumKvGroups; ++g) {
      for (int64_t b = 0; b < blocks; ++b) {
        const bool freed = g == static_cast<int>(LayerKind::kSliding) && b < first_sliding;
        seq.block_tables[g].push_back(freed ? -1 : static_cast<int32_t>(s * blocks + b));
      }
    }
    batch.sequences.push_back(std::move(seq));
    batch.token_ids.push_back(static_cast<int32_t>(7 + s));
  }
  return batch;
}

KvGeometry Geometry(int64_t num_sequences, int64_t context) {
  const int64_t blocks = num_sequences * ((context + kBlockSize - 1) / kBlockSize);
  return {kBlockSize, {blocks, blocks}, {kBlockSize, kBlockSize}};
}

void BM_FinalizeDecode(benchmark::State& state) {
  const Gemma4Config config = *RandomCheckpointPreset("31b");
  ForwardBatch batch = DecodeBatch(config, state.range(0), state.range(1));
  const KvGeometry geometry = Geometry(state.range(0), state.range(1));
  for (auto _ : state) {
    const absl::Status status = batch.Finalize(config, geometry);
    if (!status.ok()) state.SkipWithError(status.ToString().c_str());
    benchmark::DoNotOptimize(batch.block_tables[0].data());
  }
}

void BM_PadForGraph(benchmark::State& state) {
  const Gemma4Config config = *RandomCheckpointPreset("31b");
  ForwardBatch batch = DecodeBatch(config, state.range(0), state.range(1));
  const absl::Status status = batch.Finalize(config, Geometry(state.range(0), state.range(1)));
  if (!status.ok()) state.SkipWithError(status.ToString().c_str());
  ForwardBatch padded;
  for (auto _ : state) {
    PadForGraph(batch, GraphShapeFor(batch, config), padded);
    benchmark::DoNotOptimize(padded.block_tables[0].data());
  }
}

BENCHMARK(BM_FinalizeDecode)->ArgsProduct({{32, 128}, {1024, 32768}})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PadForGraph)->ArgsProduct({{32, 128}, {1024, 16384}})->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace gemmaserve::model

BENCHMARK_MAIN();
