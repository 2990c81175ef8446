// Helpers shared by the op tests: seeded random f32 tensors and a max-error comparison against a
// reference computed in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "common/tensor.h"
#include "gtest/gtest.h"
#include "ops/attention.h"

namespace gemmaserve::ops::test_util {

// A CPU f32 tensor of `shape` with values uniform in [lo, hi) drawn from `rng`.
inline Tensor RandomTensor(Shape shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// A CPU f32 tensor of `shape` filled with NaN: an output the op must overwrite, or a cache whose
// unwritten slots poison any result that reads them.
inline Tensor NanTensor(Shape shape) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<float>()[i] = std::numeric_limits<float>::quiet_NaN();
  return t;
}

// A copy of `t` (CPU f32) in fresh storage, so an in-place op can be compared with its input.
inline Tensor Clone(const Tensor& t) {
  Tensor copy = Tensor::Empty(DType::kF32, t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) copy.data<float>()[i] = t.data<float>()[i];
  return copy;
}

// Expects every element of `actual` within `tolerance` of `expected`; on failure reports the
// worst index once instead of one line per element.
inline void ExpectAllNear(const Tensor& actual, const std::vector<double>& expected,
                          double tolerance) {
  ASSERT_EQ(static_cast<size_t>(actual.numel()), expected.size());
  double worst_error = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double difference = std::abs(actual.data<float>()[i] - expected[i]);
    const double error = std::isnan(difference) ? INFINITY : difference;
    if (error > worst_error) {
      worst_error = error;
      worst = i;
    }
  }
  EXPECT_LE(worst_error, tolerance)
      << "worst at flat index " << worst << ": actual " << actual.data<float>()[worst]
      << ", expected " << expected[worst];
}

// A CPU i32 tensor [n] holding `values`: token ids, positions, slots.
inline Tensor Ints(const std::vector<int32_t>& values) {
  return Tensor::FromInts(values, {static_cast<int64_t>(values.size())});
}

// One sequence's part of a step as the attention tests describe it: its tokens are rows
// [token_begin, token_begin + num_tokens) of q, at the last positions of its context_len.
struct Span {
  int64_t token_begin = 0;
  int64_t num_tokens = 0;
  int64_t context_len = 0;
  const int32_t* block_table = nullptr;  // [ceil(context_len / block_size)] physical block ids
};

// The metadata tensors PagedAttention reads for `spans`, over a cache of `block_size` slots per
// block.
inline AttentionMetadata Metadata(const std::vector<Span>& spans, int64_t block_size) {
  std::vector<int32_t> begin, tokens, context;
  int64_t max_context = 0;
  for (const Span& span : spans) max_context = std::max(max_context, span.context_len);
  const int64_t max_blocks = (max_context + block_size - 1) / block_size;
  std::vector<int32_t> tables(spans.size() * max_blocks, -1);
  for (size_t s = 0; s < spans.size(); ++s) {
    begin.push_back(static_cast<int32_t>(spans[s].token_begin));
    tokens.push_back(static_cast<int32_t>(spans[s].num_tokens));
    context.push_back(static_cast<int32_t>(spans[s].context_len));
    const int64_t blocks = (spans[s].context_len + block_size - 1) / block_size;
    std::copy_n(spans[s].block_table, blocks, tables.begin() + s * max_blocks);
  }
  AttentionMetadata metadata;
  metadata.token_begin = Ints(begin);
  metadata.num_tokens = Ints(tokens);
  metadata.context_lens = Ints(context);
  metadata.block_tables =
      Tensor::FromInts(tables, {static_cast<int64_t>(spans.size()), max_blocks});
  metadata.max_context_len = max_context;
  metadata.block_size = block_size;
  return metadata;
}

// Base for death-test suites: OpenBLAS has started its thread pool by then, so the child
// re-executes the binary ("threadsafe") instead of forking a threaded process.
class ThreadsafeDeathTest : public ::testing::Test {
 protected:
  ThreadsafeDeathTest() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

}  // namespace gemmaserve::ops::test_util
