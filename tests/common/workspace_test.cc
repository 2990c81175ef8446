#include "common/workspace.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace gemmaserve {
namespace {

TEST(WorkspaceTest, TakesAlignedConsecutiveTensors) {
  Workspace ws(4096, Device::Cpu());
  Tensor a = ws.Take(DType::kF32, {3});  // 12 bytes, rounded up to one alignment unit
  Tensor b = ws.Take(DType::kI32, {2, 5});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.raw_data()) % Workspace::kAlignment, 0u);
  EXPECT_EQ(static_cast<char*>(b.raw_data()) - static_cast<char*>(a.raw_data()),
            Workspace::kAlignment);
  EXPECT_EQ(b.shape(), (Shape{2, 5}));
  EXPECT_EQ(b.dtype(), DType::kI32);
  EXPECT_EQ(ws.high_water_bytes(), 2 * Workspace::kAlignment);
}

TEST(WorkspaceTest, AScopeGivesBackWhatWasTakenInsideIt) {
  Workspace ws(4096, Device::Cpu());
  Tensor kept = ws.Take(DType::kF32, {64});  // 256 bytes
  void* inside = nullptr;
  {
    Workspace::Scope scope(ws);
    inside = ws.Take(DType::kF32, {128}).raw_data();
  }
  // The next take reuses the scope's bytes; the high-water mark remembers them.
  EXPECT_EQ(ws.Take(DType::kF32, {1}).raw_data(), inside);
  EXPECT_EQ(ws.high_water_bytes(), 256 + 512);
  EXPECT_NE(kept.raw_data(), inside);
}

TEST(WorkspaceTest, ResetStartsOverFromTheBeginning) {
  Workspace ws(1024, Device::Cpu());
  void* first = ws.Take(DType::kF32, {10}).raw_data();
  ws.Take(DType::kF32, {10});
  ws.Reset();
  EXPECT_EQ(ws.Take(DType::kF32, {10}).raw_data(), first);
}

TEST(WorkspaceTest, ATakeThatDoesNotFitGetsItsOwnMemoryAndIsCounted) {
  Workspace ws(512, Device::Cpu());
  Tensor a = ws.Take(DType::kF32, {100});  // 400 → 512 bytes: exactly full
  EXPECT_EQ(ws.num_overflows(), 0);
  Tensor b = ws.Take(DType::kF32, {1000});
  EXPECT_EQ(ws.num_overflows(), 1);
  ASSERT_NE(b.raw_data(), nullptr);
  for (int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] = 1.0f;  // usable, not aliased
  a.data<float>()[0] = 2.0f;
  EXPECT_EQ(b.data<float>()[0], 1.0f);
  ws.Reset();
  EXPECT_EQ(ws.Take(DType::kF32, {100}).raw_data(), a.raw_data());
}

// A step larger than the workspace (a whole long prompt in one step) overflows in every layer;
// each layer's scope gives its overflow back, so the step holds one layer's at a time.
TEST(WorkspaceTest, AScopeGivesBackTheOverflowTakenInsideIt) {
  Workspace ws(512, Device::Cpu());
  const Tensor outside = ws.Take(DType::kF32, {1000});  // overflows before any scope
  ASSERT_EQ(ws.live_overflows(), 1);
  for (int layer = 0; layer < 3; ++layer) {
    Workspace::Scope scope(ws);
    const Tensor a = ws.Take(DType::kF32, {1000});
    const Tensor b = ws.Take(DType::kF32, {2000});
    EXPECT_EQ(ws.live_overflows(), 3) << "layer " << layer;
  }
  EXPECT_EQ(ws.live_overflows(), 1);
  EXPECT_EQ(ws.num_overflows(), 7);  // every take that did not fit, freed or not
  ws.Reset();
  EXPECT_EQ(ws.live_overflows(), 0);
}

TEST(WorkspaceTest, TensorsKeepTheBufferAliveAfterTheWorkspaceIsGone) {
  Tensor survivor;
  {
    Workspace ws(256, Device::Cpu());
    survivor = ws.Take(DType::kF32, {4});
    survivor.data<float>()[3] = 7.0f;
  }
  EXPECT_EQ(survivor.data<float>()[3], 7.0f);  // no use-after-free (ASan would say)
}

TEST(WorkspaceTest, BytesForRoundsUpToTheAlignment) {
  EXPECT_EQ(Workspace::BytesFor(DType::kF32, {1}), Workspace::kAlignment);
  EXPECT_EQ(Workspace::BytesFor(DType::kF32, {64}), 256);
  EXPECT_EQ(Workspace::BytesFor(DType::kI32, {65}), 512);
  EXPECT_EQ(Workspace::BytesFor(DType::kF32, {0, 7}), 0);
}

}  // namespace
}  // namespace gemmaserve
