// The tiny checkpoints' tokenizer.json (tools/make_tiny_tokenizer.py): loads, carries the chat
// tokens at the Gemma 4 ids, encodes ordinary text compactly and round-trips any text.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace gemmaserve::text {
namespace {

TEST(TinyTokenizerTest, BothCheckpointsLoadWithChatTokensAtGemma4Ids) {
  for (const char* dir : {"tests/data/gemma4-tiny-dense", "tests/data/gemma4-tiny-moe"}) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::LoadFromModelDir(dir);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    EXPECT_EQ((*tokenizer)->id_limit(), 512);
    EXPECT_EQ((*tokenizer)->TokenToId("<|turn>"), 105);
    EXPECT_EQ((*tokenizer)->TokenToId("<turn|>"), 106);
    EXPECT_EQ((*tokenizer)->TokenToId("<|\"|>"), 52);
    EXPECT_EQ((*tokenizer)->TokenToId("\n"), 107);
    EXPECT_EQ((*tokenizer)->TokenToId("<|image>"), 505);
    EXPECT_TRUE(ChatTemplate::Create(tokenizer->get(), ChatVariant::kLarge).ok());
  }
}

TEST(TinyTokenizerTest, EncodesEnglishCompactlyAndRoundTripsAnything) {
  const std::unique_ptr<Tokenizer> tokenizer =
      *Tokenizer::LoadFromModelDir("tests/data/gemma4-tiny-dense");
  const std::string english = "The capital of France is Paris. The model gives an answer.";
  const std::vector<int32_t> ids = *tokenizer->Encode(english, {.add_special_tokens = true});
  EXPECT_EQ(ids.front(), 2);
  EXPECT_LT(ids.size(), english.size() / 2);
  EXPECT_EQ(*tokenizer->Decode(ids, /*skip_special_tokens=*/true), english);
  const std::string other = "Grüße, 世界! 🙂\n\n\ttabs";
  EXPECT_EQ(*tokenizer->Decode(*tokenizer->Encode(other)), other);
}

}  // namespace
}  // namespace gemmaserve::text
