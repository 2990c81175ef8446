// CoordinatorMetrics and ExpertLoadMetrics: after a known sequence of calls, the Prometheus text
// holds the right values.
#include "coordinator/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve::coordinator {
namespace {

using ::google::protobuf::RepeatedPtrField;
using ::testing::HasSubstr;

// The value of the series written exactly as `series` (name{labels}); NaN when absent.
double Value(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (absl::StartsWith(line, series + " ")) return std::stod(line.substr(series.size() + 1));
  }
  return std::nan("");
}

// Σ of every series of family `name` (name{... or name ...), excluding histogram suffixes.
double Sum(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  double sum = 0;
  for (std::string line; std::getline(lines, line);) {
    if (absl::StartsWith(line, name + "{") || absl::StartsWith(line, name + " ")) {
      sum += std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return sum;
}

MoeGeometry Moe(int num_layers, int num_experts, int ep_size, int window_steps = 100,
                std::vector<int> expert_to_rank = {}) {
  MoeGeometry moe;
  moe.num_layers = num_layers;
  moe.num_experts = num_experts;
  moe.ep_size = ep_size;
  moe.window_steps = window_steps;
  moe.expert_to_rank = std::move(expert_to_rank);
  return moe;
}

std::unique_ptr<CoordinatorMetrics> Make(MoeGeometry moe = {}) {
  absl::StatusOr<std::unique_ptr<CoordinatorMetrics>> metrics =
      CoordinatorMetrics::Create({std::move(moe)});
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  return std::move(*metrics);
}

RepeatedPtrField<internal::v1::ExpertCounts> Counts(
    const std::vector<std::vector<int64_t>>& per_layer) {
  RepeatedPtrField<internal::v1::ExpertCounts> counts;
  for (size_t l = 0; l < per_layer.size(); ++l) {
    internal::v1::ExpertCounts* entry = counts.Add();
    entry->set_layer(static_cast<int32_t>(l));
    entry->mutable_tokens()->Add(per_layer[l].begin(), per_layer[l].end());
  }
  return counts;
}

const RepeatedPtrField<internal::v1::ExpertCounts> kNoCounts;

TEST(CoordinatorMetricsTest, RequestsTotalCountsEveryFinishedRequestByReason) {
  std::unique_ptr<CoordinatorMetrics> metrics = Make();
  const FinishReason reasons[] = {FinishReason::kStop,  FinishReason::kStop,
                                  FinishReason::kLength, FinishReason::kAbort,
                                  FinishReason::kError, FinishReason::kStop,
                                  FinishReason::kLength};
  double total_s = 0;
  for (FinishReason reason : reasons) {
    Usage usage;
    usage.prompt_tokens = 10;
    usage.total_ms = 300;
    total_s += 0.3;
    metrics->RecordRequestFinished(usage, reason);
  }
  const std::string text = metrics->Serialize();
  EXPECT_EQ(Sum(text, "gemmaserve_requests_total"), 7);
  EXPECT_EQ(Value(text, R"(gemmaserve_requests_total{finish_reason="stop"})"), 3);
  EXPECT_EQ(Value(text, R"(gemmaserve_requests_total{finish_reason="length"})"), 2);
  EXPECT_EQ(Value(text, R"(gemmaserve_requests_total{finish_reason="abort"})"), 1);
  EXPECT_EQ(Value(text, R"(gemmaserve_requests_total{finish_reason="error"})"), 1);
  EXPECT_EQ(Value(text, "gemmaserve_e2e_request_latency_seconds_count"), 7);
  EXPECT_NEAR(Value(text, "gemmaserve_e2e_request_latency_seconds_sum"), total_s, 1e-9);
  EXPECT_EQ(Value(text, R"(gemmaserve_e2e_request_latency_seconds_bucket{le="0.25"})"), 0);
  EXPECT_EQ(Value(text, R"(gemmaserve_e2e_request_latency_seconds_bucket{le="0.5"})"), 7);
  EXPECT_EQ(Value(text, "gemmaserve_prompt_tokens_total"), 70);
}

TEST(CoordinatorMetricsTest, TokensFeedCountersAndLatencyHistograms) {
  std::unique_ptr<CoordinatorMetrics> metrics = Make();
  for (int i = 0; i < 3; ++i) {
    metrics->RecordFirstToken(absl::Milliseconds(3), absl::Microseconds(1500 + 500 * i));
  }
  metrics->RecordNextTokens(4, absl::Milliseconds(40));  // four gaps of 10 ms
  metrics->RecordNextTokens(1, absl::Milliseconds(200));
  metrics->RecordNextTokens(0, absl::Milliseconds(5));  // nothing
  const std::string text = metrics->Serialize();
  EXPECT_EQ(Value(text, R"(gemmaserve_request_queue_time_seconds_bucket{le="0.001"})"), 0);
  EXPECT_EQ(Value(text, R"(gemmaserve_request_queue_time_seconds_bucket{le="0.0025"})"), 3);
  EXPECT_NEAR(Value(text, "gemmaserve_request_queue_time_seconds_sum"), 0.006, 1e-9);
  EXPECT_EQ(Value(text, "gemmaserve_generation_tokens_total"), 3 + 4 + 1);
  EXPECT_EQ(Value(text, "gemmaserve_time_to_first_token_seconds_count"), 3);
  EXPECT_EQ(Value(text, R"(gemmaserve_time_to_first_token_seconds_bucket{le="0.0025"})"), 0);
  EXPECT_EQ(Value(text, R"(gemmaserve_time_to_first_token_seconds_bucket{le="0.005"})"), 3);
  EXPECT_EQ(Value(text, "gemmaserve_inter_token_latency_seconds_count"), 5);
  EXPECT_NEAR(Value(text, "gemmaserve_inter_token_latency_seconds_sum"), 0.24, 1e-9);
  EXPECT_EQ(Value(text, R"(gemmaserve_inter_token_latency_seconds_bucket{le="0.01"})"), 4);
  EXPECT_EQ(Value(text, R"(gemmaserve_inter_token_latency_seconds_bucket{le="0.25"})"), 5);
  EXPECT_EQ(Value(text, R"(gemmaserve_inter_token_latency_seconds_bucket{le="100"})"), 5);
  EXPECT_EQ(Value(text, R"(gemmaserve_inter_token_latency_seconds_bucket{le="+Inf"})"), 5);
}

TEST(CoordinatorMetricsTest, StepsAreHistogrammedByKindAndBatchSize) {
  std::unique_ptr<CoordinatorMetrics> metrics = Make();
  ASSERT_TRUE(metrics->RecordStep(StepKind::kPrefill, absl::Milliseconds(80), 3, kNoCounts).ok());
  ASSERT_TRUE(metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(20), 64, kNoCounts).ok());
  ASSERT_TRUE(metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(20), 65, kNoCounts).ok());
  ASSERT_TRUE(metrics->RecordStep(StepKind::kMixed, absl::Seconds(2), 512, kNoCounts).ok());
  const std::string text = metrics->Serialize();
  EXPECT_EQ(Value(text, R"(gemmaserve_step_duration_seconds_count{kind="prefill"})"), 1);
  EXPECT_EQ(Value(text, R"(gemmaserve_step_duration_seconds_count{kind="decode"})"), 2);
  EXPECT_EQ(Value(text, R"(gemmaserve_step_duration_seconds_count{kind="mixed"})"), 1);
  EXPECT_NEAR(Value(text, R"(gemmaserve_step_duration_seconds_sum{kind="decode"})"), 0.04, 1e-9);
  EXPECT_EQ(Value(text, R"(gemmaserve_step_duration_seconds_bucket{kind="mixed",le="1"})"), 0);
  EXPECT_EQ(Value(text, R"(gemmaserve_step_duration_seconds_bucket{kind="mixed",le="2.5"})"), 1);
  EXPECT_EQ(Value(text, "gemmaserve_batch_size_count"), 4);
  EXPECT_EQ(Value(text, R"(gemmaserve_batch_size_bucket{le="2"})"), 0);
  EXPECT_EQ(Value(text, R"(gemmaserve_batch_size_bucket{le="4"})"), 1);
  EXPECT_EQ(Value(text, R"(gemmaserve_batch_size_bucket{le="64"})"), 2);
  EXPECT_EQ(Value(text, R"(gemmaserve_batch_size_bucket{le="128"})"), 3);
  EXPECT_EQ(Value(text, R"(gemmaserve_batch_size_bucket{le="512"})"), 4);
}

TEST(CoordinatorMetricsTest, StepKindOfClassifiesBySequenceMix) {
  EXPECT_EQ(StepKindOf(3, 0), StepKind::kPrefill);
  EXPECT_EQ(StepKindOf(0, 5), StepKind::kDecode);
  EXPECT_EQ(StepKindOf(1, 5), StepKind::kMixed);
  EXPECT_STREQ(StepKindName(StepKind::kMixed), "mixed");
}

TEST(CoordinatorMetricsTest, LoadSetsGaugesAliasesAndCounterIncreases) {
  std::unique_ptr<CoordinatorMetrics> metrics = Make();
  LoadInfo load;
  load.running_requests = 5;
  load.waiting_requests = 3;
  load.total_pages = 200;
  load.used_sliding_pages = 50;
  load.used_full_pages = 100;
  load.used_sliding_blocks = 50;
  load.used_full_blocks = 1000;  // ten per page
  load.prefix_cache_queried_tokens = 100;
  load.prefix_cache_hit_tokens = 40;
  load.preemptions = 2;
  metrics->SetLoad(load);
  load.prefix_cache_queried_tokens = 130;
  load.prefix_cache_hit_tokens = 40;
  load.preemptions = 3;
  metrics->SetLoad(load);
  std::string text = metrics->Serialize();
  EXPECT_EQ(Value(text, "gemmaserve_requests_running"), 5);
  EXPECT_EQ(Value(text, "gemmaserve_requests_waiting"), 3);
  EXPECT_EQ(Value(text, "gemmaserve:num_requests_running"), 5);
  EXPECT_EQ(Value(text, "gemmaserve:num_requests_waiting"), 3);
  EXPECT_EQ(Value(text, R"(gemmaserve_kv_cache_usage_ratio{group="sliding"})"), 0.25);
  EXPECT_EQ(Value(text, R"(gemmaserve_kv_cache_usage_ratio{group="full"})"), 0.5);
  EXPECT_EQ(Value(text, "gemmaserve:kv_cache_usage_perc"), 0.75);
  EXPECT_EQ(Value(text, "gemmaserve_prefix_cache_queried_tokens_total"), 130);
  EXPECT_EQ(Value(text, "gemmaserve_prefix_cache_hit_tokens_total"), 40);
  EXPECT_EQ(Value(text, "gemmaserve_preemptions_total"), 3);

  // A restarted scheduler counts from zero again: a new baseline, never a negative increase.
  load.prefix_cache_queried_tokens = 10;
  load.preemptions = 1;
  metrics->SetLoad(load);
  text = metrics->Serialize();
  EXPECT_EQ(Value(text, "gemmaserve_prefix_cache_queried_tokens_total"), 130);
  EXPECT_EQ(Value(text, "gemmaserve_preemptions_total"), 3);
  load.prefix_cache_queried_tokens = 15;
  metrics->SetLoad(load);
  EXPECT_EQ(Value(metrics->Serialize(), "gemmaserve_prefix_cache_queried_tokens_total"), 135);
}

TEST(CoordinatorMetricsTest, DenseModelHasNoMoeSeriesAndRejectsExpertCounts) {
  std::unique_ptr<CoordinatorMetrics> metrics = Make();
  EXPECT_THAT(metrics->Serialize(), ::testing::Not(HasSubstr("gemmaserve_moe_")));
  const absl::Status status =
      metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(1), 1, Counts({{1, 2}}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

TEST(CoordinatorMetricsTest, CreateRejectsInconsistentMoeGeometry) {
  EXPECT_FALSE(CoordinatorMetrics::Create({Moe(2, 6, 4)}).ok());  // 4 ∤ 6
  EXPECT_FALSE(CoordinatorMetrics::Create({Moe(2, 4, 2, 100, {0, 1, 2, 0})}).ok());
  EXPECT_FALSE(CoordinatorMetrics::Create({Moe(2, 4, 2, 100, {0, 1})}).ok());
  EXPECT_FALSE(CoordinatorMetrics::Create({Moe(2, 4, 2, 0)}).ok());
  EXPECT_TRUE(CoordinatorMetrics::Create({Moe(2, 6, 4, 100, {0, 1, 2, 3, 0, 1})}).ok());
}


// Every token picks top_k distinct experts per layer, uniformly at random (fixed seed).
std::vector<std::vector<int64_t>> RandomRouting(int num_layers, int num_experts, int num_tokens,
                                                int top_k, std::mt19937& rng) {
  std::vector<std::vector<int64_t>> counts(num_layers, std::vector<int64_t>(num_experts, 0));
  std::vector<int> experts(num_experts);
  for (int l = 0; l < num_layers; ++l) {
    for (int t = 0; t < num_tokens; ++t) {
      for (int e = 0; e < num_experts; ++e) experts[e] = e;
      std::shuffle(experts.begin(), experts.end(), rng);
      for (int k = 0; k < top_k; ++k) ++counts[l][experts[k]];
    }
  }
  return counts;
}

TEST(ExpertLoadMetricsTest, ExpertTokensSumToTokensTimesTopKTimesLayers) {
  constexpr int kLayers = 3, kExperts = 16, kRanks = 4, kTopK = 4;
  std::unique_ptr<CoordinatorMetrics> metrics =
      Make(Moe(kLayers, kExperts, kRanks));
  std::mt19937 rng(7);
  int64_t num_tokens = 0;
  int64_t expert0_layer2 = 0;
  for (int step = 0; step < 5; ++step) {
    const int tokens = 10 + step * 7;
    num_tokens += tokens;
    const std::vector<std::vector<int64_t>> routing =
        RandomRouting(kLayers, kExperts, tokens, kTopK, rng);
    expert0_layer2 += routing[2][0];
    ASSERT_TRUE(metrics->RecordStep(StepKind::kMixed, absl::Milliseconds(5), 4, Counts(routing))
                    .ok());
  }
  const std::string text = metrics->Serialize();
  EXPECT_EQ(Sum(text, "gemmaserve_moe_expert_tokens_total"), num_tokens * kTopK * kLayers);
  EXPECT_EQ(Sum(text, "gemmaserve_moe_rank_tokens_total"), num_tokens * kTopK * kLayers);
  EXPECT_EQ(Value(text, R"(gemmaserve_moe_expert_tokens_total{expert="0",layer="2"})"),
            expert0_layer2);
  for (const std::string layer : {"0", "1", "2", "all"}) {
    const double balancedness =
        Value(text, R"(gemmaserve_moe_balancedness{layer=")" + layer + R"("})");
    EXPECT_GT(balancedness, 0) << layer;
    EXPECT_LE(balancedness, 1) << layer;
  }
}

TEST(ExpertLoadMetricsTest, BalancednessIsOneForEvenLoadAndMeanOverMaxForSkewed) {
  // Contiguous placement: rank r holds experts {2r, 2r+1}.
  std::unique_ptr<CoordinatorMetrics> metrics =
      Make(Moe(2, 8, 4));
  std::string text = metrics->Serialize();
  EXPECT_EQ(Value(text, R"(gemmaserve_moe_balancedness{layer="all"})"), 1);  // no tokens yet

  // Layer 0 per rank: 4, 2, 1, 1 → mean 2, max 4. Layer 1: 2 per rank.
  ASSERT_TRUE(metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(1), 8,
                                  Counts({{3, 1, 0, 2, 1, 0, 0, 1}, {1, 1, 2, 0, 0, 2, 1, 1}}))
                  .ok());
  text = metrics->Serialize();
  EXPECT_DOUBLE_EQ(Value(text, R"(gemmaserve_moe_balancedness{layer="0"})"), 0.5);
  EXPECT_DOUBLE_EQ(Value(text, R"(gemmaserve_moe_balancedness{layer="1"})"), 1.0);
  // Σ mean ÷ Σ max = (2 + 2) / (4 + 2), the harmonic mean of 0.5 and 1.
  EXPECT_NEAR(Value(text, R"(gemmaserve_moe_balancedness{layer="all"})"), 4.0 / 6.0, 1e-6);
  EXPECT_EQ(Value(text, R"(gemmaserve_moe_rank_tokens_total{layer="0",rank="0"})"), 4);
  EXPECT_EQ(Value(text, R"(gemmaserve_moe_rank_tokens_total{layer="0",rank="1"})"), 2);
  EXPECT_EQ(Value(text, R"(gemmaserve_moe_rank_tokens_total{layer="0",rank="3"})"), 1);
}

TEST(ExpertLoadMetricsTest, BalancednessCoversOnlyTheWindow) {
  std::unique_ptr<CoordinatorMetrics> metrics =
      Make(Moe(1, 2, 2, 2));
  const auto skewed = Counts({{6, 0}});
  const auto even = Counts({{3, 3}});
  auto balancedness = [&] {
    return Value(metrics->Serialize(), R"(gemmaserve_moe_balancedness{layer="0"})");
  };
  ASSERT_TRUE(metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(1), 1, skewed).ok());
  EXPECT_DOUBLE_EQ(balancedness(), 0.5);  // ranks 6, 0
  ASSERT_TRUE(metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(1), 1, even).ok());
  EXPECT_DOUBLE_EQ(balancedness(), 6.0 / 9.0);  // ranks 9, 3
  // A step without counts (nothing routed) leaves the window alone.
  ASSERT_TRUE(metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(1), 1, kNoCounts).ok());
  EXPECT_DOUBLE_EQ(balancedness(), 6.0 / 9.0);
  ASSERT_TRUE(metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(1), 1, even).ok());
  EXPECT_DOUBLE_EQ(balancedness(), 1.0);  // the skewed step left the window
  // The counters keep everything.
  EXPECT_EQ(Value(metrics->Serialize(), R"(gemmaserve_moe_rank_tokens_total{layer="0",rank="0"})"),
            12);
}

TEST(ExpertLoadMetricsTest, RankTokensFollowThePlacementMap) {
  // Experts 0 and 3 on rank 1, experts 1 and 2 on rank 0.
  std::unique_ptr<CoordinatorMetrics> metrics = Make(Moe(1, 4, 2, 100, {1, 0, 0, 1}));
  ASSERT_TRUE(
      metrics->RecordStep(StepKind::kPrefill, absl::Milliseconds(1), 1, Counts({{5, 1, 2, 7}}))
          .ok());
  const std::string text = metrics->Serialize();
  EXPECT_EQ(Value(text, R"(gemmaserve_moe_rank_tokens_total{layer="0",rank="0"})"), 3);
  EXPECT_EQ(Value(text, R"(gemmaserve_moe_rank_tokens_total{layer="0",rank="1"})"), 12);
  EXPECT_DOUBLE_EQ(Value(text, R"(gemmaserve_moe_balancedness{layer="0"})"), 7.5 / 12);
}

TEST(ExpertLoadMetricsTest, MalformedCountsAreRejectedAndRecordNothing) {
  std::unique_ptr<CoordinatorMetrics> metrics =
      Make(Moe(2, 4, 2));
  RepeatedPtrField<internal::v1::ExpertCounts> bad_layer = Counts({{1, 1, 1, 1}});
  bad_layer.Add()->set_layer(2);
  bad_layer.Mutable(1)->mutable_tokens()->Resize(4, 1);
  const RepeatedPtrField<internal::v1::ExpertCounts> bad_size = Counts({{1, 1, 1}});
  const RepeatedPtrField<internal::v1::ExpertCounts> negative = Counts({{1, -1, 1, 1}});
  const RepeatedPtrField<internal::v1::ExpertCounts>* const all_bad[] = {&bad_layer, &bad_size,
                                                                         &negative};
  for (const RepeatedPtrField<internal::v1::ExpertCounts>* counts : all_bad) {
    const absl::Status status =
        metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(1), 1, *counts);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("expert counts: layer"));
  }
  const std::string text = metrics->Serialize();
  EXPECT_EQ(Sum(text, "gemmaserve_moe_expert_tokens_total"), 0);
  EXPECT_EQ(Value(text, "gemmaserve_step_duration_seconds_count{kind=\"decode\"}"), 3);
}

TEST(ExpertLoadMetricsTest, ConcurrentStepsLoseNoTokens) {
  std::unique_ptr<CoordinatorMetrics> metrics =
      Make(Moe(4, 8, 2, 3));
  const auto counts = Counts(std::vector<std::vector<int64_t>>(4, std::vector<int64_t>(8, 1)));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 250; ++i) {
        ASSERT_TRUE(
            metrics->RecordStep(StepKind::kDecode, absl::Milliseconds(1), 1, counts).ok());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const std::string text = metrics->Serialize();
  EXPECT_EQ(Sum(text, "gemmaserve_moe_expert_tokens_total"), 1000 * 4 * 8);
  EXPECT_EQ(Value(text, R"(gemmaserve_moe_balancedness{layer="all"})"), 1);
}

}  // namespace
}  // namespace gemmaserve::coordinator
