#include "ops/linear.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::ExpectAllNear;
using test_util::NanTensor;
using test_util::RandomTensor;

// y[r, o] = Σ_i x[r, i] · w[o, i], in double.
std::vector<double> ReferenceLinear(const Tensor& x, const Tensor& w) {
  const int64_t rows = x.dim(0), in = x.dim(1), out = w.dim(0);
  std::vector<double> y(rows * out, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t i = 0; i < in; ++i) {
        y[r * out + o] += double{x.data<float>()[r * in + i]} * w.data<float>()[o * in + i];
      }
    }
  }
  return y;
}

// Outputs start as NaN throughout: Linear overwrites y and must never accumulate into it.

TEST(LinearTest, WeightIsOutByInLayout) {
  // x = [1, 2]; w rows are output features: [1, 0], [0, 1], [1, 1] -> y = [1, 2, 3].
  Tensor x = Tensor::FromVector({1.0f, 2.0f}, {1, 2});
  Tensor w = Tensor::FromVector({1, 0, 0, 1, 1, 1}, {3, 2});
  Tensor y = NanTensor({1, 3});
  Linear(x, w, y);
  ExpectAllNear(y, {1, 2, 3}, 0.0);
  // The same weight over two rows (one gemv per row) and over six (the gemm path) must agree.
  Tensor x2 = Tensor::FromVector({1, 2, -1, 4}, {2, 2});
  Tensor y2 = NanTensor({2, 3});
  Linear(x2, w, y2);
  ExpectAllNear(y2, {1, 2, 3, -1, 4, 3}, 0.0);
  Tensor x6 = Tensor::FromVector({1, 2, -1, 4, 1, 2, -1, 4, 1, 2, -1, 4}, {6, 2});
  Tensor y6 = NanTensor({6, 3});
  Linear(x6, w, y6);
  ExpectAllNear(y6, {1, 2, 3, -1, 4, 3, 1, 2, 3, -1, 4, 3, 1, 2, 3, -1, 4, 3}, 0.0);
}

TEST(LinearTest, SingleRowGemvMatchesReference) {
  std::mt19937 rng(30);
  Tensor x = RandomTensor({1, 75}, rng);
  Tensor w = RandomTensor({41, 75}, rng);
  Tensor y = NanTensor({1, 41});
  Linear(x, w, y);
  ExpectAllNear(y, ReferenceLinear(x, w), 1e-5);
}

TEST(LinearTest, ManyRowsGemmMatchesReference) {
  std::mt19937 rng(31);
  Tensor x = RandomTensor({13, 75}, rng);
  Tensor w = RandomTensor({41, 75}, rng);
  Tensor y = NanTensor({13, 41});
  Linear(x, w, y);
  ExpectAllNear(y, ReferenceLinear(x, w), 1e-5);
}

TEST(LinearTest, RowsOfABatchEqualEachRowAlone) {
  // A token's output must not depend on whether it ran in a batch (gemm) or alone (gemv).
  std::mt19937 rng(32);
  Tensor x = RandomTensor({4, 64}, rng);
  Tensor w = RandomTensor({32, 64}, rng);
  Tensor batch = NanTensor({4, 32});
  Linear(x, w, batch);
  for (int64_t r = 0; r < 4; ++r) {
    Tensor single = NanTensor({1, 32});
    Linear(x.Slice(r, r + 1), w, single);
    std::vector<double> expected(batch.data<float>() + r * 32, batch.data<float>() + (r + 1) * 32);
    ExpectAllNear(single, expected, 1e-5);
  }
}

TEST(LinearTest, ZeroRowsIsANoOp) {
  Tensor x = Tensor::Empty(DType::kF32, {0, 8});
  Tensor w = Tensor::Zeros(DType::kF32, {4, 8});
  Tensor y = Tensor::Empty(DType::kF32, {0, 4});
  Linear(x, w, y);
  EXPECT_EQ(y.numel(), 0);
}

using LinearDeathTest = test_util::ThreadsafeDeathTest;

TEST_F(LinearDeathTest, InnerDimensionMismatchDies) {
  Tensor x = Tensor::Zeros(DType::kF32, {2, 8});
  Tensor w = Tensor::Zeros(DType::kF32, {4, 7});
  Tensor y = Tensor::Empty(DType::kF32, {2, 4});
  EXPECT_DEATH(Linear(x, w, y), "Linear: x");
}

TEST_F(LinearDeathTest, OutputOfWrongShapeDies) {
  Tensor x = Tensor::Zeros(DType::kF32, {2, 8});
  Tensor w = Tensor::Zeros(DType::kF32, {4, 8});
  Tensor y = Tensor::Empty(DType::kF32, {2, 5});
  EXPECT_DEATH(Linear(x, w, y), "Linear y");
}

}  // namespace
}  // namespace gemmaserve::ops
