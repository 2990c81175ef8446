// Each tokenizer.json feature the tokenizer supports, on a small hand-made file, and each one
// it does not support or cannot read: a clear INVALID_ARGUMENT naming it, never a crash.
#include <cstdio>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "text/tokenizer.h"

namespace gemmaserve::text {
namespace {

using Json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Byte tokens 0..255, then a, b, ▁, a▁, a▁b, ab; merges a+▁, a▁+b, a+b. Gemma's pipeline.
Json MinimalTokenizerJson() {
  Json vocab = Json::object();
  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", byte);
    vocab[name] = byte;
  }
  const char* const pieces[] = {"a", "b", "\u2581", "a\u2581", "a\u2581b", "ab", "<s>"};
  for (int i = 0; i < 7; ++i) vocab[pieces[i]] = 256 + i;
  return Json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       Json::array({Json{{"id", 262}, {"content", "<s>"}, {"special", true}, {"normalized", false},
                         {"lstrip", false}, {"rstrip", false}, {"single_word", false}}})},
      {"normalizer", {{"type", "Sequence"},
                      {"normalizers", Json::array({{{"type", "Replace"},
                                                    {"pattern", {{"String", " "}}},
                                                    {"content", "\u2581"}}})}}},
      {"pre_tokenizer", {{"type", "Split"}, {"pattern", {{"String", " "}}},
                         {"behavior", "MergedWithPrevious"}, {"invert", false}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", Json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {262}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"},
                   {"decoders", Json::array({{{"type", "Replace"},
                                              {"pattern", {{"String", "\u2581"}}},
                                              {"content", " "}},
                                             {{"type", "ByteFallback"}},
                                             {{"type", "Fuse"}}})}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                 {"byte_fallback", true}, {"fuse_unk", true}, {"ignore_merges", false},
                 {"vocab", vocab},
                 {"merges", Json::array({Json::array({"a", "\u2581"}), "a\u2581 b", "a b"})}}},
  };
}

std::string LoadError(const Json& json) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::LoadFromJsonValue(json);
  EXPECT_FALSE(tokenizer.ok());
  if (tokenizer.ok()) return "";
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(tokenizer.status().message());
}

TEST(TokenizerFeaturesTest, MinimalFileEncodesAndDecodes) {
  const std::unique_ptr<Tokenizer> tokenizer = *Tokenizer::LoadFromJsonValue(MinimalTokenizerJson());
  // "a b": a+▁ (rank 0) then a▁+b; a token spans the space, so no chunk cut may be made there.
  EXPECT_THAT(*tokenizer->Encode("a b"), ElementsAre(260));
  EXPECT_THAT(*tokenizer->Encode("ab", {.add_special_tokens = true}), ElementsAre(262, 261));
  EXPECT_THAT(*tokenizer->Encode("<s>c"), ElementsAre(262, 0x63));  // c: byte fallback
  EXPECT_THAT(*tokenizer->Encode("<s>", {.split_special_tokens = true}),
              ElementsAre(0x3C, 0x73, 0x3E));
  EXPECT_EQ(*tokenizer->Decode({262, 260, 0xC3, 0xA9, 256}), "<s>a b\xC3\xA9" "a");
  // A byte run that is not valid UTF-8 as a whole becomes one U+FFFD per byte.
  EXPECT_EQ(*tokenizer->Decode({0xC3, 0xA9, 0xFF}), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(*tokenizer->Decode({262, 256}, /*skip_special_tokens=*/true), "a");
}

TEST(TokenizerFeaturesTest, StringMergesAndArrayMergesAreEquivalent) {
  Json json = MinimalTokenizerJson();
  json["model"]["merges"] = Json::array({"a \u2581", "a\u2581 b", "a b"});
  EXPECT_THAT(*(*Tokenizer::LoadFromJsonValue(json))->Encode("a bab"), ElementsAre(260, 261));
}

TEST(TokenizerFeaturesTest, RejectsUnsupportedFeaturesByName) {
  const struct {
    const char* pointer;  // JSON pointer to replace
    const char* value;    // JSON
    const char* message;
  } cases[] = {
      {"/normalizer", R"({"type": "NFKC"})", "normalizer type \"NFKC\" is not supported"},
      {"/normalizer/normalizers/0/pattern", R"({"Regex": "\\s"})", "Regex pattern is not supported"},
      {"/pre_tokenizer", R"({"type": "Metaspace"})", "pre_tokenizer type \"Metaspace\""},
      {"/pre_tokenizer/behavior", R"("Isolated")", "behavior \"Isolated\" is not supported"},
      {"/pre_tokenizer/invert", "true", "invert true is not supported"},
      {"/decoder/decoders/0/type", R"("Strip")", "decoder type \"Strip\" is not supported"},
      {"/decoder", "null", "a null decoder is not supported"},
      {"/decoder/decoders/1/type", R"("Fuse")", "decoder \"Fuse\" after Fuse"},
      {"/post_processor", R"({"type": "ByteLevel"})", "post_processor type \"ByteLevel\""},
      {"/truncation", R"({"max_length": 8})", "\"truncation\" is not supported"},
      {"/padding", R"({"strategy": "BatchLongest"})", "\"padding\" is not supported"},
      {"/model/type", R"("WordPiece")", "model type \"WordPiece\" is not supported"},
      {"/model/dropout", "0.1", "model.dropout = 0.1 is not supported"},
      {"/model/byte_fallback", "false", "model.byte_fallback other than true"},
      {"/model/ignore_merges", "true", "model.ignore_merges = true"},
      {"/model/continuing_subword_prefix", R"("##")", "continuing_subword_prefix"},
      {"/model/end_of_word_suffix", R"("</w>")", "end_of_word_suffix"},
      {"/added_tokens/0/lstrip", "true", "added token \"<s>\" with lstrip true is not supported"},
      {"/added_tokens/0/normalized", "true", "with normalized true is not supported"},
      {"/added_tokens/0/single_word", "true", "with single_word true"},
  };
  for (const auto& c : cases) {
    Json json = MinimalTokenizerJson();
    json[Json::json_pointer(c.pointer)] = Json::parse(c.value);
    EXPECT_THAT(LoadError(json), HasSubstr(c.message)) << c.pointer;
  }
}

TEST(TokenizerFeaturesTest, RejectsMalformedFiles) {
  const struct {
    const char* pointer;
    const char* value;
    const char* message;
  } cases[] = {
      {"/model/merges/2", R"("ab")", "has no space"},
      {"/model/merges/2", R"(["a", "zz"])", "not in model.vocab"},
      {"/model/merges/2", "[1, 2, 3]", "neither"},
      {"/model/vocab/<0x41>", "-4", "is not a valid id"},
      {"/model/vocab/ab", "0", "id 0 is used by both"},
      {"/model/vocab", "[]", "model.vocab is not an object"},
      {"/added_tokens/0/content", R"("")", "has empty content"},
      {"/added_tokens/0/id", R"("x")", "\"id\" is not a valid id"},
      {"/post_processor/special_tokens/<s>/ids/0", "99999", "unknown id"},
  };
  for (const auto& c : cases) {
    Json json = MinimalTokenizerJson();
    json[Json::json_pointer(c.pointer)] = Json::parse(c.value);
    EXPECT_THAT(LoadError(json), HasSubstr(c.message)) << c.pointer;
  }
  Json no_byte = MinimalTokenizerJson();
  no_byte["model"]["vocab"].erase("<0x7F>");
  EXPECT_THAT(LoadError(no_byte), HasSubstr("<0x7F> is not in model.vocab"));
  EXPECT_EQ(Tokenizer::LoadFromJson("{\"model\": [").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::LoadFromJson("[]").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::LoadFile("/nonexistent/tokenizer.json").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace gemmaserve::text
