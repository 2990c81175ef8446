// The forward pass's seam: the workspace it is sized with holds a full step exactly; named
// intermediates of two implementations of a step (the portable and the vectorised CPU kernels) are
// compared one by one, and a change in one layer is named by (intermediate, layer); a bf16 KV
// cache stays within the golden tolerance for bf16 computation.
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ops/copy.h"
#include "ops/linear.h"
#include "tests/model/golden_reference.h"
#include "tests/model/intermediate_recorder.h"
#include "tests/model/tiny_model.h"

namespace gemmaserve::testing {
namespace {

class ForwardTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ForwardTest, AFullStepFillsTheWorkspaceExactlyAndSmallerStepsFit) {
  const model::StepLimits limits = {/*max_tokens=*/40, /*max_logits_rows=*/40};
  auto tiny = TinyModel::Load(GetParam(), limits);
  const int64_t capacity = tiny->model->workspace().capacity_bytes();
  EXPECT_EQ(capacity, tiny->model->WorkspaceBytes(limits));
  model::ForwardBatch batch;
  // A step of 40 tokens, each with logits: what the workspace was sized for.
  tiny->Step(std::vector<int32_t>(40, 7), 0, /*all_logits=*/true, batch);
  tiny->model->Forward(batch, *tiny->cache);
  EXPECT_EQ(tiny->model->workspace().high_water_bytes(), capacity);
  // Smaller steps (a decode, a chunk after cached tokens) never need more.
  tiny->Step({3}, 40, false, batch);
  tiny->model->Forward(batch, *tiny->cache);
  tiny->Step(std::vector<int32_t>(17, 5), 41, true, batch);
  tiny->model->Forward(batch, *tiny->cache);
  EXPECT_EQ(tiny->model->workspace().num_overflows(), 0);
  // A larger one still runs, on extra memory.
  tiny->Step(std::vector<int32_t>(50, 9), 58, true, batch);
  const Tensor logits = tiny->model->Forward(batch, *tiny->cache);
  EXPECT_EQ(logits.dim(0), 50);
  EXPECT_GT(tiny->model->workspace().num_overflows(), 0);
}

// One prefill of golden sequence 1 with every intermediate recorded.
IntermediateRecorder RecordPrefill(TinyModel& tiny, const std::vector<int32_t>& prompt) {
  IntermediateRecorder recorder;
  tiny.model->set_observer(recorder.Observer());
  model::ForwardBatch batch;
  tiny.Step(prompt, 0, /*all_logits=*/true, batch);
  tiny.model->Forward(batch, *tiny.cache);
  tiny.model->set_observer(nullptr);
  return recorder;
}

class KernelCap {
 public:
  explicit KernelCap(const std::string& isa) { EXPECT_TRUE(ops::SetMaxCpuIsa(isa).ok()); }
  ~KernelCap() { EXPECT_TRUE(ops::SetMaxCpuIsa("").ok()); }
};

TEST_P(ForwardTest, PortableAndVectorisedKernelsAgreeAtEveryIntermediate) {
  // The portable tile multiplies and adds separately, the AVX2 and AVX-512 tiles fuse them, in
  // the same order: f32 rounding apart between the two kinds, bitwise equal within the second.
  const std::vector<int32_t> prompt = LoadGoldenReference(GetParam()).inputs[1];
  auto portable = TinyModel::Load(GetParam());
  IntermediateRecorder reference;
  {
    KernelCap cap("portable");
    reference = RecordPrefill(*portable, prompt);
  }
  ASSERT_GT(reference.entries().size(), 3u * portable->model->weights().layers.size());
  for (const char* isa : {"avx2", "avx512"}) {
    auto vectorised = TinyModel::Load(GetParam());
    KernelCap cap(isa);
    const IntermediateRecorder fast = RecordPrefill(*vectorised, prompt);
    const std::optional<Divergence> divergence = FirstDivergence(reference, fast, 1e-5);
    EXPECT_FALSE(divergence.has_value())
        << divergence->name << " of layer " << divergence->layer << " differs by "
        << divergence->max_abs_diff << " (" << ops::CpuKernelName() << " vs portable)";
    if (std::string(ops::CpuKernelName()) != "avx512") continue;
    auto avx2 = TinyModel::Load(GetParam());
    KernelCap avx2_cap("avx2");
    const std::optional<Divergence> apart =
        FirstDivergence(RecordPrefill(*avx2, prompt), fast, 0.0);
    EXPECT_FALSE(apart.has_value()) << apart->name << " of layer " << apart->layer
                                    << " differs by " << apart->max_abs_diff << " (avx2 vs avx512)";
  }
}

TEST_P(ForwardTest, AChangeInOneLayerIsNamedByItsFirstIntermediate) {
  const std::vector<int32_t> prompt = LoadGoldenReference(GetParam()).inputs[1];
  auto original = TinyModel::Load(GetParam());
  // Layer 2's k_norm weight scaled by 1.01: its keys are the first thing to change.
  model::Gemma4Config config;
  model::ModelWeights weights = LoadTinyWeights(GetParam(), config);
  Tensor& k_norm = weights.layers[2].attention.k_norm;
  for (int64_t i = 0; i < k_norm.numel(); ++i) k_norm.data<float>()[i] *= 1.01f;
  TinyModel changed(std::move(weights), std::move(config));
  const std::optional<Divergence> divergence =
      FirstDivergence(RecordPrefill(*original, prompt), RecordPrefill(changed, prompt), 1e-5);
  ASSERT_TRUE(divergence.has_value());
  EXPECT_EQ(divergence->name, "k");
  EXPECT_EQ(divergence->layer, 2);
}

TEST_P(ForwardTest, Bf16KvCacheStaysWithinTheBf16ComputeTolerance) {
  // The golden criterion for bf16 computation: within 1.5 × the reference's own bf16 error
  // (bf16_vs_f32_last_max_abs_diff) + 0.01 at the last position. A bf16 KV cache alone rounds
  // far less than bf16 computation, so it must stay inside that.
  const GoldenReference ref = LoadGoldenReference(GetParam());
  std::ifstream in("tests/data/ref/" + GetParam() + ".json");
  const nlohmann::json json = nlohmann::json::parse(in);
  auto tiny = TinyModel::Load(GetParam(), {}, DType::kBF16);
  for (size_t s = 0; s < ref.inputs.size(); ++s) {
    model::ForwardBatch batch;
    tiny->Step(ref.inputs[s], 0, false, batch);
    const Tensor logits = ops::ToHost(tiny->model->Forward(batch, *tiny->cache));
    const double error = MaxAbsDiff(logits.data<float>(), ref.last_logits[s].data(),
                                    ref.last_logits[s].size());
    const double bf16_error = json["sequences"][s]["bf16_vs_f32_last_max_abs_diff"];
    EXPECT_LE(error, 1.5 * bf16_error + 0.01) << "sequence " << s;
    ::testing::Test::RecordProperty("bf16_kv_max_abs_diff_seq" + std::to_string(s),
                                    std::to_string(error));
    std::printf("%s sequence %zu: bf16 KV cache max |Δlogit| %.2e (bf16 compute %.2e)\n",
                GetParam().c_str(), s, error, bf16_error);
  }
}

TEST_P(ForwardTest, CpuBf16PrecisionStaysWithinTheBf16ComputeTolerance) {
  // --cpu-precision bf16 rounds the inputs of large matmuls to bf16 (AMX or AVX512-BF16): held to
  // the golden criterion for bf16 computation, 1.5 × the reference's own bf16 error + 0.01.
  if (std::string(ops::CpuBf16EngineName()) == "none") {
    GTEST_SKIP() << "this CPU has no bf16 engine (AMX-BF16 or AVX512-BF16)";
  }
  const GoldenReference ref = LoadGoldenReference(GetParam());
  std::ifstream in("tests/data/ref/" + GetParam() + ".json");
  const nlohmann::json json = nlohmann::json::parse(in);
  auto tiny = TinyModel::Load(GetParam());
  struct BackToF32 {
    ~BackToF32() { EXPECT_TRUE(ops::SetCpuPrecision(DType::kF32).ok()); }
  } back_to_f32;
  ASSERT_TRUE(ops::SetCpuPrecision(DType::kBF16).ok());
  for (size_t s = 0; s < ref.inputs.size(); ++s) {
    model::ForwardBatch batch;
    // Every position's logits: the prompt's rows go through the bf16 engine (16 rows or more).
    tiny->Step(ref.inputs[s], 0, true, batch);
    const Tensor logits = ops::ToHost(tiny->model->Forward(batch, *tiny->cache));
    const int64_t vocab = logits.dim(1);
    const double error =
        MaxAbsDiff(logits.data<float>() + (logits.dim(0) - 1) * vocab, ref.last_logits[s].data(),
                   static_cast<size_t>(vocab));
    const double bf16_error = json["sequences"][s]["bf16_vs_f32_last_max_abs_diff"];
    EXPECT_LE(error, 1.5 * bf16_error + 0.01) << "sequence " << s;
    std::printf("%s sequence %zu (%zu tokens): --cpu-precision bf16 (%s) max |Δlogit| %.2e "
                "(bf16 compute %.2e)\n",
                GetParam().c_str(), s, ref.inputs[s].size(), ops::CpuBf16EngineName(), error,
                bf16_error);
  }
}

INSTANTIATE_TEST_SUITE_P(TinyModels, ForwardTest,
                         ::testing::ValuesIn(TinyModelNames()), TinyModelTestName());

}  // namespace
}  // namespace gemmaserve::testing
