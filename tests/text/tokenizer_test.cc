// The tokenizer against reference encodings of the real Gemma 3 tokenizer.json
// (tests/data/tokenizer/gemma3_visible.jsonl, made by an independent implementation and
// cross-checked with HF tokenizers; see ../shared/golden/tokenizer/README.md).
#include "text/tokenizer.h"

#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/text/reference_tokenizer.h"

namespace gemmaserve::text {
namespace {

using ::testing::ElementsAre;

constexpr char kGoldenPath[] = "tests/data/tokenizer/gemma3_visible.jsonl";

const Tokenizer& Gemma3() {
  static const Tokenizer* tokenizer = [] {
    absl::StatusOr<const Tokenizer*> loaded = testing::Gemma3Tokenizer();
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? *loaded : nullptr;
  }();
  if (tokenizer == nullptr) std::abort();  // the EXPECT above has said why
  return *tokenizer;
}

std::vector<nlohmann::json> ReadGolden() {
  std::ifstream in(kGoldenPath);
  EXPECT_TRUE(in) << "cannot open " << kGoldenPath << " (tests run from the repository root)";
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST(TokenizerGoldenTest, EveryReferenceStringEncodesAndDecodesExactly) {
  ASSERT_TRUE(testing::Gemma3Tokenizer().ok()) << testing::Gemma3Tokenizer().status();
  const Tokenizer& tokenizer = Gemma3();
  const std::vector<nlohmann::json> golden = ReadGolden();
  ASSERT_EQ(golden.size(), 165u);
  int mismatches = 0;
  for (size_t line = 0; line < golden.size(); ++line) {
    const std::string text = golden[line]["text"];
    const auto ids = golden[line]["ids"].get<std::vector<int32_t>>();
    const auto ids_with_special = golden[line]["ids_with_special"].get<std::vector<int32_t>>();
    SCOPED_TRACE(::testing::Message() << "line " << line + 1 << ": " << golden[line]["text"]);
    absl::StatusOr<std::vector<int32_t>> plain = tokenizer.Encode(text);
    absl::StatusOr<std::vector<int32_t>> with_special =
        tokenizer.Encode(text, {.add_special_tokens = true});
    ASSERT_TRUE(plain.ok() && with_special.ok()) << plain.status() << with_special.status();
    EXPECT_EQ(*plain, ids);
    EXPECT_EQ(*with_special, ids_with_special);
    absl::StatusOr<std::string> decoded = tokenizer.Decode(ids);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, golden[line]["decoded"].get<std::string>());
    mismatches += (*plain != ids || *decoded != golden[line]["decoded"].get<std::string>());
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(TokenizerGoldenTest, SplitSpecialTokensEncodesSpecialTextAsCharacters) {
  ASSERT_TRUE(testing::Gemma3Tokenizer().ok()) << testing::Gemma3Tokenizer().status();
  const Tokenizer& tokenizer = Gemma3();
  EXPECT_THAT(*tokenizer.Encode("<bos>"), ElementsAre(2));
  const std::vector<int32_t> split = *tokenizer.Encode("<bos>", {.split_special_tokens = true});
  EXPECT_GT(split.size(), 1u);
  EXPECT_EQ(*tokenizer.Decode(split), "<bos>");
  // Non-special added tokens (newline runs, <unused0>) are still recognised, as in HF.
  EXPECT_THAT(*tokenizer.Encode("\n\n", {.split_special_tokens = true}),
              ElementsAre(*tokenizer.TokenToId("\n\n")));
  EXPECT_THAT(*tokenizer.Encode("<unused0>", {.split_special_tokens = true}), ElementsAre(6));
}

TEST(TokenizerGoldenTest, DecodeSkipsSpecialTokensOnRequest) {
  ASSERT_TRUE(testing::Gemma3Tokenizer().ok()) << testing::Gemma3Tokenizer().status();
  const Tokenizer& tokenizer = Gemma3();
  const std::vector<int32_t> ids = *tokenizer.Encode("<start_of_turn>user\nHi<end_of_turn>",
                                                     {.add_special_tokens = true});
  EXPECT_EQ(ids.front(), 2);
  EXPECT_EQ(*tokenizer.Decode(ids), "<bos><start_of_turn>user\nHi<end_of_turn>");
  EXPECT_EQ(*tokenizer.Decode(ids, /*skip_special_tokens=*/true), "user\nHi");
}

TEST(TokenizerGoldenTest, DoesNotCutWordsWhereATokenSpansTheSpace) {
  ASSERT_TRUE(testing::Gemma3Tokenizer().ok()) << testing::Gemma3Tokenizer().status();
  const Tokenizer& tokenizer = Gemma3();
  // ">▁</" is the one Gemma 3 token with a "▁" after another character.
  const std::vector<int32_t> ids = *tokenizer.Encode("x> </y");
  EXPECT_THAT(ids, ::testing::Contains(*tokenizer.TokenToId(">\u2581</")));
  EXPECT_EQ(*tokenizer.Decode(ids), "x> </y");
}

TEST(TokenizerGoldenTest, LongWordsRoundTrip) {
  ASSERT_TRUE(testing::Gemma3Tokenizer().ok()) << testing::Gemma3Tokenizer().status();
  const Tokenizer& tokenizer = Gemma3();
  for (const std::string& text : {std::string(20000, 'a'), "a" + std::string(300, ' ') + "b",
                                 std::string(3000, '\n')}) {
    const std::vector<int32_t> ids = *tokenizer.Encode(text);
    EXPECT_LT(ids.size(), text.size() / 4);
    EXPECT_EQ(*tokenizer.Decode(ids), text);
  }
}

TEST(TokenizerGoldenTest, InvalidUtf8AndUnknownIdsAreErrors) {
  ASSERT_TRUE(testing::Gemma3Tokenizer().ok()) << testing::Gemma3Tokenizer().status();
  const Tokenizer& tokenizer = Gemma3();
  const absl::StatusOr<std::vector<int32_t>> bad = tokenizer.Encode("ok \xC3( bad");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("offset 3"));
  EXPECT_EQ(tokenizer.Decode({5, 300000}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tokenizer.Decode({-1}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gemmaserve::text
