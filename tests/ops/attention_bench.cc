// PagedAttention (tiled) against PagedAttentionReference on bench-dense's attention shapes
// (8 query heads; sliding layers: 4 KV heads of 256 over a 1,024-token window; full layers: 1 KV
// head of 512), for a whole prefill of P tokens and for one decode step at depth P, f32 cache.
// Not a ctest test; run from the repository root with the machine otherwise idle:
//   build/tests/ops/attention_bench --benchmark_min_time=0.5
// Counters: query tokens per second, and GB/s of KV cache read if every key and value were read
// once per step (what the tiled kernel approaches and the reference exceeds).
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "ops/attention.h"
#include "ops/linear.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

constexpr int kThreads = 2;
constexpr int64_t kBlockSize = 16;
constexpr int64_t kNumHeads = 8;

// Arguments: context P, query tokens (P: prefill; 1: decode at depth P), full layer (1) or
// sliding (0), tiled (1) or reference (0).
void BM_PagedAttention(benchmark::State& state) {
  const int64_t context = state.range(0);
  const int64_t tokens = state.range(1);
  const bool full = state.range(2) == 1;
  const bool tiled = state.range(3) == 1;
  const int64_t kv_heads = full ? 1 : 4;
  const int64_t head_dim = full ? 512 : 256;
  const int64_t window = full ? 0 : 1024;
  SetNumThreads(kThreads);
  const int64_t blocks = (context + kBlockSize - 1) / kBlockSize;
  std::mt19937 rng(1);
  const Tensor k_cache = test_util::RandomTensor({blocks, kBlockSize, kv_heads, head_dim}, rng);
  const Tensor v_cache = test_util::RandomTensor({blocks, kBlockSize, kv_heads, head_dim}, rng);
  const Tensor q = test_util::RandomTensor({tokens, kNumHeads, head_dim}, rng);
  Tensor out = Tensor::Empty(DType::kF32, q.shape());
  std::vector<int32_t> table(blocks);
  for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>((b * 7) % blocks);
  AttentionMetadata metadata;
  metadata.token_begin = Tensor::FromInts({0}, {1});
  metadata.num_tokens = Tensor::FromInts({static_cast<int32_t>(tokens)}, {1});
  metadata.context_lens = Tensor::FromInts({static_cast<int32_t>(context)}, {1});
  metadata.block_tables = Tensor::FromInts(table, {1, blocks});
  metadata.max_context_len = context;
  for (auto _ : state) {
    if (tiled) {
      PagedAttention(q, k_cache, v_cache, metadata, window, 1.0f, out);
    } else {
      PagedAttentionReference(q, k_cache, v_cache, metadata, window, 1.0f, out);
    }
    benchmark::DoNotOptimize(out.data<float>());
  }
  const double calls = static_cast<double>(state.iterations());
  const int64_t keys_read = window > 0 ? std::min(context, window + tokens - 1) : context;
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens) * calls, benchmark::Counter::kIsRate);
  state.counters["KV GB/s"] = benchmark::Counter(
      2.0 * keys_read * kv_heads * head_dim * sizeof(float) * calls / 1e9,
      benchmark::Counter::kIsRate);
}

void Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"context", "tokens", "full", "tiled"});
  for (const int64_t full : {0, 1}) {
    for (const int64_t tiled : {0, 1}) {
      for (const int64_t context : {512, 4096, 16384}) b->Args({context, context, full, tiled});
      for (const int64_t context : {4096, 16384, 65536}) b->Args({context, 1, full, tiled});
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_PagedAttention)->Apply(Shapes);

}  // namespace
}  // namespace gemmaserve::ops

BENCHMARK_MAIN();
