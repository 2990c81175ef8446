#include "ops/routing.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::ExpectAllNear;
using test_util::RandomTensor;

struct Routed {
  std::vector<int32_t> ids;     // [rows·k]
  std::vector<double> weights;  // [rows·k]
};

// Softmax over all experts in double, stable sort by (probability desc, id asc), keep k,
// renormalise them to sum 1, multiply by per_expert_scale.
Routed ReferenceRouting(const Tensor& logits, const Tensor& scale, int64_t k) {
  const int64_t rows = logits.dim(0), num_experts = logits.dim(1);
  Routed routed;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits.data<float>() + r * num_experts;
    const double max_logit = *std::max_element(row, row + num_experts);
    std::vector<double> probs(num_experts);
    for (int64_t e = 0; e < num_experts; ++e) probs[e] = std::exp(row[e] - max_logit);
    const double sum = std::accumulate(probs.begin(), probs.end(), 0.0);
    for (double& p : probs) p /= sum;
    std::vector<int32_t> order(num_experts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return probs[a] > probs[b]; });
    double top_sum = 0.0;
    for (int64_t i = 0; i < k; ++i) top_sum += probs[order[i]];
    for (int64_t i = 0; i < k; ++i) {
      routed.ids.push_back(order[i]);
      routed.weights.push_back(probs[order[i]] / top_sum * scale.data<float>()[order[i]]);
    }
  }
  return routed;
}

std::vector<int32_t> Ids(const Tensor& expert_ids) {
  return std::vector<int32_t>(expert_ids.data<int32_t>(),
                              expert_ids.data<int32_t>() + expert_ids.numel());
}

TEST(TopKRoutingTest, RenormalisesSoftmaxTopKThenMultipliesByPerExpertScale) {
  // logits ln[4, 2, 1, 1]: softmax [4, 2, 1, 1]/8; top-2 renormalised [2/3, 1/3]; times the
  // scales [2, 3] -> [4/3, 1]. (Sigmoid gating would give [0.545, 0.455] before scaling, and
  // renormalising after the scale would give [0.571, 0.429].)
  Tensor logits = Tensor::FromVector({std::log(4.0f), std::log(2.0f), 0.0f, 0.0f}, {1, 4});
  Tensor scale = Tensor::FromVector({2.0f, 3.0f, 1.0f, 1.0f}, {4});
  Tensor ids = Tensor::Empty(DType::kI32, {1, 2});
  Tensor weights = Tensor::Empty(DType::kF32, {1, 2});
  TopKRouting(logits, scale, 2, ids, weights);
  EXPECT_EQ(Ids(ids), (std::vector<int32_t>{0, 1}));
  ExpectAllNear(weights, {4.0 / 3.0, 1.0}, 1e-6);
}

TEST(TopKRoutingTest, TiesGoToTheLowerExpertId) {
  // Experts 1, 2 and 3 tie for second place; with k = 2 the lowest id, 1, wins.
  Tensor logits = Tensor::FromVector({2.0f, 1.0f, 1.0f, 1.0f, -1.0f}, {1, 5});
  Tensor scale = Tensor::FromVector({1, 1, 1, 1, 1}, {5});
  Tensor ids = Tensor::Empty(DType::kI32, {1, 2});
  Tensor weights = Tensor::Empty(DType::kF32, {1, 2});
  TopKRouting(logits, scale, 2, ids, weights);
  EXPECT_EQ(Ids(ids), (std::vector<int32_t>{0, 1}));
  // All-equal logits with k = 3 pick 0, 1, 2 in that order, each 1/3.
  Tensor flat = Tensor::Zeros(DType::kF32, {1, 5});
  Tensor ids3 = Tensor::Empty(DType::kI32, {1, 3});
  Tensor weights3 = Tensor::Empty(DType::kF32, {1, 3});
  TopKRouting(flat, scale, 3, ids3, weights3);
  EXPECT_EQ(Ids(ids3), (std::vector<int32_t>{0, 1, 2}));
  ExpectAllNear(weights3, {1.0 / 3, 1.0 / 3, 1.0 / 3}, 1e-6);
}

TEST(TopKRoutingTest, OrdersByProbabilityNotByScaledWeight) {
  // As HF does (topk on the probabilities, then scale): a small per_expert_scale on the most
  // probable expert leaves it first even though its final weight is the smaller one.
  Tensor logits = Tensor::FromVector({1.0f, 0.0f, -5.0f}, {1, 3});
  Tensor scale = Tensor::FromVector({0.1f, 5.0f, 1.0f}, {3});
  Tensor ids = Tensor::Empty(DType::kI32, {1, 2});
  Tensor weights = Tensor::Empty(DType::kF32, {1, 2});
  TopKRouting(logits, scale, 2, ids, weights);
  EXPECT_EQ(Ids(ids), (std::vector<int32_t>{0, 1}));
  const double p0 = std::exp(1.0) / (std::exp(1.0) + 1.0);
  ExpectAllNear(weights, {p0 * 0.1, (1.0 - p0) * 5.0}, 1e-6);
}

TEST(TopKRoutingTest, MatchesReferenceOn128ExpertsTop8) {
  // The 26B-A4B geometry: 128 experts, top 8, over several tokens.
  std::mt19937 rng(50);
  const int64_t rows = 6, num_experts = 128, k = 8;
  Tensor logits = RandomTensor({rows, num_experts}, rng, -6.0f, 6.0f);
  Tensor scale = RandomTensor({num_experts}, rng, 0.2f, 2.0f);
  Tensor ids = Tensor::Empty(DType::kI32, {rows, k});
  Tensor weights = Tensor::Empty(DType::kF32, {rows, k});
  TopKRouting(logits, scale, k, ids, weights);
  const Routed expected = ReferenceRouting(logits, scale, k);
  EXPECT_EQ(Ids(ids), expected.ids);
  ExpectAllNear(weights, expected.weights, 1e-6);
}

TEST(TopKRoutingTest, KEqualToExpertCountKeepsAllWithUnitScaleSummingToOne) {
  std::mt19937 rng(51);
  Tensor logits = RandomTensor({3, 8}, rng, -3.0f, 3.0f);
  Tensor scale = Tensor::FromVector(std::vector<float>(8, 1.0f), {8});
  Tensor ids = Tensor::Empty(DType::kI32, {3, 8});
  Tensor weights = Tensor::Empty(DType::kF32, {3, 8});
  TopKRouting(logits, scale, 8, ids, weights);
  const Routed expected = ReferenceRouting(logits, scale, 8);
  EXPECT_EQ(Ids(ids), expected.ids);
  for (int64_t r = 0; r < 3; ++r) {
    const float* w = weights.data<float>() + r * 8;
    EXPECT_NEAR(std::accumulate(w, w + 8, 0.0), 1.0, 1e-6);
  }
}

using TopKRoutingDeathTest = test_util::ThreadsafeDeathTest;

TEST_F(TopKRoutingDeathTest, KAboveExpertCountDies) {
  Tensor logits = Tensor::Zeros(DType::kF32, {1, 4});
  Tensor scale = Tensor::Zeros(DType::kF32, {4});
  Tensor ids = Tensor::Empty(DType::kI32, {1, 5});
  Tensor weights = Tensor::Empty(DType::kF32, {1, 5});
  EXPECT_DEATH(TopKRouting(logits, scale, 5, ids, weights), "k 5 of 4 experts");
}

TEST_F(TopKRoutingDeathTest, FloatExpertIdsDie) {
  Tensor logits = Tensor::Zeros(DType::kF32, {1, 4});
  Tensor scale = Tensor::Zeros(DType::kF32, {4});
  Tensor ids = Tensor::Empty(DType::kF32, {1, 2});
  Tensor weights = Tensor::Empty(DType::kF32, {1, 2});
  EXPECT_DEATH(TopKRouting(logits, scale, 2, ids, weights), "expert_ids|CHECK failed");
}

}  // namespace
}  // namespace gemmaserve::ops
