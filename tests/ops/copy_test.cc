// The data-movement ops (ops/copy.h) against hand-computed layouts.
#include "ops/copy.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/ops/op_test_util.h"

namespace gemmaserve::ops {
namespace {

using test_util::ExpectAllNear;
using test_util::Ints;
using test_util::NanTensor;

// [rows, cols] f32 with element (r, c) = 10·r + c.
Tensor Grid(int64_t rows, int64_t cols) {
  std::vector<float> values;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) values.push_back(static_cast<float>(10 * r + c));
  }
  return Tensor::FromVector(values, {rows, cols});
}

TEST(GatherRowsTest, CopiesTheNamedRowsInOrderRepeatsAllowed) {
  Tensor out = NanTensor({4, 3});
  GatherRows(Grid(5, 3), Ints({4, 0, 4, 2}), out);
  ExpectAllNear(out, {40, 41, 42, 0, 1, 2, 40, 41, 42, 20, 21, 22}, 0.0);
}

TEST(InterleaveShardsTest, PutsEachRanksShardAtItsColumns) {
  // 2 ranks × 2 rows of a 3-column shard: rank r's row i is 10·(2r + i) + c.
  Tensor out = NanTensor({2, 6});
  InterleaveShards(Grid(4, 3), 2, out);
  ExpectAllNear(out, {0, 1, 2, 20, 21, 22, 10, 11, 12, 30, 31, 32}, 0.0);
}

TEST(SliceDimTest, ColumnsOfEveryRowAndRowsAsAView) {
  const Tensor x = Grid(3, 5);
  ExpectAllNear(SliceDim(x, 1, 1, 3), {1, 2, 11, 12, 21, 22}, 0.0);
  const Tensor rows = SliceDim(x, 0, 1, 3);
  EXPECT_EQ(rows.raw_data(), x.data<float>() + 5);
  EXPECT_EQ(rows.shape(), (Shape{2, 5}));
}

TEST(SliceDimTest, KeepsTheDtype) {
  const Tensor x = Tensor::FromInts({0, 1, 2, 3, 4, 5}, {2, 3});
  const Tensor y = SliceDim(x, 1, 2, 3);
  ASSERT_EQ(y.dtype(), DType::kI32);
  EXPECT_EQ(y.data<int32_t>()[0], 2);
  EXPECT_EQ(y.data<int32_t>()[1], 5);
}

TEST(ConcatTest, StacksRowsOrJoinsColumnsPerLeadingIndex) {
  ExpectAllNear(Concat({Grid(1, 2), Grid(2, 2)}, 0), {0, 1, 0, 1, 10, 11}, 0.0);
  // [2, 1, 2] and [2, 2, 2] along dimension 1: for each leading index, a's row then b's rows.
  const Tensor a = Tensor::FromVector({1, 2, 3, 4}, {2, 1, 2});
  const Tensor b = Tensor::FromVector({5, 6, 7, 8, 9, 10, 11, 12}, {2, 2, 2});
  const Tensor joined = Concat({a, b}, 1);
  EXPECT_EQ(joined.shape(), (Shape{2, 3, 2}));
  ExpectAllNear(joined, {1, 2, 5, 6, 7, 8, 3, 4, 9, 10, 11, 12}, 0.0);
}

TEST(CopyTest, CopiesEqualSizedTensorsOfAnyShape) {
  Tensor dst = Tensor::Zeros(DType::kI64, {2, 3});
  Tensor src = Tensor::Empty(DType::kI64, {6});
  for (int64_t i = 0; i < 6; ++i) src.data<int64_t>()[i] = 100 + i;
  Copy(src, dst);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(dst.data<int64_t>()[i], 100 + i);
}

TEST(ScalarToHostTest, WidensAnyFloatDtype) {
  Tensor bf16 = Tensor::Empty(DType::kBF16, {1});
  bf16.data<uint16_t>()[0] = F32ToBf16(0.75f);
  EXPECT_EQ(ScalarToHost(bf16), 0.75f);
  EXPECT_EQ(ScalarToHost(Tensor::FromVector({-2.5f}, {1})), -2.5f);
}

TEST(ToHostTest, AHostTensorIsItsOwnHostCopy) {
  const Tensor x = Grid(2, 2);
  EXPECT_EQ(ToHost(x).raw_data(), x.raw_data());
}

}  // namespace
}  // namespace gemmaserve::ops
