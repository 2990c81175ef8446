// PagedAttention on a realistic step, compared with dense causal attention over each sequence's
// contiguous K/V: three sequences in one call (a decode, a prefill chunk after 5 cached
// positions, a first prefill), their blocks scattered over the cache, block_size 4, GQA with 4
// query heads over 2 KV heads, window off and on; blocks back to back in the cache, and 7 rows
// apart as when the KV groups share pages (the rows between are NaN).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "ops/attention.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::ExpectAllNear;
using test_util::Ints;
using test_util::Metadata;
using test_util::Span;
using test_util::NanTensor;
using test_util::RandomTensor;

constexpr int64_t kBlockSize = 4;
constexpr int64_t kNumBlocks = 12;
constexpr int64_t kNumHeads = 4;
constexpr int64_t kNumKvHeads = 2;
constexpr int64_t kHeadDim = 8;

struct Sequence {
  int64_t num_cached;  // positions written by earlier steps
  int64_t num_tokens;  // positions this step queries
  std::vector<int32_t> block_table;
  Tensor keys, values;  // [num_cached + num_tokens, kNumKvHeads, kHeadDim], contiguous
  int64_t context_len() const { return num_cached + num_tokens; }
};

// The parameter: cache rows from one block to the next.
class PagedAttentionScenarioTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override {
    const int64_t stride = GetParam();
    // Physical blocks handed out in scrambled order; blocks 1, 9, 4, 6 and unwritten rows of
    // each sequence's last block stay NaN, so any read outside a sequence's context shows up.
    sequences_ = {{9, 1, {7, 2, 10}, {}, {}},  // decode at position 9
                  {5, 6, {0, 5, 11}, {}, {}},  // prefill chunk, positions 5 … 10
                  {0, 3, {3}, {}, {}}};        // first prefill, positions 0 … 2
    k_cache_ = NanTensor({kNumBlocks, stride, kNumKvHeads, kHeadDim});
    v_cache_ = NanTensor(k_cache_.shape());
    std::mt19937 rng(70);
    int64_t num_tokens = 0;
    for (Sequence& seq : sequences_) {
      seq.keys = RandomTensor({seq.context_len(), kNumKvHeads, kHeadDim}, rng, -2.0f, 2.0f);
      seq.values = RandomTensor({seq.context_len(), kNumKvHeads, kHeadDim}, rng, -2.0f, 2.0f);
      std::vector<int32_t> slots;
      for (int64_t p = 0; p < seq.context_len(); ++p) {
        slots.push_back(static_cast<int32_t>(seq.block_table[p / kBlockSize] * stride +
                                             p % kBlockSize));
      }
      WriteKvCache(seq.keys, seq.values, Ints(slots), k_cache_, v_cache_);
      spans_.push_back({num_tokens, seq.num_tokens, seq.context_len(), seq.block_table.data()});
      num_tokens += seq.num_tokens;
    }
    q_ = RandomTensor({num_tokens, kNumHeads, kHeadDim}, rng, -2.0f, 2.0f);
  }

  Tensor Run(const std::vector<Span>& spans, int64_t window, float scale) const {
    Tensor out = Tensor::Empty(DType::kF32, q_.shape());
    PagedAttention(q_, k_cache_, v_cache_, Metadata(spans, kBlockSize), window, scale, out);
    return out;
  }

  Tensor RunReference(int64_t window, float scale) const {
    Tensor out = Tensor::Empty(DType::kF32, q_.shape());
    PagedAttentionReference(q_, k_cache_, v_cache_, Metadata(spans_, kBlockSize), window, scale,
                            out);
    return out;
  }

  // Dense softmax(scale · q·kᵀ)·v in double over positions max(0, p − W + 1) … p (or 0 … p).
  std::vector<double> Reference(int64_t window, double scale) const {
    std::vector<double> out(q_.numel());
    for (size_t s = 0; s < sequences_.size(); ++s) {
      const Sequence& seq = sequences_[s];
      for (int64_t i = 0; i < seq.num_tokens; ++i) {
        const int64_t token = spans_[s].token_begin + i;
        const int64_t position = seq.num_cached + i;
        const int64_t first = window > 0 ? std::max<int64_t>(0, position - window + 1) : 0;
        for (int64_t h = 0; h < kNumHeads; ++h) {
          const int64_t kv_head = h / (kNumHeads / kNumKvHeads);
          const float* q = q_.data<float>() + (token * kNumHeads + h) * kHeadDim;
          AttendDense(q, seq, kv_head, first, position, scale,
                      out.data() + (token * kNumHeads + h) * kHeadDim);
        }
      }
    }
    return out;
  }

  static void AttendDense(const float* q, const Sequence& seq, int64_t kv_head, int64_t first,
                          int64_t last, double scale, double* out) {
    std::vector<double> weights;
    for (int64_t p = first; p <= last; ++p) {
      const float* k = seq.keys.data<float>() + (p * kNumKvHeads + kv_head) * kHeadDim;
      double dot = 0.0;
      for (int64_t d = 0; d < kHeadDim; ++d) dot += double{q[d]} * k[d];
      weights.push_back(scale * dot);
    }
    const double max_score = *std::max_element(weights.begin(), weights.end());
    double sum = 0.0;
    for (double& w : weights) sum += (w = std::exp(w - max_score));
    std::fill_n(out, kHeadDim, 0.0);
    for (int64_t p = first; p <= last; ++p) {
      const float* v = seq.values.data<float>() + (p * kNumKvHeads + kv_head) * kHeadDim;
      for (int64_t d = 0; d < kHeadDim; ++d) out[d] += weights[p - first] / sum * v[d];
    }
  }

  std::vector<Sequence> sequences_;
  std::vector<Span> spans_;
  Tensor k_cache_, v_cache_, q_;
};

TEST_P(PagedAttentionScenarioTest, FullCausalMatchesDenseReference) {
  ExpectAllNear(Run(spans_, 0, 1.0f), Reference(0, 1.0), 1e-5);
}

TEST_P(PagedAttentionScenarioTest, SlidingWindowShorterThanABlockMatchesDenseReference) {
  ExpectAllNear(Run(spans_, 3, 1.0f), Reference(3, 1.0), 1e-5);
}

TEST_P(PagedAttentionScenarioTest, SlidingWindowAcrossBlocksMatchesDenseReference) {
  ExpectAllNear(Run(spans_, 6, 0.3f), Reference(6, 0.3), 1e-5);
}

TEST_P(PagedAttentionScenarioTest, ThePerRowReferenceKernelMatchesDenseReference) {
  ExpectAllNear(RunReference(0, 1.0f), Reference(0, 1.0), 1e-5);
  ExpectAllNear(RunReference(6, 0.3f), Reference(6, 0.3), 1e-5);
}

TEST_P(PagedAttentionScenarioTest, WindowLongerThanEveryContextEqualsFullCausal) {
  const Tensor full = Run(spans_, 0, 1.0f);
  ExpectAllNear(Run(spans_, 1024, 1.0f),
                std::vector<double>(full.data<float>(), full.data<float>() + full.numel()), 0.0);
}

TEST_P(PagedAttentionScenarioTest, EachSequenceAloneGivesItsRowsOfTheBatch) {
  // Batching must not leak between sequences, and span order must not matter.
  const std::vector<Span> reversed(spans_.rbegin(), spans_.rend());
  const Tensor batch = Run(reversed, 3, 1.0f);
  const int64_t row = kNumHeads * kHeadDim;
  for (const Span& span : spans_) {
    const Tensor alone = Run({span}, 3, 1.0f);
    const Tensor mine = alone.Slice(span.token_begin, span.token_begin + span.num_tokens);
    const float* expected = batch.data<float>() + span.token_begin * row;
    ExpectAllNear(mine, std::vector<double>(expected, expected + span.num_tokens * row), 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(BlockStride, PagedAttentionScenarioTest,
                         ::testing::Values(kBlockSize, 7),
                         [](const ::testing::TestParamInfo<int64_t>& info) {
                           return info.param == kBlockSize ? "BackToBack" : "SevenRowsApart";
                         });

}  // namespace
}  // namespace gemmaserve::ops
