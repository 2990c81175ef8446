#include "ops/linear.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "ops/panel_kernel.h"
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

// ---- Packed weights -----------------------------------------------------------------------

TEST(PackLinearWeightTest, LaysPanelsOutKMajor) {
  std::mt19937 rng(33);
  Tensor w = RandomTensor({32, 3}, rng);
  Tensor packed = PackLinearWeight(w);
  ASSERT_EQ(packed.shape(), (Shape{2, 3, 16}));
  EXPECT_TRUE(IsPackedLinearWeight(packed));
  EXPECT_EQ(LinearOutFeatures(packed), 32);
  EXPECT_EQ(LinearInFeatures(packed), 3);
  for (int64_t row = 0; row < 32; ++row) {
    for (int64_t k = 0; k < 3; ++k) {
      EXPECT_EQ(packed.data<float>()[((row / 16) * 3 + k) * 16 + row % 16],
                w.data<float>()[row * 3 + k]);
    }
  }
}

TEST(PackLinearWeightTest, OutputsNotAMultipleOfSixteenStayRowMajor) {
  Tensor w = Tensor::Zeros(DType::kF32, {8, 5});
  Tensor same = PackLinearWeight(w);
  EXPECT_EQ(same.raw_data(), w.raw_data());
  EXPECT_FALSE(IsPackedLinearWeight(same));
  EXPECT_EQ(LinearOutFeatures(same), 8);
}

TEST(PackLinearWeightTest, StackedExpertsPackOneByOneAndRowsReadBack) {
  std::mt19937 rng(34);
  Tensor experts = RandomTensor({3, 16, 7}, rng);
  Tensor packed = PackLinearWeight(experts);
  ASSERT_EQ(packed.shape(), (Shape{3, 1, 7, 16}));
  for (int64_t e = 0; e < 3; ++e) {
    Tensor expert = packed.Slice(e, e + 1).View({1, 7, 16});
    for (int64_t row = 0; row < 16; ++row) {
      std::vector<float> got(7);
      CopyLinearWeightRow(expert, row, got.data());
      const float* want = experts.data<float>() + (e * 16 + row) * 7;
      EXPECT_EQ(got, std::vector<float>(want, want + 7)) << "expert " << e << " row " << row;
    }
  }
}

// Row counts around the 6-row tile and the 96-row block, depths around the 512-deep block, and
// thread counts that split the panels unevenly.
TEST(PackedLinearTest, MatchesReferenceForEveryTilingAndThreadCount) {
  std::mt19937 rng(35);
  for (const int threads : {1, 3}) {
    SetNumThreads(threads);
    for (const int64_t depth : {75, 1100}) {
      Tensor w = RandomTensor({80, depth}, rng);
      Tensor packed = PackLinearWeight(w);
      for (const int64_t rows : {1, 2, 5, 6, 7, 13, 32, 100}) {
        Tensor x = RandomTensor({rows, depth}, rng);
        Tensor y = NanTensor({rows, 80});
        Linear(x, packed, y);
        SCOPED_TRACE(testing::Message() << threads << " threads, depth " << depth << ", rows "
                                        << rows);
        ExpectAllNear(y, ReferenceLinear(x, w), 1e-4);
      }
    }
  }
  SetNumThreads(1);
}

TEST(PackedLinearTest, ARowGivesBitwiseTheSameOutputInAnyBatch) {
  // Sampling must not depend on what else shares the step: each row's sums run in one order.
  std::mt19937 rng(36);
  Tensor w = PackLinearWeight(RandomTensor({48, 600}, rng));
  Tensor x = RandomTensor({20, 600}, rng);
  Tensor batch = NanTensor({20, 48});
  Linear(x, w, batch);
  for (const int64_t r : {0, 7, 19}) {
    Tensor single = NanTensor({1, 48});
    Linear(x.Slice(r, r + 1), w, single);
    for (int64_t j = 0; j < 48; ++j) {
      ASSERT_EQ(single.data<float>()[j], batch.data<float>()[r * 48 + j]) << "row " << r;
    }
  }
}

// Each kernel against the portable reference, on row counts that tile every way (1 … 40 rows:
// full tiles, remainders, several row blocks' worth for the small kernels) and a depth that is
// not a multiple of any unroll.
void ExpectKernelMatchesPortable(const internal::PanelKernel& kernel) {
  std::mt19937 rng(37);
  Tensor w = PackLinearWeight(RandomTensor({32, 530}, rng));
  for (int64_t rows = 1; rows <= 40; ++rows) {
    Tensor x = RandomTensor({rows, 530}, rng);
    Tensor portable = NanTensor({rows, 32});
    Tensor tiled = NanTensor({rows, 32});
    internal::PackedMatmul(internal::kPortableKernel, x.data<float>(), rows, 530, w.raw_data(),
                           w.dtype(), 2, portable.data<float>(), 32);
    internal::PackedMatmul(kernel, x.data<float>(), rows, 530, w.raw_data(), w.dtype(), 2,
                           tiled.data<float>(), 32);
    std::vector<double> expected(portable.data<float>(), portable.data<float>() + portable.numel());
    SCOPED_TRACE(::testing::Message() << kernel.name << ", " << rows << " rows");
    ExpectAllNear(tiled, expected, 1e-4);
  }
}

TEST(PackedLinearTest, Avx2TilesMatchThePortableOnes) {
  if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "this CPU has no AVX2 + FMA";
  ExpectKernelMatchesPortable(internal::kAvx2Kernel);
}

TEST(PackedLinearTest, Avx512TilesMatchThePortableOnes) {
  if (!internal::CpuHasAvx512f()) GTEST_SKIP() << "this CPU has no AVX-512F";
  ExpectKernelMatchesPortable(internal::kAvx512Kernel);
}

TEST(PackedLinearTest, Avx2AndAvx512GiveBitwiseTheSameOutputs) {
  // Both fuse one multiply-add per k in the same order: a model gives the same tokens on either.
  if (!internal::CpuHasAvx512f() || !internal::CpuHasAvx2Fma()) {
    GTEST_SKIP() << "this CPU lacks AVX2 + FMA or AVX-512F";
  }
  std::mt19937 rng(38);
  Tensor w = PackLinearWeight(RandomTensor({64, 2100}, rng));
  Tensor x = RandomTensor({33, 2100}, rng);
  Tensor avx2 = NanTensor({33, 64});
  Tensor avx512 = NanTensor({33, 64});
  internal::PackedMatmul(internal::kAvx2Kernel, x.data<float>(), 33, 2100, w.raw_data(),
                         w.dtype(), 4, avx2.data<float>(), 64);
  internal::PackedMatmul(internal::kAvx512Kernel, x.data<float>(), 33, 2100, w.raw_data(),
                         w.dtype(), 4, avx512.data<float>(), 64);
  for (int64_t i = 0; i < avx2.numel(); ++i) {
    ASSERT_EQ(avx2.data<float>()[i], avx512.data<float>()[i]) << "element " << i;
  }
}

// bf16 panels are widened exactly, so every kernel gives bitwise the outputs it gives on the f32
// panels of the same (bf16-valued) weights, on every row count and across depth blocks.
TEST(PackedLinearTest, Bf16PanelsGiveBitwiseTheOutputsOfF32PanelsOnEveryKernel) {
  std::mt19937 rng(39);
  Tensor weights = RandomTensor({48, 2100}, rng);
  for (int64_t i = 0; i < weights.numel(); ++i) {
    weights.data<float>()[i] = RoundToBf16(weights.data<float>()[i]);
  }
  const Tensor f32 = PackLinearWeight(weights);
  const Tensor bf16 = PackLinearWeight(weights, DType::kBF16);
  ASSERT_EQ(bf16.dtype(), DType::kBF16);
  ASSERT_EQ(bf16.shape(), f32.shape());
  std::vector<const internal::PanelKernel*> kernels = {&internal::kPortableKernel};
  if (internal::CpuHasAvx2Fma()) kernels.push_back(&internal::kAvx2Kernel);
  if (internal::CpuHasAvx512f()) kernels.push_back(&internal::kAvx512Kernel);
  for (const internal::PanelKernel* kernel : kernels) {
    for (int64_t rows : {1, 5, 16, 37}) {
      Tensor x = RandomTensor({rows, 2100}, rng);
      Tensor from_f32 = NanTensor({rows, 48});
      Tensor from_bf16 = NanTensor({rows, 48});
      internal::PackedMatmul(*kernel, x.data<float>(), rows, 2100, f32.raw_data(), DType::kF32, 3,
                             from_f32.data<float>(), 48);
      internal::PackedMatmul(*kernel, x.data<float>(), rows, 2100, bf16.raw_data(), DType::kBF16,
                             3, from_bf16.data<float>(), 48);
      for (int64_t i = 0; i < from_f32.numel(); ++i) {
        ASSERT_EQ(from_bf16.data<float>()[i], from_f32.data<float>()[i])
            << kernel->name << ", " << rows << " rows, element " << i;
      }
    }
  }
}

// A one-row step runs kRowPanels panels at a time (independent sums, for decode speed); every
// output must still be bitwise what the same row gives inside a batch, remainder panels and depth
// blocks (2100 > 2048) included, on f32 and bf16 panels.
TEST(PackedLinearTest, OneRowOverManyPanelsEqualsItsRowInABatchBitwise) {
  std::mt19937 rng(41);
  Tensor weights = RandomTensor({16 * 10, 2100}, rng);
  for (int64_t i = 0; i < weights.numel(); ++i) {
    weights.data<float>()[i] = RoundToBf16(weights.data<float>()[i]);
  }
  std::vector<const internal::PanelKernel*> kernels = {&internal::kPortableKernel};
  if (internal::CpuHasAvx2Fma()) kernels.push_back(&internal::kAvx2Kernel);
  if (internal::CpuHasAvx512f()) kernels.push_back(&internal::kAvx512Kernel);
  Tensor x = RandomTensor({9, 2100}, rng);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Tensor w = PackLinearWeight(weights, dtype);
    for (const internal::PanelKernel* kernel : kernels) {
      Tensor batch = NanTensor({9, 160});
      internal::PackedMatmul(*kernel, x.data<float>(), 9, 2100, w.raw_data(), dtype, 10,
                             batch.data<float>(), 160);
      for (int64_t r : {0, 8}) {
        Tensor alone = NanTensor({1, 160});
        internal::PackedMatmul(*kernel, x.data<float>() + r * 2100, 1, 2100, w.raw_data(), dtype,
                               10, alone.data<float>(), 160);
        for (int64_t j = 0; j < 160; ++j) {
          ASSERT_EQ(alone.data<float>()[j], batch.data<float>()[r * 160 + j])
              << kernel->name << " " << DTypeName(dtype) << ", row " << r << ", output " << j;
        }
      }
    }
  }
}

TEST(PackedLinearTest, ABf16PackedWeightThroughLinearAndItsRowsReadBack) {
  std::mt19937 rng(40);
  Tensor weights = RandomTensor({32, 24}, rng);
  for (int64_t i = 0; i < weights.numel(); ++i) {
    weights.data<float>()[i] = RoundToBf16(weights.data<float>()[i]);
  }
  const Tensor bf16 = PackLinearWeight(weights, DType::kBF16);
  EXPECT_TRUE(IsPackedLinearWeight(bf16));
  EXPECT_EQ(bf16.nbytes() * 2, PackLinearWeight(weights).nbytes());
  Tensor x = RandomTensor({3, 24}, rng);
  Tensor y = NanTensor({3, 32});
  Linear(x, bf16, y);
  ExpectAllNear(y, ReferenceLinear(x, weights), 1e-5);
  std::vector<float> row(24);
  CopyLinearWeightRow(bf16, 17, row.data());
  for (int64_t k = 0; k < 24; ++k) EXPECT_EQ(row[k], weights.data<float>()[17 * 24 + k]);
}

// The bf16 engines of --cpu-precision bf16 against a double reference over the bf16-rounded x and
// weights: their products are exact, so only the order of the f32 sums differs. Row counts cover
// whole tiles, a remainder and several tiles; an odd number of panels covers AMX's pairs.
TEST(PackedLinearTest, Bf16EnginesMatchAReferenceOverRoundedInputs) {
  std::vector<internal::Bf16Engine> engines;
  if (internal::CpuHasAmxBf16()) engines.push_back(internal::Bf16Engine::kAmx);
  if (internal::CpuHasAvx512Bf16()) engines.push_back(internal::Bf16Engine::kAvx512Bf16);
  if (engines.empty()) GTEST_SKIP() << "this CPU has neither AMX-BF16 nor AVX512-BF16";
  std::mt19937 rng(42);
  Tensor weights = RandomTensor({80, 96}, rng);
  for (int64_t i = 0; i < weights.numel(); ++i) {
    weights.data<float>()[i] = RoundToBf16(weights.data<float>()[i]);
  }
  const Tensor w = PackLinearWeight(weights, DType::kBF16);
  for (internal::Bf16Engine engine : engines) {
    for (int64_t rows : {16, 17, 40}) {
      Tensor x = RandomTensor({rows, 96}, rng);
      Tensor rounded = Tensor::Empty(DType::kF32, x.shape());
      for (int64_t i = 0; i < x.numel(); ++i) {
        rounded.data<float>()[i] = RoundToBf16(x.data<float>()[i]);
      }
      Tensor y = NanTensor({rows, 80});
      internal::PackedMatmulBf16(engine, x.data<float>(), rows, 96, w.raw_data(), 5,
                                 y.data<float>(), 80);
      SCOPED_TRACE(::testing::Message() << internal::Bf16EngineName(engine) << ", " << rows
                                        << " rows");
      ExpectAllNear(y, ReferenceLinear(rounded, weights), 1e-4);
    }
  }
}

TEST(PackedLinearTest, CpuPrecisionBf16RoundsOnlyLargeStepsOnBf16Panels) {
  if (internal::Bf16EngineFor(nullptr).value() == internal::Bf16Engine::kNone) {
    GTEST_SKIP() << "this CPU has no bf16 engine";
  }
  std::mt19937 rng(43);
  Tensor weights = RandomTensor({32, 64}, rng);
  for (int64_t i = 0; i < weights.numel(); ++i) {
    weights.data<float>()[i] = RoundToBf16(weights.data<float>()[i]);
  }
  const Tensor w = PackLinearWeight(weights, DType::kBF16);
  Tensor x = RandomTensor({kBf16MinRows, 64}, rng);
  Tensor exact = NanTensor({kBf16MinRows, 32});
  Linear(x, w, exact);
  ASSERT_TRUE(SetCpuPrecision(DType::kBF16).ok());
  Tensor rounded = NanTensor({kBf16MinRows, 32});
  Linear(x, w, rounded);
  Tensor small = NanTensor({kBf16MinRows - 1, 32});
  Linear(x.Rows(kBf16MinRows - 1), w, small);
  ASSERT_TRUE(SetCpuPrecision(DType::kF32).ok());
  bool any_different = false;
  for (int64_t i = 0; i < exact.numel(); ++i) {
    any_different |= rounded.data<float>()[i] != exact.data<float>()[i];
    EXPECT_NEAR(rounded.data<float>()[i], exact.data<float>()[i], 0.1);
  }
  EXPECT_TRUE(any_different) << "bf16 compute rounded nothing";
  for (int64_t i = 0; i < small.numel(); ++i) {
    ASSERT_EQ(small.data<float>()[i], exact.data<float>()[i]) << "a small step left exact";
  }
  EXPECT_FALSE(SetCpuPrecision(DType::kF16).ok());
}

TEST(PackedLinearTest, IsaCapsChooseTheBf16Engine) {
  EXPECT_EQ(internal::Bf16EngineFor("avx512").value(), internal::Bf16Engine::kNone);
  EXPECT_EQ(internal::Bf16EngineFor("portable").value(), internal::Bf16Engine::kNone);
  EXPECT_EQ(internal::Bf16EngineFor("avx512bf16").value(),
            internal::CpuHasAvx512Bf16() ? internal::Bf16Engine::kAvx512Bf16
                                         : internal::Bf16Engine::kNone);
  EXPECT_EQ(internal::Bf16EngineFor(nullptr).value(),
            internal::CpuHasAmxBf16()      ? internal::Bf16Engine::kAmx
            : internal::CpuHasAvx512Bf16() ? internal::Bf16Engine::kAvx512Bf16
                                           : internal::Bf16Engine::kNone);
  // The exact tiles under the bf16 caps are the AVX-512 ones.
  EXPECT_EQ(internal::PanelKernelFor("amx").value(), internal::PanelKernelFor("avx512").value());
  EXPECT_FALSE(internal::Bf16EngineFor("amx512").ok());
}

TEST(PackedLinearTest, MaxCpuIsaCapsTheKernelAndRejectsUnknownNames) {
  EXPECT_EQ(internal::PanelKernelFor("portable").value(), &internal::kPortableKernel);
  EXPECT_EQ(internal::PanelKernelFor("avx2").value(), internal::CpuHasAvx2Fma()
                                                          ? &internal::kAvx2Kernel
                                                          : &internal::kPortableKernel);
  const internal::PanelKernel* best = internal::PanelKernelFor(nullptr).value();
  EXPECT_EQ(internal::PanelKernelFor("").value(), best);
  EXPECT_EQ(internal::PanelKernelFor("avx512").value(), best);
  EXPECT_EQ(best, internal::CpuHasAvx512f()  ? &internal::kAvx512Kernel
                  : internal::CpuHasAvx2Fma() ? &internal::kAvx2Kernel
                                              : &internal::kPortableKernel);
  const absl::StatusOr<const internal::PanelKernel*> unknown = internal::PanelKernelFor("sse9");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("sse9"), std::string_view::npos);
}

using LinearDeathTest = test_util::ThreadsafeDeathTest;

TEST_F(LinearDeathTest, PackedWeightOfAnotherDepthDies) {
  Tensor x = Tensor::Zeros(DType::kF32, {2, 8});
  Tensor w = PackLinearWeight(Tensor::Zeros(DType::kF32, {16, 7}));
  Tensor y = Tensor::Empty(DType::kF32, {2, 16});
  EXPECT_DEATH(Linear(x, w, y), "Linear: x");
}

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
