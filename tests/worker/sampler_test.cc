// Rank 0's sampler: greedy ties, seeded determinism, filtering, logprobs and penalties.
#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace gemmaserve::worker {
namespace {

TEST(SamplerTest, GreedyTakesTheHighestLogitAndTiesGoToTheLowestId) {
  const std::vector<float> logits = {0.5f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(ArgMax(logits.data(), 4), 1);
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  const SampleResult result = Sample(logits.data(), 4, greedy, 0, 2);
  EXPECT_EQ(result.token_id, 1);
  ASSERT_EQ(result.top.size(), 2u);
  EXPECT_EQ(result.top[1].token_id, 2);
  EXPECT_NEAR(result.logprob, LogProbability(logits.data(), 4, 1), 1e-6);
}

TEST(SamplerTest, TheSameSeedAndIndexGiveTheSameToken) {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  SamplingOptions options;
  options.seed = 42;
  std::vector<int32_t> first;
  std::vector<int32_t> again;
  for (uint64_t index = 0; index < 20; ++index) {
    first.push_back(Sample(logits.data(), 50, options, index).token_id);
    again.push_back(Sample(logits.data(), 50, options, index).token_id);
  }
  EXPECT_EQ(first, again);
  // Different indices draw differently: 20 draws from a spread distribution are not all equal.
  EXPECT_NE(std::count(first.begin(), first.end(), first[0]), 20);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  const std::vector<float> logits = {0.1f, 0.3f, 3.0f, 0.2f};
  SamplingOptions options;
  options.top_k = 1;
  for (uint64_t index = 0; index < 10; ++index) {
    EXPECT_EQ(Sample(logits.data(), 4, options, index).token_id, 2);
  }
}

TEST(SamplerTest, PenaltiesLowerTheLogitsOfGeneratedTokens) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.9f, -1.0f};
  const std::vector<int32_t> generated = {1, 1};
  SamplingOptions options;
  options.temperature = 0.0f;
  options.output_tokens = generated;
  EXPECT_EQ(Sample(logits.data(), 4, options, 0).token_id, 1);  // no penalty set
  options.presence_penalty = 0.2f;                                // 3.0 − 0.2 < 2.9
  EXPECT_EQ(Sample(logits.data(), 4, options, 0).token_id, 2);
  options.presence_penalty = 0.0f;
  options.frequency_penalty = 0.06f;                              // 3.0 − 2·0.06 < 2.9
  EXPECT_EQ(Sample(logits.data(), 4, options, 0).token_id, 2);
  options.frequency_penalty = 0.0f;
  options.repetition_penalty = 1.1f;                              // 3.0 / 1.1 < 2.9
  EXPECT_EQ(Sample(logits.data(), 4, options, 0).token_id, 2);
}

}  // namespace
}  // namespace gemmaserve::worker
