// The MoE block's steps (ops/moe.h) against plain loops: dispatch groups every (token, choice)
// routed to a local expert by expert, the grouped matmul runs each expert on its rows, the combine
// adds each token's weighted expert outputs; and the four together equal a per-token loop over
// the chosen experts, with every expert local or only some (expert parallelism).
#include "ops/moe.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "ops/activation.h"
#include "ops/copy.h"
#include "ops/linear.h"
#include "ops/routing.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::ExpectAllNear;
using test_util::Ints;
using test_util::NanTensor;
using test_util::RandomTensor;

// k distinct random experts of `num_experts` per token.
std::vector<int32_t> RandomChoices(int64_t num_tokens, int64_t k, int64_t num_experts,
                                   std::mt19937& rng) {
  std::vector<int32_t> ids;
  std::vector<int32_t> experts(num_experts);
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t e = 0; e < num_experts; ++e) experts[e] = static_cast<int32_t>(e);
    std::shuffle(experts.begin(), experts.end(), rng);
    ids.insert(ids.end(), experts.begin(), experts.begin() + k);
  }
  return ids;
}

// Global experts [first, first + count) held here, in order.
std::vector<int32_t> LocalExperts(int64_t num_experts, int64_t first, int64_t count) {
  std::vector<int32_t> local(num_experts, -1);
  for (int64_t e = first; e < first + count; ++e) local[e] = static_cast<int32_t>(e - first);
  return local;
}

struct Dispatched {
  Tensor tokens, rows, offsets, counts;
  int64_t num_rows = 0;
};

Dispatched Dispatch(const std::vector<int32_t>& ids, int64_t k, const std::vector<int32_t>& local,
                    int64_t num_local) {
  const int64_t num_tokens = static_cast<int64_t>(ids.size()) / k;
  Dispatched d;
  d.tokens = Ints(std::vector<int32_t>(ids.size(), -7));
  d.rows = Ints(std::vector<int32_t>(ids.size(), -7));
  d.offsets = Ints(std::vector<int32_t>(num_local + 1, -7));
  d.counts = Tensor::Zeros(DType::kI64, {static_cast<int64_t>(local.size())});
  d.num_rows = MoeDispatch(Tensor::FromInts(ids, {num_tokens, k}), Ints(local), d.tokens, d.rows,
                           d.offsets, d.counts);
  return d;
}

TEST(MoeDispatchTest, GroupsLocalChoicesByExpertThenToken) {
  // 3 tokens, top-2 of 4 experts; this rank holds experts 1 and 2 (local 0 and 1).
  const std::vector<int32_t> ids = {2, 0,   // token 0
                                    1, 2,   // token 1
                                    3, 1};  // token 2
  const Dispatched d = Dispatch(ids, 2, LocalExperts(4, 1, 2), 2);
  ASSERT_EQ(d.num_rows, 4);
  // Expert 1 (local 0): tokens 1, 2; expert 2 (local 1): tokens 0, 1.
  EXPECT_EQ(std::vector<int32_t>(d.tokens.data<int32_t>(), d.tokens.data<int32_t>() + 4),
            (std::vector<int32_t>{1, 2, 0, 1}));
  EXPECT_EQ(std::vector<int32_t>(d.offsets.data<int32_t>(), d.offsets.data<int32_t>() + 3),
            (std::vector<int32_t>{0, 2, 4}));
  // Choice (t, j) → its row, −1 for experts 0 and 3.
  EXPECT_EQ(std::vector<int32_t>(d.rows.data<int32_t>(), d.rows.data<int32_t>() + 6),
            (std::vector<int32_t>{2, -1, 0, 3, -1, 1}));
  // Counts cover every expert, held here or not.
  EXPECT_EQ(std::vector<int64_t>(d.counts.data<int64_t>(), d.counts.data<int64_t>() + 4),
            (std::vector<int64_t>{1, 2, 2, 1}));
}

TEST(MoeDispatchTest, MatchesAPlainLoopOnRandomRoutingAndAccumulatesCounts) {
  std::mt19937 rng(80);
  const int64_t num_tokens = 37, k = 4, num_experts = 16;
  const std::vector<int32_t> ids = RandomChoices(num_tokens, k, num_experts, rng);
  const std::vector<int32_t> local = LocalExperts(num_experts, 5, 6);
  Dispatched d = Dispatch(ids, k, local, 6);
  // Plain loop: for each local expert in order, the tokens that chose it in token order.
  std::vector<int32_t> tokens, offsets = {0};
  std::vector<int32_t> rows(ids.size(), -1);
  for (int32_t l = 0; l < 6; ++l) {
    for (int64_t i = 0; i < static_cast<int64_t>(ids.size()); ++i) {
      if (local[ids[i]] != l) continue;
      rows[i] = static_cast<int32_t>(tokens.size());
      tokens.push_back(static_cast<int32_t>(i / k));
    }
    offsets.push_back(static_cast<int32_t>(tokens.size()));
  }
  ASSERT_EQ(d.num_rows, static_cast<int64_t>(tokens.size()));
  EXPECT_EQ(std::vector<int32_t>(d.tokens.data<int32_t>(), d.tokens.data<int32_t>() + d.num_rows),
            tokens);
  EXPECT_EQ(std::vector<int32_t>(d.offsets.data<int32_t>(), d.offsets.data<int32_t>() + 7),
            offsets);
  EXPECT_EQ(std::vector<int32_t>(d.rows.data<int32_t>(), d.rows.data<int32_t>() + ids.size()),
            rows);
  // A second step adds to the same counts.
  MoeDispatch(Tensor::FromInts(ids, {num_tokens, k}), Ints(local), d.tokens, d.rows, d.offsets,
              d.counts);
  for (int64_t e = 0; e < num_experts; ++e) {
    EXPECT_EQ(d.counts.data<int64_t>()[e], 2 * std::count(ids.begin(), ids.end(), e)) << e;
  }
}

TEST(GroupedLinearTest, EachExpertMultipliesItsRowsOnly) {
  std::mt19937 rng(81);
  const int64_t num_local = 3, out = 32, in = 24;
  Tensor w = RandomTensor({num_local, out, in}, rng);
  Tensor x = RandomTensor({9, in}, rng);
  const std::vector<int32_t> offsets = {0, 4, 4, 9};  // expert 1 has no rows
  for (const Tensor& weight : {w, PackLinearWeight(w)}) {
    Tensor y = NanTensor({9, out});
    GroupedLinear(x, weight, Ints(offsets), y);
    std::vector<double> expected;
    for (int64_t r = 0; r < 9; ++r) {
      const int64_t l = r < 4 ? 0 : 2;
      for (int64_t o = 0; o < out; ++o) {
        double sum = 0.0;
        for (int64_t i = 0; i < in; ++i) {
          sum += double{x.data<float>()[r * in + i]} * w.data<float>()[(l * out + o) * in + i];
        }
        expected.push_back(sum);
      }
    }
    ExpectAllNear(y, expected, 1e-5);
  }
}

TEST(GroupedLinearTest, OneRegionForAllExpertsGivesEachExpertsLinearBitwise) {
  // Experts with 0, 1, 3, 17 and 40 rows (one-row kernels, tiles, several row blocks), f32 and
  // bf16 panels: the shared parallel region must give exactly what Linear gives each expert.
  std::mt19937 rng(84);
  const int64_t out = 48, in = 64;
  const std::vector<int32_t> offsets = {0, 0, 1, 4, 21, 61};
  Tensor x = RandomTensor({61, in}, rng);
  Tensor w = RandomTensor({5, out, in}, rng);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Tensor packed = PackLinearWeight(w, dtype);
    Tensor grouped = NanTensor({61, out});
    GroupedLinear(x, packed, Ints(offsets), grouped);
    for (int64_t e = 0; e < 5; ++e) {
      if (offsets[e] == offsets[e + 1]) continue;
      Tensor alone = NanTensor({offsets[e + 1] - offsets[e], out});
      Linear(x.Slice(offsets[e], offsets[e + 1]), ExpertMatrix(packed, e), alone);
      for (int64_t i = 0; i < alone.numel(); ++i) {
        ASSERT_EQ(grouped.data<float>()[offsets[e] * out + i], alone.data<float>()[i])
            << DTypeName(dtype) << " expert " << e << " element " << i;
      }
    }
  }
}

TEST(MoeCombineTest, AddsWeightedLocalOutputsInExpertOrder) {
  // 2 tokens, top-2; token 0's choices are experts 3 then 1 (rows 1 and 0), token 1's choice of
  // expert 0 is held elsewhere (−1).
  const Tensor y = Tensor::FromVector({1, 2, 10, 20, 100, 200}, {3, 2});
  const Tensor ids = Tensor::FromInts({3, 1, 0, 2}, {2, 2});
  const Tensor weights = Tensor::FromVector({0.5f, 0.25f, 0.75f, 2.0f}, {2, 2});
  Tensor out = NanTensor({2, 2});
  MoeCombine(y, ids, weights, Ints({1, 0, -1, 2}), out);
  ExpectAllNear(out, {0.25 * 1 + 0.5 * 10, 0.25 * 2 + 0.5 * 20, 2.0 * 100, 2.0 * 200}, 1e-6);
}

// The routed experts of GEMMA4.md §2.7 for one token, in double: Σ over its choices of
// weight · down(gelu_tanh(gate) · up).
std::vector<double> ReferenceExperts(const Tensor& x, const std::vector<int32_t>& ids,
                                     const Tensor& weights, int64_t k, const Tensor& gate_up,
                                     const Tensor& down, const std::vector<int32_t>& local) {
  const int64_t num_tokens = x.dim(0), hidden = x.dim(1), width = down.dim(2);
  std::vector<double> out(num_tokens * hidden, 0.0);
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t l = local[ids[t * k + j]];
      if (l < 0) continue;
      std::vector<double> act(width);
      for (int64_t u = 0; u < width; ++u) {
        double gate = 0.0, up = 0.0;
        for (int64_t i = 0; i < hidden; ++i) {
          const double xi = x.data<float>()[t * hidden + i];
          gate += xi * gate_up.data<float>()[(l * 2 * width + u) * hidden + i];
          up += xi * gate_up.data<float>()[(l * 2 * width + width + u) * hidden + i];
        }
        act[u] = GeluTanh(static_cast<float>(gate)) * up;
      }
      for (int64_t h = 0; h < hidden; ++h) {
        double sum = 0.0;
        for (int64_t u = 0; u < width; ++u) {
          sum += act[u] * down.data<float>()[(l * hidden + h) * width + u];
        }
        out[t * hidden + h] += weights.data<float>()[t * k + j] * sum;
      }
    }
  }
  return out;
}

class MoeBlockTest : public ::testing::TestWithParam<int64_t> {};  // local expert count

TEST_P(MoeBlockTest, FourStepsEqualAPerTokenLoop) {
  std::mt19937 rng(82);
  const int64_t num_tokens = 11, hidden = 32, width = 16, num_experts = 8, k = 3;
  const int64_t num_local = GetParam();
  Tensor x = RandomTensor({num_tokens, hidden}, rng);
  Tensor gate_up = RandomTensor({num_local, 2 * width, hidden}, rng, -0.3f, 0.3f);
  Tensor down = RandomTensor({num_local, hidden, width}, rng, -0.3f, 0.3f);
  Tensor logits = RandomTensor({num_tokens, num_experts}, rng, -2.0f, 2.0f);
  Tensor scale = RandomTensor({num_experts}, rng, 0.5f, 1.5f);
  const std::vector<int32_t> local = LocalExperts(num_experts, num_experts - num_local, num_local);

  Tensor ids = Tensor::Empty(DType::kI32, {num_tokens, k});
  Tensor weights = Tensor::Empty(DType::kF32, {num_tokens, k});
  TopKRouting(logits, scale, k, ids, weights);
  const std::vector<int32_t> chosen(ids.data<int32_t>(), ids.data<int32_t>() + ids.numel());
  const Dispatched d = Dispatch(chosen, k, local, num_local);
  Tensor xe = NanTensor({d.num_rows, hidden});
  GatherRows(x, d.tokens.Rows(d.num_rows), xe);
  Tensor gu = NanTensor({d.num_rows, 2 * width});
  GroupedLinear(xe, PackLinearWeight(gate_up), d.offsets, gu);
  Tensor act = NanTensor({d.num_rows, width});
  GeluTanhGate(gu, act);
  Tensor ye = NanTensor({d.num_rows, hidden});
  GroupedLinear(act, PackLinearWeight(down), d.offsets, ye);
  Tensor out = NanTensor({num_tokens, hidden});
  MoeCombine(ye, ids, weights, d.rows, out);
  ExpectAllNear(out, ReferenceExperts(x, chosen, weights, k, gate_up, down, local), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(AllOrSomeExpertsLocal, MoeBlockTest, ::testing::Values(8, 3));

}  // namespace
}  // namespace gemmaserve::ops
