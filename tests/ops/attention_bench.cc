// PagedAttention (tiled) against PagedAttentionReference on bench-dense's attention shapes
// (8 query heads; sliding layers: 4 KV heads of 256 over a 1,024-token window; full layers: 1 KV
// head of 512), for a whole prefill of P tokens and for one decode step at depth P, f32 cache;
// on full layers also the tiled kernel rebuilding keys from values (KeysFromValues: the k_eq_v
// full layers of 31B and 26B-A4B, whose cache holds values only).
// Not a ctest test; run from the repository root with the machine otherwise idle:
//   build/tests/ops/attention_bench --benchmark_min_time=0.5
// Counters: query tokens per second, and GB/s of KV cache read if every key and value (values
// only, when keys are rebuilt) were read once per step (what the tiled kernel approaches and the
// reference exceeds).
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "ops/attention.h"
#include "ops/linear.h"
#include "ops/rope.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

constexpr int kThreads = 2;
constexpr int64_t kBlockSize = 16;
constexpr int64_t kNumHeads = 8;

enum Kernel { kReference = 0, kTiled = 1, kTiledKeysFromValues = 2 };

// Arguments: context P, query tokens (P: prefill; 1: decode at depth P), full layer (1) or
// sliding (0), kernel (Kernel).
void BM_PagedAttention(benchmark::State& state) {
  const int64_t context = state.range(0);
  const int64_t tokens = state.range(1);
  const bool full = state.range(2) == 1;
  const Kernel kernel = static_cast<Kernel>(state.range(3));
  const int64_t kv_heads = full ? 1 : 4;
  const int64_t head_dim = full ? 512 : 256;
  const int64_t window = full ? 0 : 1024;
  SetNumThreads(kThreads);
  const int64_t blocks = (context + kBlockSize - 1) / kBlockSize;
  std::mt19937 rng(1);
  const Tensor k_cache =
      kernel == kTiledKeysFromValues
          ? Tensor()
          : test_util::RandomTensor({blocks, kBlockSize, kv_heads, head_dim}, rng);
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
  Rotary rotary(head_dim, head_dim / 8, 1e6);  // a full layer's proportional RoPE
  const KeysFromValues keys_from_values{test_util::RandomTensor({head_dim}, rng, 0.5f, 1.5f),
                                        rotary.inv_freq(), rotary.Table(context)};
  for (auto _ : state) {
    switch (kernel) {
      case kReference:
        PagedAttentionReference(q, k_cache, v_cache, metadata, window, 1.0f, out);
        break;
      case kTiled:
        PagedAttention(q, k_cache, v_cache, metadata, window, 1.0f, out);
        break;
      case kTiledKeysFromValues:
        PagedAttention(q, k_cache, v_cache, metadata, window, 1.0f, out, &keys_from_values);
        break;
    }
    benchmark::DoNotOptimize(out.data<float>());
  }
  const double calls = static_cast<double>(state.iterations());
  const int64_t keys_read = window > 0 ? std::min(context, window + tokens - 1) : context;
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens) * calls, benchmark::Counter::kIsRate);
  const double kv_rows = kernel == kTiledKeysFromValues ? 1.0 : 2.0;
  state.counters["KV GB/s"] = benchmark::Counter(
      kv_rows * keys_read * kv_heads * head_dim * sizeof(float) * calls / 1e9,
      benchmark::Counter::kIsRate);
}

void Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"context", "tokens", "full", "kernel"});
  for (const int64_t full : {0, 1}) {
    for (const int64_t kernel : {kReference, kTiled, kTiledKeysFromValues}) {
      if (kernel == kTiledKeysFromValues && full == 0) continue;
      for (const int64_t context : {512, 4096, 16384}) b->Args({context, context, full, kernel});
      for (const int64_t context : {4096, 16384, 65536}) b->Args({context, 1, full, kernel});
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_PagedAttention)->Apply(Shapes);

}  // namespace
}  // namespace gemmaserve::ops

BENCHMARK_MAIN();
