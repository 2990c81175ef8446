// Rank 0's sampler: greedy ties, seeded determinism, filtering, logprobs and penalties; the
// arithmetic it shares with the GPU's sampler (ops/sampling_math.h); the batch sampler on the host.
#include "ops/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "ops/sampling_math.h"
#include "tests/ops/sampling_cases.h"

namespace gemmaserve::ops {
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

TEST(SamplerTest, TemperaturesTooSmallForF32AreGreedyWithFiniteLogprobs) {
  const std::vector<float> logits = {0.5f, 29.0f, -30.0f, 28.5f};
  for (float temperature : {3e-39f, 1e-30f, 1e-6f}) {
    SCOPED_TRACE(temperature);
    SamplingOptions options;
    options.temperature = temperature;
    const SampleResult result = Sample(logits.data(), 4, options, 0, 4);
    EXPECT_EQ(result.token_id, 1);
    EXPECT_TRUE(std::isfinite(result.logprob)) << result.logprob;
    for (const TokenProbability& top : result.top) {
      EXPECT_TRUE(std::isfinite(top.logprob)) << top.token_id << ": " << top.logprob;
    }
  }
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

TEST(SamplerTest, RepetitionPenaltySeesThePromptToo) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.9f, -1.0f};
  const std::vector<int32_t> prompt = {1, 3};
  SamplingOptions options;
  options.temperature = 0.0f;
  options.repetition_penalty = 1.1f;  // 3.0 / 1.1 < 2.9, though token 1 was never generated
  options.prompt_tokens = prompt;
  EXPECT_EQ(Sample(logits.data(), 4, options, 0).token_id, 2);
  // Presence and frequency penalties count generated tokens only.
  options.repetition_penalty = 1.0f;
  options.presence_penalty = 1.0f;
  EXPECT_EQ(Sample(logits.data(), 4, options, 0).token_id, 1);
}

// The probability of each token under `options`, estimated from many seeded draws.
std::vector<double> DrawFrequencies(const std::vector<float>& logits, SamplingOptions options,
                                    int draws = 20000) {
  std::vector<double> frequency(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) {
    options.seed = static_cast<uint64_t>(i);
    frequency[Sample(logits.data(), static_cast<int64_t>(logits.size()), options, 7).token_id] +=
        1.0 / draws;
  }
  return frequency;
}

TEST(SamplerTest, TopPIsTakenOverTheTopKRenormalised) {
  // Probabilities ∝ 4, 2, 1, 1 (and a negligible tail). top_k 3 keeps 4:2:1 = 4/7, 2/7, 1/7;
  // top_p 0.8 of that keeps the first two (6/7 ≥ 0.8), renormalised to 2/3 and 1/3. Applied to the
  // unfiltered distribution it would stop at 6/8 < 0.8 and keep three.
  const std::vector<float> logits = {std::log(4.0f), std::log(2.0f), 0.0f, 0.0f, -30.0f};
  SamplingOptions options;
  options.top_k = 3;
  options.top_p = 0.8f;
  const std::vector<double> frequency = DrawFrequencies(logits, options);
  EXPECT_NEAR(frequency[0], 2.0 / 3.0, 0.02);
  EXPECT_NEAR(frequency[1], 1.0 / 3.0, 0.02);
  EXPECT_EQ(frequency[2] + frequency[3] + frequency[4], 0.0);
}

TEST(SamplerTest, MinPDropsTokensBelowItsShareOfTheBest) {
  const std::vector<float> logits = {std::log(8.0f), std::log(4.0f), std::log(1.0f)};
  SamplingOptions options;
  options.min_p = 0.2f;  // keeps p ≥ 0.2 · p_best: 8 and 4, not 1
  const std::vector<double> frequency = DrawFrequencies(logits, options);
  EXPECT_NEAR(frequency[0], 2.0 / 3.0, 0.02);
  EXPECT_EQ(frequency[2], 0.0);
  // Temperature sampling with nothing else follows the softmax.
  const std::vector<double> plain = DrawFrequencies(logits, SamplingOptions{});
  EXPECT_NEAR(plain[2], 1.0 / 13.0, 0.01);
}

TEST(SamplerTest, TopIdsOrdersByLogitThenId) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 0.5f, 3.0f};
  EXPECT_EQ(TopIds(logits.data(), 6, 4), (std::vector<int32_t>{5, 1, 3, 0}));
  EXPECT_EQ(TopIds(logits.data(), 6, 10).size(), 6u);
}

// A vocabulary of many chunks: few distinct values, so ties fall inside and across chunks and
// most chunks hold nothing above the heap's worst (the ones TopIds skips on a vector max).
TEST(SamplerTest, TopIdsAndArgMaxMatchASortOverAWholeVocabulary) {
  constexpr int64_t kVocab = 262144 + 37;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> level(0, 40);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = static_cast<float>(level(rng)) * 0.25f;
  logits[kVocab - 1] = 11.0f;  // the best in the ragged last chunk, ties at 10 before it
  logits[12345] = NAN;         // after the heap is full: never a candidate
  std::vector<int32_t> order;
  for (int32_t i = 0; i < kVocab; ++i) {
    if (!std::isnan(logits[i])) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  for (int64_t count : {1, 2, 64, 1000}) {
    EXPECT_EQ(TopIds(logits.data(), kVocab, count),
              std::vector<int32_t>(order.begin(), order.begin() + count))
        << "count " << count;
  }
  EXPECT_EQ(ArgMax(logits.data(), kVocab), kVocab - 1);
  logits[kVocab - 1] = 0.0f;
  EXPECT_EQ(ArgMax(logits.data(), kVocab), order[1]);  // the first of the 10s
  EXPECT_TRUE(TopIds(logits.data(), kVocab, 0).empty());
}

TEST(SamplerTest, LogprobsAreLogSoftmaxInDouble) {
  std::vector<float> logits(1000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = 20.0f * std::sin(0.37f * i);
  double sum = 0.0;
  for (float logit : logits) sum += std::exp(static_cast<double>(logit));
  const double expected = logits[17] - std::log(sum);
  EXPECT_NEAR(LogProbability(logits.data(), 1000, 17), expected, 1e-5);
  const std::vector<TokenProbability> top = TopLogprobs(logits.data(), 1000, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].token_id, TopIds(logits.data(), 1000, 1)[0]);
  EXPECT_NEAR(top[0].logprob, logits[top[0].token_id] - std::log(sum), 1e-5);
  EXPECT_GE(top[0].logprob, top[1].logprob);
}

TEST(SamplingMathTest, ExpIsWithinTwoUlpOfTheLibrarysAndZeroAtAndBelowMinus86) {
  // Every 997th float of [-86, -0], by bit pattern (negative floats grow with their bits).
  float worst_ulps = 0.0f;
  float worst_x = 0.0f;
  uint32_t lowest;
  const float minus_86 = -86.0f;
  std::memcpy(&lowest, &minus_86, sizeof(lowest));
  for (uint32_t bits = 0x80000000u; bits < lowest; bits += 997) {
    float x;
    std::memcpy(&x, &bits, sizeof(x));
    const double exact = std::exp(static_cast<double>(x));
    const float got = sampling::Exp(x);
    const double ulp = std::nextafter(static_cast<float>(exact), INFINITY) - static_cast<float>(exact);
    const float ulps = static_cast<float>(std::abs(got - exact) / ulp);
    if (ulps > worst_ulps) {
      worst_ulps = ulps;
      worst_x = x;
    }
  }
  EXPECT_LE(worst_ulps, 2.0f) << "at x = " << worst_x;
  EXPECT_EQ(sampling::Exp(0.0f), 1.0f);
  EXPECT_EQ(sampling::Exp(-86.0f), 0.0f);
  EXPECT_EQ(sampling::Exp(-1000.0f), 0.0f);
  EXPECT_EQ(sampling::Exp(NAN), 0.0f);
  EXPECT_GT(sampling::Exp(-85.99f), 0.0f);
}

// Weights and their cumulative sums in plain id order, for checking the chunked walk.
struct Reference {
  std::vector<double> weight;
  std::vector<double> before;  // cumulative weight of the ids before each
  double mass = 0.0;
};

Reference ReferenceWeights(const std::vector<float>& logits, const sampling::WeightParams& w) {
  Reference ref;
  for (float logit : logits) {
    ref.before.push_back(ref.mass);
    ref.weight.push_back(sampling::Weight(logit, w));
    ref.mass += ref.weight.back();
  }
  return ref;
}

// The host's vectorised chunk sums are the shared ones bit for bit (the GPU sums with the shared
// function): over infinities, NaN, min-p floors and a ragged chunk.
TEST(SamplingMathTest, TheHostsChunkMassIsTheSharedOneBitwise) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 8.0f);
  std::vector<float> logits(3 * sampling::kChunk + 13);
  for (float& x : logits) x = normal(rng);
  logits[7] = -INFINITY;
  logits[300] = NAN;
  logits[301] = 200.0f;  // the top
  for (const float floor : {-INFINITY, 180.0f}) {
    sampling::WeightParams w;
    w.scale = 1.0f / 0.7f;
    w.top = sampling::Mul(200.0f, w.scale);
    w.floor = floor == -INFINITY ? floor : sampling::Mul(floor, w.scale);
    for (int64_t begin = 0; begin < static_cast<int64_t>(logits.size()); begin += sampling::kChunk) {
      const int64_t end = std::min<int64_t>(begin + sampling::kChunk, logits.size());
      EXPECT_EQ(sampling::ChunkMassOnHost(logits.data(), begin, end, w),
                sampling::ChunkMass(logits.data(), begin, end, w))
          << "chunk at " << begin << ", floor " << floor;
    }
  }
}

TEST(SamplingMathTest, IdOrderDrawPicksTheTokenWhoseIntervalHoldsTheDraw) {
  // Four chunks and a ragged fifth; min-p drops some tokens inside chunks.
  constexpr int64_t kVocab = 4 * sampling::kChunk + 77;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = normal(rng);
  for (const float log_min_p : {-INFINITY, std::log(0.01f)}) {
    sampling::WeightParams w;
    w.scale = 1.0f / 0.9f;
    w.top = sampling::Mul(*std::max_element(logits.begin(), logits.end()), w.scale);
    w.floor = sampling::Add(w.top, log_min_p);
    std::vector<double> chunk_mass(sampling::NumChunks(kVocab));
    for (size_t c = 0; c < chunk_mass.size(); ++c) {
      const int64_t begin = static_cast<int64_t>(c) * sampling::kChunk;
      chunk_mass[c] = sampling::ChunkMass(logits.data(), begin,
                                          std::min(begin + sampling::kChunk, kVocab), w);
    }
    const Reference ref = ReferenceWeights(logits, w);
    int checked = 0;
    for (int64_t i = 0; i < kVocab; ++i) {
      if (ref.weight[i] < 1e-9 * ref.mass) continue;  // the midpoint is near its ends
      const double draw = (ref.before[i] + ref.weight[i] / 2) / ref.mass;
      ASSERT_EQ(sampling::DrawInIdOrder(logits.data(), kVocab, chunk_mass.data(), w, draw), i)
          << "log min_p " << log_min_p;
      ++checked;
    }
    EXPECT_GT(checked, 100);
    // Past every interval (rounding): the last token with weight.
    int64_t last = kVocab - 1;
    while (ref.weight[last] == 0.0) --last;
    EXPECT_EQ(sampling::DrawInIdOrder(logits.data(), kVocab, chunk_mass.data(), w, 1.0), last);
  }
}

TEST(SamplingMathTest, CandidateDrawKeepsTheTopPPrefixOfWhatMinPKept) {
  // Weights ∝ 8, 4, 2, 1, 1/64 (most likely first); min-p 0.1 drops the last; top-p 0.75 of the
  // remaining 15 needs 11.25: the first two (12).
  const std::vector<float> logits = {std::log(2.0f), 0.0f, std::log(8.0f), std::log(1.0f / 64),
                                     std::log(4.0f)};
  const std::vector<int32_t> candidates = {2, 4, 0, 1, 3};
  sampling::WeightParams w;
  w.top = logits[2];
  w.floor = sampling::Add(w.top, std::log(0.1f));
  EXPECT_EQ(sampling::DrawFromCandidates(logits.data(), candidates.data(), 5, w, 0.75f, 0.0), 2);
  EXPECT_EQ(sampling::DrawFromCandidates(logits.data(), candidates.data(), 5, w, 0.75f, 0.6), 2);
  EXPECT_EQ(sampling::DrawFromCandidates(logits.data(), candidates.data(), 5, w, 0.75f, 0.7), 4);
  EXPECT_EQ(sampling::DrawFromCandidates(logits.data(), candidates.data(), 5, w, 0.75f, 0.999), 4);
  // Without top-p: 8, 4, 2, 1 of 15.
  EXPECT_EQ(sampling::DrawFromCandidates(logits.data(), candidates.data(), 5, w, 1.0f, 13.5 / 15),
            0);
  EXPECT_EQ(sampling::DrawFromCandidates(logits.data(), candidates.data(), 5, w, 1.0f, 14.5 / 15),
            1);
  EXPECT_EQ(sampling::DrawFromCandidates(logits.data(), candidates.data(), 5, w, 1.0f, 0.999999),
            1);
  // min-p off: the 1/64 token is reachable.
  w.floor = -INFINITY;
  EXPECT_EQ(sampling::DrawFromCandidates(logits.data(), candidates.data(), 5, w, 1.0f, 0.9999),
            3);
}

TEST(SamplerTest, IdOrderDrawsAcrossChunksFollowTheSoftmax) {
  // Six likely tokens spread over chunks, the rest of a 1,000-token vocabulary unlikely.
  std::vector<float> logits(1000, -3.0f);
  const std::vector<int32_t> likely = {3, 255, 256, 511, 700, 999};
  for (size_t i = 0; i < likely.size(); ++i) logits[likely[i]] = 2.0f + 0.3f * i;
  double mass = 0.0;
  for (float x : logits) mass += std::exp(static_cast<double>(x));
  const std::vector<double> frequency = DrawFrequencies(logits, SamplingOptions{}, 40000);
  for (int32_t id : likely) {
    const double p = std::exp(static_cast<double>(logits[id])) / mass;
    EXPECT_NEAR(frequency[id], p, 4 * std::sqrt(p * (1 - p) / 40000)) << "token " << id;
  }
}

TEST(SamplerTest, PenaltyEntriesTouchEachTokenOnceWithItsOutputCount) {
  const std::vector<int32_t> prompt = {5, 2, 5, -3};
  const std::vector<int32_t> output = {7, 2, 7, 7, 40};
  SamplingOptions options;
  options.prompt_tokens = prompt;
  options.output_tokens = output;
  EXPECT_TRUE(PenaltyEntries(options, 10).empty());  // no penalty set
  options.repetition_penalty = 1.2f;
  std::vector<sampling::PenaltyEntry> entries = PenaltyEntries(options, 10);
  ASSERT_EQ(entries.size(), 3u);  // 2, 5, 7; -3 and 40 are outside the vocabulary
  EXPECT_EQ(entries[0].token_id, 2);
  EXPECT_EQ(entries[1].token_id, 5);
  EXPECT_EQ(entries[2].token_id, 7);
  EXPECT_EQ(entries[2].output_count, 0);  // repetition alone counts nothing
  options.repetition_penalty = 1.0f;
  options.frequency_penalty = 0.5f;
  entries = PenaltyEntries(options, 10);  // the output only
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].token_id, 2);
  EXPECT_EQ(entries[0].output_count, 1);
  EXPECT_EQ(entries[1].token_id, 7);
  EXPECT_EQ(entries[1].output_count, 3);
}

TEST(SamplerTest, TheBatchSamplerOnTheHostSamplesEachRequestFromItsRow) {
  testing::SamplingCases cases = testing::MakeSamplingCases(700, 33, 11);
  // Two requests of one row, in another order than the rows.
  std::reverse(cases.requests.begin(), cases.requests.end());
  cases.requests.push_back(cases.requests.front());
  cases.requests.back().options.seed += 1;
  BatchSampler sampler;
  const std::vector<SampleResult> results = sampler.Sample(cases.logits, cases.requests);
  ASSERT_EQ(results.size(), cases.requests.size());
  for (size_t i = 0; i < results.size(); ++i) {
    const SampleRequest& request = cases.requests[i];
    const SampleResult one = Sample(cases.logits.data<float>() + request.row * 700, 700,
                                    request.options, request.token_index, request.num_top);
    EXPECT_EQ(results[i].token_id, one.token_id) << "request " << i;
    EXPECT_EQ(results[i].logprob, one.logprob) << "request " << i;
    EXPECT_EQ(results[i].top.size(), static_cast<size_t>(request.num_top)) << "request " << i;
  }
  EXPECT_EQ(sampler.rows_on_device(), 0);
}

}  // namespace
}  // namespace gemmaserve::ops
