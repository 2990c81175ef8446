#include "common/tensor.h"

#include "gtest/gtest.h"

namespace gemmaserve {
namespace {

TEST(TensorTest, EmptyHasShapeAndAlignedStorage) {
  Tensor t = Tensor::Empty(DType::kBF16, {3, 5});
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 30u);
  EXPECT_EQ(t.dim(-1), 5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  EXPECT_EQ(t.DebugString(), "bf16[3,5]@cpu");
}

TEST(TensorTest, SliceAndViewAliasStorage) {
  Tensor t = Tensor::FromVector({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor rows = t.Slice(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_EQ(rows.data<float>()[0], 2.0f);
  rows.data<float>()[0] = 42.0f;
  EXPECT_EQ(t.data<float>()[2], 42.0f);
  EXPECT_EQ(t.View({6}).data<float>()[2], 42.0f);
}

TEST(TensorTest, BorrowKeepsOwnerAlive) {
  auto owner = std::make_shared<std::vector<uint16_t>>(4, F32ToBf16(1.5f));
  Tensor t = Tensor::Borrow(owner->data(), DType::kBF16, {4}, owner);
  std::weak_ptr<std::vector<uint16_t>> weak = owner;
  owner.reset();
  EXPECT_FALSE(weak.expired());
  Tensor wide = t.ToF32();
  EXPECT_EQ(wide.data<float>()[3], 1.5f);
  t = Tensor();
  EXPECT_TRUE(weak.expired());
}

TEST(TensorDeathTest, ViewWithWrongCountDies) {
  Tensor t = Tensor::Zeros(DType::kF32, {2, 3});
  EXPECT_DEATH(t.View({4}), "viewed as");
}

}  // namespace
}  // namespace gemmaserve
