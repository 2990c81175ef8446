// One token sampled on the CPU from Gemma 4's 262,144 logits (ops::Sample), per sampling mode:
// greedy, plain temperature (every token, in id order), Gemma's defaults (top-k 64, top-p 0.95),
// top-p alone (a sort of the vocabulary), and temperature with the three penalties over 512 prompt
// and 256 output tokens; each with 5 top logprobs where asked. One thread.
// Not a ctest test; run from the repository root with the machine otherwise idle:
//   build/tests/ops/sampler_bench --benchmark_min_time=0.5
#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "ops/sampler.h"

namespace gemmaserve::ops {
namespace {

constexpr int64_t kVocab = 262144;

enum Mode : int64_t { kGreedy, kTemperature, kGemmaDefaults, kTopPAlone, kPenalties };

void BM_Sample(benchmark::State& state) {
  const auto mode = static_cast<Mode>(state.range(0));
  const int32_t num_top = static_cast<int32_t>(state.range(1));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = normal(rng);
  std::uniform_int_distribution<int32_t> any_id(0, kVocab - 1);
  std::vector<int32_t> prompt(512), output(256);
  for (int32_t& id : prompt) id = any_id(rng);
  for (int32_t& id : output) id = any_id(rng);
  SamplingOptions options;
  switch (mode) {
    case kGreedy: options.temperature = 0.0f; break;
    case kTemperature: break;
    case kGemmaDefaults: options.top_k = 64; options.top_p = 0.95f; break;
    case kTopPAlone: options.top_p = 0.95f; break;
    case kPenalties:
      options.repetition_penalty = 1.1f;
      options.presence_penalty = 0.5f;
      options.frequency_penalty = 0.2f;
      options.prompt_tokens = prompt;
      options.output_tokens = output;
      break;
  }
  uint64_t index = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(Sample(logits.data(), kVocab, options, index++, num_top));
  }
  state.SetLabel(mode == kGreedy          ? "greedy"
                 : mode == kTemperature   ? "temperature 1"
                 : mode == kGemmaDefaults ? "top-k 64, top-p 0.95"
                 : mode == kTopPAlone     ? "top-p 0.95 alone"
                                          : "penalties");
}

BENCHMARK(BM_Sample)
    ->ArgsProduct({{kGreedy, kTemperature, kGemmaDefaults, kTopPAlone, kPenalties}, {0, 5}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace gemmaserve::ops

BENCHMARK_MAIN();
