// Cost of CoordinatorMetrics::RecordStep with the real Gemma 4 26B-A4B geometry: 30 MoE layers ×
// 128 experts, top-8 routing, experts spread over 8 expert-parallel ranks, and the per-token
// request calls. Not a ctest test; run from the repository root:
//   build/tests/coordinator/metrics_bench
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "coordinator/metrics.h"

namespace gemmaserve::coordinator {
namespace {

constexpr int kLayers = 30;
constexpr int kExperts = 128;
constexpr int kRanks = 8;
constexpr int kTopK = 8;

std::unique_ptr<CoordinatorMetrics> Make26BA4B() {
  CoordinatorMetricsOptions options;
  options.moe.num_layers = kLayers;
  options.moe.num_experts = kExperts;
  options.moe.ep_size = kRanks;
  absl::StatusOr<std::unique_ptr<CoordinatorMetrics>> metrics = CoordinatorMetrics::Create(options);
  if (!metrics.ok()) std::abort();
  return std::move(*metrics);
}

// One step's StepResult.expert_counts for `num_tokens` tokens routed top-8 at random.
google::protobuf::RepeatedPtrField<internal::v1::ExpertCounts> RandomCounts(int num_tokens) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> expert(0, kExperts - 1);
  google::protobuf::RepeatedPtrField<internal::v1::ExpertCounts> counts;
  for (int l = 0; l < kLayers; ++l) {
    internal::v1::ExpertCounts* entry = counts.Add();
    entry->set_layer(l);
    entry->mutable_tokens()->Resize(kExperts, 0);
    for (int i = 0; i < num_tokens * kTopK; ++i) ++*entry->mutable_tokens()->Mutable(expert(rng));
  }
  return counts;
}

// Argument: tokens in the step. 1 leaves most experts at zero; 256 touches nearly all of them.
void BM_RecordStep(benchmark::State& state) {
  std::unique_ptr<CoordinatorMetrics> metrics = Make26BA4B();
  const auto counts = RandomCounts(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    absl::Status status = metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(20),
                                              state.range(0), counts);
    benchmark::DoNotOptimize(status);
  }
}
BENCHMARK(BM_RecordStep)->Arg(1)->Arg(16)->Arg(256)->Arg(4096);

// What the engine loop spends per sequence per decode step.
void BM_RecordNextTokens(benchmark::State& state) {
  std::unique_ptr<CoordinatorMetrics> metrics = Make26BA4B();
  for (auto _ : state) metrics->RecordNextTokens(1, absl::Milliseconds(20));
}
BENCHMARK(BM_RecordNextTokens);

void BM_Serialize(benchmark::State& state) {
  std::unique_ptr<CoordinatorMetrics> metrics = Make26BA4B();
  const auto counts = RandomCounts(256);
  (void)metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(20), 256, counts);
  for (auto _ : state) benchmark::DoNotOptimize(metrics->Serialize());
}
BENCHMARK(BM_Serialize)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace gemmaserve::coordinator

BENCHMARK_MAIN();
