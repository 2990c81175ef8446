// The GPU benchmarks (DISABLED_ tests, run by scripts/gpu_check.sh with
// --gtest_also_run_disabled_tests --gtest_filter='*Bench*'): the device's copy bandwidth, then
// decode steps of the 31B layer stack (all 60 layers, random bf16 weights made on the device) at
// batch 1 and 32 with 1,024 tokens of context each, op by op and replayed as decode graphs,
// against the floor of reading every weight once at the measured bandwidth, and one 2,048-token
// prefill; and one 26B-A4B MoE layer (128
// experts, top-8) decoding 1 and 128 tokens. Each time is the median of 10 steps after 2
// warm-ups, the host waiting for the logits (as a serving step does).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "model/gemma4.h"
#include "model/kv_cache.h"
#include "model/kv_pages.h"
#include "model/random_checkpoint.h"
#include "ops/copy.h"
#include "tests/kernels/gpu_random.h"
#include "tests/kernels/gpu_test_util.h"

namespace gemmaserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Bytes per second a device-to-device copy moves, counting bytes read and written.
double CopyBandwidth() {
  const int64_t n = int64_t{1} << 30;  // 4 GiB of f32 each way
  Tensor a = Tensor::Empty(DType::kF32, {n}, Gpu());
  Tensor b = Tensor::Empty(DType::kF32, {n}, Gpu());
  FillUniformOnGpu(a, 1, -1.0f, 1.0f);
  std::vector<double> seconds;
  for (int i = 0; i < 7; ++i) {
    const auto start = Clock::now();
    ops::Copy(a, b);
    ops::ToHost(b.Rows(1));  // waits for the copy
    seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return 2.0 * static_cast<double>(a.nbytes()) / Median(seconds);
}

Tensor RandomMatrix(int64_t out, int64_t in, uint64_t seed) {
  Tensor w = Tensor::Empty(DType::kBF16, {out, in}, Gpu());
  FillUniformOnGpu(w, seed, -0.0346f, 0.0346f);  // standard deviation 0.02
  return w;
}

Tensor RandomVector(int64_t n, uint64_t seed) {
  Tensor v = Tensor::Empty(DType::kF32, {n}, Gpu());
  FillUniformOnGpu(v, seed, 0.8f, 1.2f);
  return v;
}

// A MoE layer's router and experts, random, bf16 matrices on the GPU; every expert local.
model::MoeWeights RandomMoe(const model::Gemma4Config& config, uint64_t& seed) {
  const int64_t hidden = config.hidden_size;
  const int64_t experts = config.num_experts;
  const int64_t width = config.moe_intermediate_size;
  model::MoeWeights moe;
  moe.router_proj = RandomMatrix(experts, hidden, seed++);
  moe.router_scale = RandomVector(hidden, seed++);
  moe.per_expert_scale = RandomVector(experts, seed++);
  moe.gate_up = Tensor::Empty(DType::kBF16, {experts, 2 * width, hidden}, Gpu());
  FillUniformOnGpu(moe.gate_up, seed++, -0.0346f, 0.0346f);
  moe.down = Tensor::Empty(DType::kBF16, {experts, hidden, width}, Gpu());
  FillUniformOnGpu(moe.down, seed++, -0.0346f, 0.0346f);
  std::vector<int32_t> local(experts);
  std::iota(local.begin(), local.end(), 0);
  moe.local_expert = ToGpu(Tensor::FromInts(local, {experts}));
  moe.pre_feedforward_layernorm_2 = RandomVector(hidden, seed++);
  moe.post_feedforward_layernorm_1 = RandomVector(hidden, seed++);
  moe.post_feedforward_layernorm_2 = RandomVector(hidden, seed++);
  return moe;
}

// Every weight of `config`, random, bf16 matrices on the GPU (no checkpoint: 61 GB would take
// minutes to read and copy).
model::ModelWeights RandomWeights(const model::Gemma4Config& config) {
  model::ModelWeights w;
  w.device = Gpu();
  const int64_t hidden = config.hidden_size;
  uint64_t seed = 100;
  w.embed_tokens = RandomMatrix(config.vocab_size, hidden, seed++);
  w.vocab_rows = {0, config.vocab_size};
  w.final_norm = RandomVector(hidden, seed++);
  for (const model::LayerGeometry& g : config.layers) {
    model::LayerWeights layer;
    layer.geometry = g;
    layer.num_heads_local = config.num_attention_heads;
    layer.num_kv_heads_local = g.num_kv_heads;
    const int64_t q_width = config.num_attention_heads * g.head_dim;
    const int64_t kv_width = g.num_kv_heads * g.head_dim;
    layer.attention.q_proj = RandomMatrix(q_width, hidden, seed++);
    layer.attention.k_proj = RandomMatrix(kv_width, hidden, seed++);
    if (g.has_v_proj) layer.attention.v_proj = RandomMatrix(kv_width, hidden, seed++);
    layer.attention.o_proj = RandomMatrix(hidden, q_width, seed++);
    layer.attention.q_norm = RandomVector(g.head_dim, seed++);
    layer.attention.k_norm = RandomVector(g.head_dim, seed++);
    layer.mlp.gate_up = RandomMatrix(2 * g.mlp_width, hidden, seed++);
    layer.mlp.down = RandomMatrix(hidden, g.mlp_width, seed++);
    for (Tensor* norm : {&layer.input_layernorm, &layer.post_attention_layernorm,
                         &layer.pre_feedforward_layernorm, &layer.post_feedforward_layernorm}) {
      *norm = RandomVector(hidden, seed++);
    }
    layer.layer_scalar = 0.75f;
    if (config.is_moe()) {
      layer.has_moe = true;
      layer.moe = RandomMoe(config, seed);
    }
    w.layers.push_back(std::move(layer));
  }
  return w;
}

// A bf16 paged cache (blocks of 16 tokens) for `sequences` sequences of `context` tokens each.
struct BenchCache {
  static constexpr int64_t kBlockSize = 16;
  BenchCache(const model::Gemma4Model& model, int64_t sequences, int64_t context)
      : blocks_per_sequence(context / kBlockSize),
        blocks({0, model::KvPageLayout::For(model.weights().layers, kBlockSize, DType::kBF16)
                       .blocks_per_page},
               sequences * blocks_per_sequence),
        cache(model.weights().layers, Options(blocks), Gpu()) {}

  static model::KvCacheOptions Options(const model::BlockRuns& blocks) {
    model::KvCacheOptions options;
    options.block_size = kBlockSize;
    options.dtype = DType::kBF16;
    options.num_pages = blocks.PagesPerRun();
    return options;
  }

  const int64_t blocks_per_sequence;
  const model::BlockRuns blocks;
  model::KvCache cache;
};

// Seconds of one step of `num_sequences` sequences, each decoding one token after `context` − 1
// cached, or prefilling `context` tokens when `prefill`; median of 10 after 2 warm-ups.
double StepSeconds(model::Gemma4Model& model, model::KvCache& cache, const model::BlockRuns& blocks,
                   int64_t num_sequences, int64_t context, bool prefill,
                   int64_t blocks_per_sequence) {
  model::ForwardBatch batch;
  for (int64_t s = 0; s < num_sequences; ++s) {
    model::BatchSequence seq;
    seq.num_cached = prefill ? 0 : context - 1;
    seq.num_tokens = prefill ? context : 1;
    for (int g = 0; g < model::kNumKvGroups; ++g) {
      for (int64_t b = 0; b < blocks_per_sequence; ++b) {
        seq.block_tables[g].push_back(
            blocks.Block(0, static_cast<model::LayerKind>(g), s * blocks_per_sequence + b));
      }
    }
    batch.sequences.push_back(seq);
    for (int64_t t = 0; t < seq.num_tokens; ++t) batch.token_ids.push_back(static_cast<int32_t>((s * 7919 + t * 31) % 262144));
  }
  const absl::Status status = batch.Finalize(model.config(), cache.geometry());
  EXPECT_TRUE(status.ok()) << status;
  std::vector<double> seconds;
  for (int i = 0; i < 12; ++i) {
    const auto start = Clock::now();
    ops::ToHost(model.Forward(batch, cache));
    if (i >= 2) seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return Median(seconds);
}

TEST(GpuBench, DISABLED_Bench31BLayerStackDecodeAndPrefill) {
  GS_REQUIRE_GPU();
  const double bandwidth = CopyBandwidth();
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n", bandwidth / 1e9);
  absl::StatusOr<model::Gemma4Config> config = model::RandomCheckpointPreset("31b");
  ASSERT_TRUE(config.ok()) << config.status();
  parallel::LocalCommunicator comm;
  model::ModelWeights weights = RandomWeights(*config);
  const int64_t weight_bytes = weights.TotalBytes();
  model::Gemma4Model model(*config, std::move(weights), comm, model::StepLimits{2048, 64});
  // 32 sequences of 1,024 tokens (64 blocks each): 30 GB of bf16 KV beside the 61 GB of weights.
  // The prefill's 2,048 tokens use the first two sequences' blocks.
  const int64_t context = 1024, sequences = 32;
  BenchCache kv(model, sequences, context);
  // The floor: every weight read once (the embedding only as the LM head) at the copy's rate of
  // reading (half the bytes it moves).
  const double floor_s = static_cast<double>(weight_bytes) / (bandwidth / 2.0);
  std::printf("31B layer stack: %.1f GB of bf16 weights; floor %.2f ms per decode step\n",
              weight_bytes / 1e9, floor_s * 1e3);
  // Op by op, then replayed as decode graphs (the first of the 12 steps records the graph).
  for (const bool graphs : {false, true}) {
    model.UseDecodeGraphs(graphs);
    for (int64_t batch : {int64_t{1}, sequences}) {
      const double s =
          StepSeconds(model, kv.cache, kv.blocks, batch, context, false, kv.blocks_per_sequence);
      std::printf(
          "decode%s, batch %ld, context %ld: %.2f ms per step (%.2f × floor), %.0f "
          "tokens/s\n",
          graphs ? " (graphs)" : " (op by op)", static_cast<long>(batch),
          static_cast<long>(context), s * 1e3, s / floor_s, static_cast<double>(batch) / s);
    }
  }
  model.UseDecodeGraphs(false);
  const double prefill_s =
      StepSeconds(model, kv.cache, kv.blocks, 1, 2048, true, 2 * kv.blocks_per_sequence);
  const double flops = 2.0 * static_cast<double>(weight_bytes / 2) * 2048;  // ≈ 2 · params · tokens
  std::printf("prefill, 2048 tokens: %.1f ms, %.0f TFLOP/s (matmuls only)\n", prefill_s * 1e3,
              flops / prefill_s / 1e12);
}

// Decode steps of a `num_layers` 26B-A4B stack (the preset's pattern: the last layer full) at
// `batches` sequences of 1,024 tokens each: seconds per step, per batch.
std::vector<double> MoeStackStepSeconds(int64_t num_layers, const std::vector<int64_t>& batches) {
  absl::StatusOr<model::Gemma4Config> config = model::RandomCheckpointPreset("26b-a4b", num_layers);
  EXPECT_TRUE(config.ok()) << config.status();
  parallel::LocalCommunicator comm;
  const int64_t most = *std::max_element(batches.begin(), batches.end());
  model::Gemma4Model model(*config, RandomWeights(*config), comm, model::StepLimits{most, most});
  const int64_t context = 1024;
  BenchCache kv(model, most, context);
  std::vector<double> seconds;
  for (int64_t batch : batches) {
    seconds.push_back(StepSeconds(model, kv.cache, kv.blocks, batch, context, false,
                                  kv.blocks_per_sequence));
  }
  return seconds;
}

TEST(GpuBench, DISABLED_Bench26BA4BMoeLayerAt1And128Tokens) {
  GS_REQUIRE_GPU();
  // One sliding MoE layer (attention, the dense MLP, 128 experts top-8): a two-layer stack's step
  // less a one-layer stack's (its full layer, the embedding and the LM head).
  const std::vector<int64_t> batches = {1, 128};
  const std::vector<double> one = MoeStackStepSeconds(1, batches);
  const std::vector<double> two = MoeStackStepSeconds(2, batches);
  for (size_t i = 0; i < batches.size(); ++i) {
    std::printf("26B-A4B MoE layer (sliding, 128 experts, top-8), %ld tokens decoding at 1024: "
                "%.3f ms (2-layer step %.3f ms − 1-layer step %.3f ms)\n",
                static_cast<long>(batches[i]), (two[i] - one[i]) * 1e3, two[i] * 1e3,
                one[i] * 1e3);
  }
}

}  // namespace
}  // namespace gemmaserve::testing
