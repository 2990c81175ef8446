// The tiled PagedAttention against PagedAttentionReference (one row at a time, the kernel it
// replaced) on random steps: ragged batches mixing first prefills, prefill chunks after cached
// positions and decodes over long contexts; sliding windows that start and end inside blocks;
// both Gemma 4 head dims with their GQA groups (256 with 2 query heads per KV head, 512 with 8);
// f32 and bf16 caches; one, two and four threads (two and four split a long decode's keys over
// threads). Blocks wholly behind a window are −1 in the table and the window's first block holds
// NaN before the window, as the serving cache leaves them, so reading either fails the test.
//
// The k_eq_v cases hold values only and have the kernel rebuild keys from them (KeysFromValues):
// the output must be bitwise the tiled kernel's over the keys the model would have stored (f32
// keys of the cache's values, scaled by k_norm's weight and rotated by ops::Rotary), and near the
// reference's.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ops/attention.h"
#include "ops/rope.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::Ints;
using test_util::Metadata;
using test_util::NanTensor;
using test_util::RandomTensor;
using test_util::Span;

struct Step {
  int64_t num_cached;
  int64_t num_tokens;
};

struct Case {
  std::string name;
  int64_t head_dim;
  int64_t num_heads;
  int64_t num_kv_heads;
  int64_t block_size;
  int64_t window;  // 0: full causal
  DType kv_dtype;
  int threads;
  std::vector<Step> steps;
  bool keys_from_values = false;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// A ragged batch: a decode deep in its context, a prefill chunk after cached positions, a first
// prefill longer than one query block, a one-token first prefill.
const std::vector<Step> kMixed = {{1200, 1}, {333, 150}, {0, 200}, {0, 1}};
// Only decodes over long contexts: fewer work items than threads, so keys are split.
const std::vector<Step> kLongDecodes = {{3000, 1}};
const std::vector<Step> kTwoLongDecodes = {{2600, 1}, {1900, 1}};

class TiledAttentionTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { saved_threads_ = omp_get_max_threads(); }
  void TearDown() override { omp_set_num_threads(saved_threads_); }

 private:
  int saved_threads_ = 1;
};

TEST_P(TiledAttentionTest, MatchesTheReferenceKernel) {
  const Case& c = GetParam();
  omp_set_num_threads(c.threads);
  std::mt19937 rng(1234);
  int64_t num_blocks = 0;
  for (const Step& step : c.steps) {
    num_blocks += (step.num_cached + step.num_tokens + c.block_size - 1) / c.block_size;
  }
  std::vector<int32_t> physical(num_blocks);
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);

  const Shape cache_shape{num_blocks, c.block_size, c.num_kv_heads, c.head_dim};
  Tensor k_cache = NanTensor(cache_shape);
  Tensor v_cache = NanTensor(cache_shape);
  if (c.kv_dtype == DType::kBF16) {
    k_cache = Tensor::Empty(DType::kBF16, cache_shape);
    v_cache = Tensor::Empty(DType::kBF16, cache_shape);
    // 0x7FC0: a bf16 NaN in every slot nothing writes.
    std::fill_n(k_cache.data<uint16_t>(), k_cache.numel(), uint16_t{0x7FC0});
    std::fill_n(v_cache.data<uint16_t>(), v_cache.numel(), uint16_t{0x7FC0});
  }

  // k_eq_v: the f32 keys and values the reference reads, and how keys come from values
  // (proportional RoPE as on Gemma 4's full layers: a quarter of the angles rotate).
  Tensor k_stored = NanTensor(cache_shape);
  Tensor v_stored = NanTensor(cache_shape);
  Tensor no_keys;
  Rotary rotary(c.head_dim, c.head_dim / 8, 1e6);
  const Tensor k_norm = RandomTensor({c.head_dim}, rng, 0.5f, 1.5f);

  std::vector<std::vector<int32_t>> tables;
  std::vector<Span> spans;
  int64_t next_block = 0;
  int64_t num_tokens = 0;
  for (const Step& step : c.steps) {
    const int64_t context = step.num_cached + step.num_tokens;
    const int64_t blocks = (context + c.block_size - 1) / c.block_size;
    std::vector<int32_t> table(physical.begin() + next_block,
                               physical.begin() + next_block + blocks);
    next_block += blocks;
    // Every position a query of this step may see is written; with a window, the positions
    // before the first query's window stay NaN and wholly unseen blocks leave the table.
    const int64_t first_seen =
        c.window > 0 ? std::max<int64_t>(0, step.num_cached - c.window + 1) : 0;
    const int64_t written = context - first_seen;
    Tensor keys = RandomTensor({written, c.num_kv_heads, c.head_dim}, rng);
    Tensor values = RandomTensor({written, c.num_kv_heads, c.head_dim}, rng, -2.0f, 2.0f);
    std::vector<int32_t> slots;
    std::vector<int32_t> positions;
    for (int64_t p = first_seen; p < context; ++p) {
      slots.push_back(static_cast<int32_t>(table[p / c.block_size] * c.block_size +
                                           p % c.block_size));
      positions.push_back(static_cast<int32_t>(p));
    }
    if (c.keys_from_values) {
      // The values as the cache holds them, and the keys of those values.
      float* v = values.data<float>();
      float* k = keys.data<float>();
      for (int64_t i = 0; i < values.numel(); ++i) {
        if (c.kv_dtype == DType::kBF16) v[i] = RoundToBf16(v[i]);
        k[i] = v[i] * k_norm.data<float>()[i % c.head_dim];
      }
      rotary.Apply(keys, Ints(positions));
      WriteKvCache(keys, values, Ints(slots), k_stored, v_stored);
      WriteKvCache(keys, values, Ints(slots), no_keys, v_cache);
    } else {
      WriteKvCache(keys, values, Ints(slots), k_cache, v_cache);
    }
    for (int64_t b = 0; b < first_seen / c.block_size; ++b) table[b] = -1;
    tables.push_back(std::move(table));
    spans.push_back({num_tokens, step.num_tokens, context, nullptr});
    num_tokens += step.num_tokens;
  }
  for (size_t s = 0; s < spans.size(); ++s) spans[s].block_table = tables[s].data();
  const AttentionMetadata metadata = Metadata(spans, c.block_size);
  const Tensor q = RandomTensor({num_tokens, c.num_heads, c.head_dim}, rng);

  Tensor expected = NanTensor(q.shape());
  Tensor actual = NanTensor(q.shape());
  if (c.keys_from_values) {
    PagedAttentionReference(q, k_stored, v_stored, metadata, c.window, 0.0625f, expected);
    Tensor stored = NanTensor(q.shape());
    PagedAttention(q, k_stored, v_stored, metadata, c.window, 0.0625f, stored);
    const KeysFromValues rebuild{k_norm, rotary.inv_freq(),
                                 rotary.Table(metadata.max_context_len)};
    PagedAttention(q, no_keys, v_cache, metadata, c.window, 0.0625f, actual, &rebuild);
    for (int64_t i = 0; i < q.numel(); ++i) {
      ASSERT_EQ(actual.data<float>()[i], stored.data<float>()[i])
          << "element " << i << ": keys rebuilt from values differ from stored ones";
    }
  } else {
    PagedAttentionReference(q, k_cache, v_cache, metadata, c.window, 0.0625f, expected);
    PagedAttention(q, k_cache, v_cache, metadata, c.window, 0.0625f, actual);
  }

  double worst = 0.0;
  int64_t worst_index = 0;
  for (int64_t i = 0; i < q.numel(); ++i) {
    const double error = std::abs(double{actual.data<float>()[i]} - expected.data<float>()[i]);
    if (!(error <= worst)) {  // NaN counts as the worst
      worst = std::isnan(error) ? INFINITY : error;
      worst_index = i;
    }
  }
  EXPECT_LE(worst, 2e-6) << "worst at token " << worst_index / (c.num_heads * c.head_dim)
                         << ", head " << worst_index / c.head_dim % c.num_heads << ": tiled "
                         << actual.data<float>()[worst_index] << ", reference "
                         << expected.data<float>()[worst_index];
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    const std::string type = dtype == DType::kF32 ? "F32" : "Bf16";
    for (const int threads : {1, 2, 4}) {
      const std::string suffix = type + "Threads" + std::to_string(threads);
      // Sliding layers: head_dim 256, 2 query heads per KV head; windows of 64 (4 blocks of 16)
      // and 50 (starting and ending inside blocks).
      cases.push_back({"Sliding64Mixed" + suffix, 256, 8, 4, 16, 64, dtype, threads, kMixed});
      cases.push_back({"Sliding50Mixed" + suffix, 256, 8, 4, 16, 50, dtype, threads, kMixed});
      cases.push_back(
          {"Sliding512LongDecode" + suffix, 256, 4, 2, 16, 512, dtype, threads, kLongDecodes});
      // Full layers: head_dim 512, 8 query heads per KV head.
      cases.push_back({"FullMixed" + suffix, 512, 8, 1, 16, 0, dtype, threads, kMixed});
      cases.push_back({"FullLongDecode" + suffix, 512, 8, 1, 16, 0, dtype, threads, kLongDecodes});
      cases.push_back(
          {"FullTwoLongDecodes" + suffix, 512, 16, 2, 4, 0, dtype, threads, kTwoLongDecodes});
      // Keys rebuilt from values: Gemma 4's k_eq_v full layers, and a window for good measure.
      const std::string kv = "KEqV" + suffix;
      cases.push_back({"FullMixed" + kv, 512, 8, 1, 16, 0, dtype, threads, kMixed, true});
      cases.push_back(
          {"FullLongDecode" + kv, 512, 8, 1, 16, 0, dtype, threads, kLongDecodes, true});
      cases.push_back(
          {"FullTwoLongDecodes" + kv, 512, 16, 2, 4, 0, dtype, threads, kTwoLongDecodes, true});
      cases.push_back({"Sliding50Mixed" + kv, 256, 8, 4, 16, 50, dtype, threads, kMixed, true});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, TiledAttentionTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace gemmaserve::ops
