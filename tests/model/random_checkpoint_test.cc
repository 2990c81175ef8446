#include "model/random_checkpoint.h"

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace gemmaserve::model {
namespace {

using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    std::string pattern = absl::StrCat(::testing::TempDir(), "/random_checkpoint_test_XXXXXX");
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

int64_t NumParameters(const Gemma4Config& config) {
  int64_t total = 0;
  for (const TextTensorSpec& spec : TextTensorSpecs(config)) total += NumElements(spec.shape);
  return total;
}

Gemma4Config Preset(const std::string& name, int64_t num_layers = 0) {
  absl::StatusOr<Gemma4Config> config = RandomCheckpointPreset(name, num_layers);
  CHECK(config.ok()) << config.status();
  return *config;
}

TEST(RandomCheckpointTest, TinyMoeWithTwoLayersOpensWithEveryTensor) {
  TempDir dir;
  const Gemma4Config config = Preset("tiny-moe", 2);
  ASSERT_EQ(config.layer_types, (std::vector<LayerKind>{LayerKind::kSliding, LayerKind::kFull}));
  absl::StatusOr<SafetensorsWriteSummary> summary =
      WriteRandomCheckpoint(config, dir.path(), RandomCheckpointOptions{.seed = 7});
  ASSERT_TRUE(summary.ok()) << summary.status();

  absl::StatusOr<Gemma4Config> read_config = Gemma4Config::FromModelDir(dir.path());
  ASSERT_TRUE(read_config.ok()) << read_config.status();
  EXPECT_EQ(read_config->num_hidden_layers, 2);
  EXPECT_EQ(read_config->hidden_size, 128);
  EXPECT_EQ(read_config->num_experts, 8);
  EXPECT_EQ(read_config->layer_types, config.layer_types);
  EXPECT_EQ(read_config->eos_token_ids, (std::vector<int64_t>{1, 106}));

  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const std::vector<TextTensorSpec> specs = TextTensorSpecs(*read_config);
  EXPECT_EQ(checkpoint->TensorNames().size(), specs.size());
  for (const TextTensorSpec& spec : specs) {
    absl::StatusOr<Tensor> tensor = checkpoint->Get(spec.name, spec.shape);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ(tensor->dtype(), DType::kBF16);
  }
  EXPECT_TRUE(checkpoint->Contains("model.language_model.layers.1.experts.gate_up_proj"));
  EXPECT_FALSE(checkpoint->Contains("model.language_model.layers.1.self_attn.v_proj.weight"));
  EXPECT_TRUE(checkpoint->Contains("model.language_model.layers.0.self_attn.v_proj.weight"));
  EXPECT_FALSE(checkpoint->Contains("lm_head.weight"));
}

TEST(RandomCheckpointTest, ValuesAreFiniteAndInTheirRanges) {
  TempDir dir;
  const Gemma4Config config = Preset("tiny-dense");
  ASSERT_TRUE(WriteRandomCheckpoint(config, dir.path(), {}).ok());
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  for (const TextTensorSpec& spec : TextTensorSpecs(config)) {
    absl::StatusOr<Tensor> tensor = checkpoint->Get(spec.name);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    const Tensor values = tensor->ToF32();
    float low = INFINITY, high = -INFINITY;
    for (int64_t i = 0; i < values.numel(); ++i) {
      low = std::min(low, values.data<float>()[i]);
      high = std::max(high, values.data<float>()[i]);
    }
    // Bounds allow for the rounding to bf16 (8 significant bits).
    switch (spec.init) {
      case WeightInit::kLinear:
        EXPECT_GE(low, -0.035f) << spec.name;
        EXPECT_LE(high, 0.035f) << spec.name;
        EXPECT_LT(low, 0.0f) << spec.name;
        EXPECT_GT(high, 0.0f) << spec.name;
        break;
      case WeightInit::kNearOne:
        EXPECT_GE(low, 0.79f) << spec.name;
        EXPECT_LE(high, 1.21f) << spec.name;
        break;
      case WeightInit::kLayerScalar:
        EXPECT_GT(low, 0.5f) << spec.name;
        EXPECT_LT(high, 1.0f) << spec.name;
        break;
    }
  }
}

TEST(RandomCheckpointTest, SameSeedSameBytesOtherSeedOtherBytes) {
  TempDir a, b, c;
  const Gemma4Config config = Preset("tiny-moe", 1);
  ASSERT_TRUE(WriteRandomCheckpoint(config, a.path(), RandomCheckpointOptions{.seed = 1}).ok());
  ASSERT_TRUE(WriteRandomCheckpoint(config, b.path(), RandomCheckpointOptions{.seed = 1}).ok());
  ASSERT_TRUE(WriteRandomCheckpoint(config, c.path(), RandomCheckpointOptions{.seed = 2}).ok());
  const std::string name = "model.language_model.layers.0.experts.down_proj";
  absl::StatusOr<Checkpoint> ca = Checkpoint::Open(a.path());
  absl::StatusOr<Checkpoint> cb = Checkpoint::Open(b.path());
  absl::StatusOr<Checkpoint> cc = Checkpoint::Open(c.path());
  ASSERT_TRUE(ca.ok() && cb.ok() && cc.ok());
  const Tensor ta = *ca->Get(name), tb = *cb->Get(name), tc = *cc->Get(name);
  EXPECT_EQ(std::memcmp(ta.raw_data(), tb.raw_data(), ta.nbytes()), 0);
  EXPECT_NE(std::memcmp(ta.raw_data(), tc.raw_data(), ta.nbytes()), 0);
}

TEST(RandomCheckpointTest, LargeCheckpointsAreShardedWithAnIndex) {
  TempDir dir;
  const Gemma4Config config = Preset("tiny-moe");
  absl::StatusOr<SafetensorsWriteSummary> summary = WriteRandomCheckpoint(
      config, dir.path(), RandomCheckpointOptions{.max_shard_bytes = 256 << 10});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_GT(summary->files.size(), 3u);
  EXPECT_TRUE(std::filesystem::exists(absl::StrCat(dir.path(), "/model.safetensors.index.json")));
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  for (const TextTensorSpec& spec : TextTensorSpecs(config)) {
    EXPECT_TRUE(checkpoint->Get(spec.name, spec.shape).ok()) << spec.name;
  }
}

TEST(RandomCheckpointPresetTest, TinyPresetsMatchTheGoldenConfigs) {
  for (const std::string name : {"tiny-dense", "tiny-moe"}) {
    absl::StatusOr<Gemma4Config> golden =
        Gemma4Config::FromModelDir(absl::StrCat("tests/data/gemma4-", name));
    ASSERT_TRUE(golden.ok()) << golden.status();
    const Gemma4Config preset = Preset(name);
    EXPECT_EQ(preset.layer_types, golden->layer_types) << name;
    EXPECT_EQ(preset.vocab_size, golden->vocab_size) << name;
    EXPECT_EQ(preset.sliding_window, golden->sliding_window) << name;
    const std::vector<TextTensorSpec> want = TextTensorSpecs(*golden);
    const std::vector<TextTensorSpec> got = TextTensorSpecs(preset);
    ASSERT_EQ(got.size(), want.size()) << name;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].name, want[i].name);
      EXPECT_EQ(got[i].shape, want[i].shape) << got[i].name;
    }
  }
}

TEST(RandomCheckpointPresetTest, RealPresetsHaveTheRealSizes) {
  // GEMMA4.md §3: 31B ≈ 30.7 B parameters. 26B-A4B ≈ 25.2 B in total.
  EXPECT_NEAR(static_cast<double>(NumParameters(Preset("31b"))), 30.7e9, 0.1e9);
  EXPECT_NEAR(static_cast<double>(NumParameters(Preset("26b-a4b"))), 25.2e9, 0.3e9);
  const Gemma4Config moe = Preset("26b-a4b");
  EXPECT_EQ(moe.NumLayersOfKind(LayerKind::kFull), 5);
  EXPECT_EQ(moe.layers[5].kind, LayerKind::kFull);
  EXPECT_FALSE(moe.layers[5].has_v_proj);
}

TEST(RandomCheckpointPresetTest, BenchPresetsAreOneAndAHalfToTwoAndAHalfGigabytes) {
  for (const std::string name : {"bench-dense", "bench-moe"}) {
    const Gemma4Config config = Preset(name);
    const double bytes = 2.0 * static_cast<double>(NumParameters(config));
    EXPECT_GE(bytes, 1.5e9) << name;
    EXPECT_LE(bytes, 2.5e9) << name;
    EXPECT_EQ(config.vocab_size, 262144);
    EXPECT_EQ(config.head_dim, 256);
    EXPECT_EQ(config.global_head_dim, 512);
    EXPECT_EQ(config.layer_types.back(), LayerKind::kFull);
  }
}

TEST(RandomCheckpointPresetTest, LayerOverrideKeepsThePatternWithTheLastLayerFull) {
  const Gemma4Config config = Preset("31b", 8);
  EXPECT_EQ(config.num_hidden_layers, 8);
  std::vector<LayerKind> want(8, LayerKind::kSliding);
  want[5] = LayerKind::kFull;
  want[7] = LayerKind::kFull;
  EXPECT_EQ(config.layer_types, want);
}

TEST(RandomCheckpointPresetTest, UnknownPresetListsTheKnownOnes) {
  const absl::Status status = RandomCheckpointPreset("70b").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("\"70b\""));
  EXPECT_THAT(status.message(), HasSubstr("bench-dense"));
  EXPECT_EQ(RandomCheckpointPreset("31b", -1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gemmaserve::model
