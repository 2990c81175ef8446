#include "model/checkpoint.h"

#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/config.h"
#include "model/random_checkpoint.h"
#include "model/safetensors_writer.h"

namespace gemmaserve::model {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kLanguageModel[] = "model.language_model.";

// A fresh directory under the test temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = absl::StrCat(::testing::TempDir(), "/checkpoint_test_XXXXXX");
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
};

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A safetensors file by hand: 8-byte little-endian header length, header, data.
std::string RawSafetensors(const std::string& header, const std::string& data, uint64_t length) {
  std::string bytes(8, '\0');
  for (int b = 0; b < 8; ++b) bytes[b] = static_cast<char>((length >> (8 * b)) & 0xff);
  return bytes + header + data;
}
std::string RawSafetensors(const std::string& header, const std::string& data) {
  return RawSafetensors(header, data, header.size());
}

Tensor F32Tensor(Shape shape, float first) {
  Tensor tensor = Tensor::Empty(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < tensor.numel(); ++i)
    tensor.data<float>()[i] = first + static_cast<float>(i);
  return tensor;
}

// ---- The golden tiny checkpoints ----------------------------------------------------------------

class GoldenCheckpointTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return absl::StrCat("tests/data/", GetParam()); }
};

TEST_P(GoldenCheckpointTest, HoldsEveryTextTensorWithItsShape) {
  absl::StatusOr<Gemma4Config> config = Gemma4Config::FromModelDir(dir());
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();

  std::set<std::string> expected_names;
  for (const TextTensorSpec& spec : TextTensorSpecs(*config)) {
    expected_names.insert(spec.name);
    absl::StatusOr<Tensor> tensor = checkpoint->Get(spec.name, spec.shape);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ(tensor->dtype(), DType::kBF16) << spec.name;
  }
  std::set<std::string> text_names;
  for (const std::string& name : checkpoint->TensorNames()) {
    if (name.rfind(kLanguageModel, 0) == 0) text_names.insert(name);
  }
  EXPECT_EQ(text_names, expected_names);
  EXPECT_FALSE(checkpoint->Contains("lm_head.weight"));  // tied to the embedding
}

TEST_P(GoldenCheckpointTest, ShapesFollowTheConfigGeometry) {
  absl::StatusOr<Gemma4Config> config = Gemma4Config::FromModelDir(dir());
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const int64_t h = config->hidden_size;
  const int64_t nq = config->num_attention_heads;
  auto layer = [](int64_t i, const std::string& suffix) {
    return absl::StrCat("model.language_model.layers.", i, ".", suffix);
  };
  // Layer 0 is sliding; the last layer is full and K=V (no v_proj).
  const int64_t last = config->num_hidden_layers - 1;
  const int64_t hd = config->head_dim;
  const int64_t ghd = config->global_head_dim;
  EXPECT_TRUE(checkpoint->Get(layer(0, "self_attn.q_proj.weight"), {nq * hd, h}).ok());
  EXPECT_TRUE(
      checkpoint->Get(layer(0, "self_attn.v_proj.weight"), {config->num_key_value_heads * hd, h})
          .ok());
  EXPECT_TRUE(checkpoint->Get(layer(last, "self_attn.o_proj.weight"), {h, nq * ghd}).ok());
  EXPECT_TRUE(checkpoint
                  ->Get(layer(last, "self_attn.k_proj.weight"),
                        {config->num_global_key_value_heads * ghd, h})
                  .ok());
  EXPECT_FALSE(checkpoint->Contains(layer(last, "self_attn.v_proj.weight")));
  EXPECT_TRUE(checkpoint->Get(layer(last, "layer_scalar"), {1}).ok());
  if (config->is_moe()) {
    const int64_t e = config->num_experts;
    const int64_t i_moe = config->moe_intermediate_size;
    EXPECT_TRUE(checkpoint->Get(layer(0, "experts.gate_up_proj"), {e, 2 * i_moe, h}).ok());
    EXPECT_TRUE(checkpoint->Get(layer(0, "experts.down_proj"), {e, h, i_moe}).ok());
    EXPECT_TRUE(checkpoint->Get(layer(0, "router.proj.weight"), {e, h}).ok());
    EXPECT_TRUE(checkpoint->Get(layer(0, "router.per_expert_scale"), {e}).ok());
  }
}

TEST_P(GoldenCheckpointTest, TensorDataIsTheFileBytes) {
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const std::string name = "model.language_model.embed_tokens.weight";
  absl::StatusOr<TensorInfo> info = checkpoint->Info(name);
  ASSERT_TRUE(info.ok()) << info.status();
  absl::StatusOr<Tensor> tensor = checkpoint->Get(name);
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  const std::string bytes = ReadBytes(info->file);
  ASSERT_LE(info->offset_bytes + info->size_bytes, bytes.size());
  EXPECT_EQ(info->size_bytes, tensor->nbytes());
  uint16_t first_in_file;
  std::memcpy(&first_in_file, bytes.data() + info->offset_bytes, sizeof(first_in_file));
  EXPECT_EQ(tensor->data<uint16_t>()[0], first_in_file);
  EXPECT_EQ(std::memcmp(tensor->raw_data(), bytes.data() + info->offset_bytes, info->size_bytes),
            0);
}

TEST_P(GoldenCheckpointTest, VisionTensorsAreReadableButNotText) {
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_TRUE(checkpoint->Contains("model.vision_tower.std_scale"));
  EXPECT_TRUE(checkpoint->Get("model.vision_tower.patch_embedder.position_embedding_table").ok());
}

INSTANTIATE_TEST_SUITE_P(TinyModels, GoldenCheckpointTest,
                         ::testing::Values("gemma4-tiny-dense", "gemma4-tiny-moe"));

// ---- Writer round trip --------------------------------------------------------------------------

TEST(SafetensorsWriterTest, SingleFileRoundTripsValuesAndPadsTheHeader) {
  TempDir dir;
  SafetensorsWriter writer;
  const Tensor a = F32Tensor({2, 3}, 1.0f);
  Tensor b = Tensor::Empty(DType::kBF16, {5});
  for (int i = 0; i < 5; ++i) b.data<uint16_t>()[i] = F32ToBf16(0.5f * static_cast<float>(i));
  Tensor c = Tensor::Empty(DType::kI64, {1});
  c.data<int64_t>()[0] = -7;
  ASSERT_TRUE(writer.Add("a", a).ok());
  ASSERT_TRUE(writer.Add("b", b).ok());
  ASSERT_TRUE(writer.Add("c", c).ok());
  absl::StatusOr<SafetensorsWriteSummary> summary = writer.Write(dir.path());
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->files, std::vector<std::string>{dir.File("model.safetensors")});
  EXPECT_EQ(summary->total_tensor_bytes, 24u + 10u + 8u);
  EXPECT_EQ(summary->num_elements, 12);

  const std::string bytes = ReadBytes(dir.File("model.safetensors"));
  uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  EXPECT_EQ(header_length % 8, 0u);

  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->TensorNames(), (std::vector<std::string>{"a", "b", "c"}));
  absl::StatusOr<Tensor> read_a = checkpoint->Get("a", {2, 3});
  ASSERT_TRUE(read_a.ok()) << read_a.status();
  EXPECT_EQ(std::memcmp(read_a->raw_data(), a.raw_data(), a.nbytes()), 0);
  absl::StatusOr<Tensor> read_b = checkpoint->Get("b", {5});
  ASSERT_TRUE(read_b.ok()) << read_b.status();
  EXPECT_EQ(read_b->dtype(), DType::kBF16);
  EXPECT_EQ(std::memcmp(read_b->raw_data(), b.raw_data(), b.nbytes()), 0);
  absl::StatusOr<Tensor> read_c = checkpoint->Get("c");
  ASSERT_TRUE(read_c.ok()) << read_c.status();
  EXPECT_EQ(read_c->data<int64_t>()[0], -7);
}

TEST(SafetensorsWriterTest, ShardsAtTheSizeLimitWithAnIndex) {
  TempDir dir;
  SafetensorsWriter writer(SafetensorsWriterOptions{.max_shard_bytes = 128, .chunk_bytes = 8});
  std::vector<Tensor> tensors;
  for (int i = 0; i < 5; ++i) {
    tensors.push_back(F32Tensor({16}, 100.0f * static_cast<float>(i)));  // 64 bytes each
    ASSERT_TRUE(writer.Add(absl::StrCat("t", i), tensors.back()).ok());
  }
  ASSERT_TRUE(writer.Add("big", F32Tensor({100}, -1.0f)).ok());  // 400 bytes: a shard of its own
  absl::StatusOr<SafetensorsWriteSummary> summary = writer.Write(dir.path());
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->files, (std::vector<std::string>{dir.File("model-00001-of-00004.safetensors"),
                                                      dir.File("model-00002-of-00004.safetensors"),
                                                      dir.File("model-00003-of-00004.safetensors"),
                                                      dir.File("model-00004-of-00004.safetensors"),
                                                      dir.File("model.safetensors.index.json")}));
  const nlohmann::json index =
      nlohmann::json::parse(ReadBytes(dir.File("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], 5 * 64 + 400);
  EXPECT_EQ(index["weight_map"]["t2"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["big"], "model-00004-of-00004.safetensors");

  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->TensorNames().size(), 6u);
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<Tensor> tensor = checkpoint->Get(absl::StrCat("t", i), {16});
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ(std::memcmp(tensor->raw_data(), tensors[i].raw_data(), 64), 0) << i;
  }
  absl::StatusOr<Tensor> big = checkpoint->Get("big", {100});
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->data<float>()[99], 98.0f);
}

TEST(SafetensorsWriterTest, RejectsRepeatedAndReservedNames) {
  SafetensorsWriter writer;
  ASSERT_TRUE(writer.Add("x", F32Tensor({1}, 0.0f)).ok());
  EXPECT_EQ(writer.Add("x", F32Tensor({1}, 0.0f)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(writer.Add("__metadata__", F32Tensor({1}, 0.0f)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(writer.Add("y", DType::kF32, {2, -1}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Bad checkpoints: each is a clear error naming the file (and tensor), never a crash --------

// A directory holding one model.safetensors with tensor "w" = f32[4,4], made by the writer.
class BadCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SafetensorsWriter writer;
    ASSERT_TRUE(writer.Add("w", F32Tensor({4, 4}, 0.0f)).ok());
    ASSERT_TRUE(writer.Write(dir_.path()).ok());
    file_ = dir_.File("model.safetensors");
  }
  absl::Status OpenStatus() const { return Checkpoint::Open(dir_.path()).status(); }
  // Replaces model.safetensors with a hand-made header over `data`.
  void WriteRaw(const std::string& header, const std::string& data) {
    WriteBytes(file_, RawSafetensors(header, data));
  }

  TempDir dir_;
  std::string file_;
};

TEST_F(BadCheckpointTest, TruncatedDataNamesFileAndTensor) {
  const std::string bytes = ReadBytes(file_);
  WriteBytes(file_, bytes.substr(0, bytes.size() - 10));
  const absl::Status status = OpenStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(file_), HasSubstr("tensor w"),
                                      HasSubstr("out of range of the data section (54 bytes)")));
}

TEST_F(BadCheckpointTest, HeaderLengthPastTheEndOfTheFile) {
  WriteBytes(file_, RawSafetensors("{}", "", 1000));
  const absl::Status status = OpenStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(file_), HasSubstr("header length 1000 runs past")));
}

TEST_F(BadCheckpointTest, FileShorterThanTheLengthField) {
  WriteBytes(file_, "abc");
  const absl::Status status = OpenStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(file_), HasSubstr("shorter than the 8-byte")));
}

TEST_F(BadCheckpointTest, EmptyFile) {
  WriteBytes(file_, "");
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr(file_), HasSubstr("is 0 bytes")));
}

TEST_F(BadCheckpointTest, MalformedHeaderJson) {
  WriteRaw(R"({"w": {"dtype": "F32",)", "");
  const absl::Status status = OpenStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(file_), HasSubstr("header is not valid JSON")));
}

TEST_F(BadCheckpointTest, HeaderJsonNotAnObject) {
  WriteRaw("[1, 2]", "");
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr(file_), HasSubstr("not an object")));
}

TEST_F(BadCheckpointTest, EntryNotAnObjectOrMissingFields) {
  WriteRaw(R"({"w": 3})", "");
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr(file_), HasSubstr("tensor w")));
  WriteRaw(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", std::string(4, '\0'));
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr("tensor w"), HasSubstr("no dtype")));
  WriteRaw(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})",
           std::string(4, '\0'));
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr("tensor w"), HasSubstr("non-negative")));
  WriteRaw(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", std::string(4, '\0'));
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr("tensor w"), HasSubstr("two non-negative")));
}

TEST_F(BadCheckpointTest, UnsupportedDtypeFailsOnlyWhenRead) {
  WriteRaw(R"({"model.vision_tower.x": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]},)"
           R"( "odd": {"dtype": "Q9_FANCY", "shape": [2], "data_offsets": [2, 3]},)"
           R"( "ok": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
           std::string(8, '\0'));
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_TRUE(checkpoint->Get("ok").ok());
  EXPECT_TRUE(checkpoint->Contains("model.vision_tower.x"));
  const absl::Status status = checkpoint->Get("model.vision_tower.x").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(file_), HasSubstr("tensor model.vision_tower.x"),
                                      HasSubstr("F8_E4M3")));
  EXPECT_THAT(checkpoint->Info("odd").status().message(),
              AllOf(HasSubstr(file_), HasSubstr("tensor odd"), HasSubstr("Q9_FANCY")));
}

TEST_F(BadCheckpointTest, KnownSizeDtypeWithInconsistentOffsetsFailsTheOpen) {
  WriteRaw(R"({"x": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 2]}})",
           std::string(2, '\0'));
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr("tensor x"), HasSubstr("needs 4")));
}

TEST_F(BadCheckpointTest, OffsetsOutOfRange) {
  WriteRaw(R"({"w": {"dtype": "F32", "shape": [25], "data_offsets": [0, 100]}})",
           std::string(8, '\0'));
  const absl::Status status = OpenStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(file_), HasSubstr("tensor w"),
                                      HasSubstr("data_offsets [0,100] out of range")));
  WriteRaw(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})",
           std::string(8, '\0'));
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr("tensor w"), HasSubstr("out of range")));
}

TEST_F(BadCheckpointTest, OffsetsInconsistentWithShape) {
  WriteRaw(R"({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}})",
           std::string(8, '\0'));
  const absl::Status status = OpenStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(file_), HasSubstr("tensor w"),
                                      HasSubstr("hold 8 bytes, but shape [3] of BF16 needs 6")));
}

TEST_F(BadCheckpointTest, ShapeWhoseByteSizeOverflows) {
  WriteRaw(R"({"w": {"dtype": "F32", "shape": [4611686018427387904, 8], "data_offsets": [0, 8]}})",
           std::string(8, '\0'));
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr("tensor w"), HasSubstr("needs too many")));
}

TEST_F(BadCheckpointTest, MissingTensorNamesTensorAndDirectory) {
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const absl::Status status = checkpoint->Get("model.language_model.norm.weight").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr("tensor model.language_model.norm.weight"), HasSubstr(dir_.path())));
  EXPECT_EQ(checkpoint->Info("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(BadCheckpointTest, WrongShapeNamesBothShapes) {
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const absl::Status status = checkpoint->Get("w", {4, 5}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), absl::StrCat("tensor w in ", file_, ": shape [4,4], expected [4,5]"));
}

TEST(CheckpointOpenTest, NoCheckpointFilesIsNotFoundNamingTheDirectory) {
  TempDir dir;
  absl::Status status = Checkpoint::Open(dir.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(dir.path()));
  status = Checkpoint::Open(dir.File("absent")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(dir.File("absent")));
}

// A sharded checkpoint of three tensors in three shards.
class BadShardedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SafetensorsWriter writer(SafetensorsWriterOptions{.max_shard_bytes = 16});
    for (const char* name : {"a", "b", "c"})
      ASSERT_TRUE(writer.Add(name, F32Tensor({4}, 1.0f)).ok());
    ASSERT_TRUE(writer.Write(dir_.path()).ok());
    index_ = dir_.File("model.safetensors.index.json");
    ASSERT_TRUE(Checkpoint::Open(dir_.path()).ok());
  }
  absl::Status OpenStatus() const { return Checkpoint::Open(dir_.path()).status(); }

  TempDir dir_;
  std::string index_;
};

TEST_F(BadShardedCheckpointTest, ShardNamedInTheIndexButAbsent) {
  const std::string shard = dir_.File("model-00002-of-00003.safetensors");
  std::filesystem::remove(shard);
  const absl::Status status = OpenStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr(shard), HasSubstr(index_), HasSubstr("does not exist")));
}

TEST_F(BadShardedCheckpointTest, TensorListedInTheIndexButMissingFromItsShard) {
  nlohmann::json index = nlohmann::json::parse(ReadBytes(index_));
  index["weight_map"]["ghost"] = "model-00001-of-00003.safetensors";
  WriteBytes(index_, index.dump());
  const absl::Status status = OpenStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), AllOf(HasSubstr("tensor ghost"), HasSubstr(index_),
                                      HasSubstr(dir_.File("model-00001-of-00003.safetensors"))));
}

TEST_F(BadShardedCheckpointTest, MalformedIndex) {
  WriteBytes(index_, R"({"weight_map": {"a": )");
  absl::Status status = OpenStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(index_), HasSubstr("malformed JSON")));
  WriteBytes(index_, R"({"metadata": {}})");
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr(index_), HasSubstr("weight_map")));
  WriteBytes(index_, R"({"weight_map": {"a": 7}})");
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr(index_), HasSubstr("tensor a")));
}

TEST_F(BadShardedCheckpointTest, ShardPathsOutsideTheModelDirectoryAreRefused) {
  // A real shard elsewhere: the index must not be able to point at it.
  TempDir elsewhere;
  std::filesystem::copy_file(dir_.File("model-00001-of-00003.safetensors"),
                             elsewhere.File("model-00001-of-00003.safetensors"));
  const std::string escape =
      "../" + std::filesystem::path(elsewhere.path()).filename().string() +
      "/model-00001-of-00003.safetensors";
  for (const std::string& shard :
       {elsewhere.File("model-00001-of-00003.safetensors"), escape,
        std::string("sub/../../model-00001-of-00003.safetensors"), std::string("")}) {
    SCOPED_TRACE(shard);
    nlohmann::json index = nlohmann::json::parse(ReadBytes(index_));
    index["weight_map"]["a"] = shard;
    WriteBytes(index_, index.dump());
    const absl::Status status = OpenStatus();
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_THAT(status.message(), AllOf(HasSubstr(index_), HasSubstr("tensor a"),
                                        HasSubstr("outside the model directory")));
  }
}

TEST_F(BadShardedCheckpointTest, CorruptShardNamesTheShard) {
  const std::string shard = dir_.File("model-00003-of-00003.safetensors");
  WriteBytes(shard, "1234567");
  EXPECT_THAT(OpenStatus().message(), AllOf(HasSubstr(shard), HasSubstr("shorter than")));
}

}  // namespace
}  // namespace gemmaserve::model
