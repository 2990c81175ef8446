// The streaming detokenizer's contract on the real Gemma 3 vocabulary: every delta is valid
// UTF-8 and the deltas concatenate to Decode(ids), for random id sequences rich in byte tokens.
#include "text/detokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/text/reference_tokenizer.h"
#include "text/utf8.h"

namespace gemmaserve::text {
namespace {

class DetokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<const Tokenizer*> tokenizer = testing::Gemma3Tokenizer();
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *tokenizer;
  }

  // Streams `ids`, checking each delta, and returns the concatenation.
  std::string Stream(const std::vector<int32_t>& ids, bool skip_special_tokens) {
    StreamingDetokenizer detokenizer(tokenizer_, skip_special_tokens);
    std::string text;
    for (const int32_t id : ids) {
      absl::StatusOr<std::string> delta = detokenizer.Add(id);
      EXPECT_TRUE(delta.ok()) << delta.status();
      EXPECT_TRUE(IsValidUtf8(*delta)) << "id " << id;
      text += *delta;
    }
    const std::string rest = detokenizer.Finish();
    EXPECT_TRUE(IsValidUtf8(rest));
    return text + rest;
  }

  const Tokenizer* tokenizer_ = nullptr;
};

TEST_F(DetokenizerTest, RandomSequencesConcatenateToDecode) {
  std::mt19937 rng(1234);
  // Byte tokens (<0x00>..<0xFF> are 238..493), specials and ordinary ids, mixed so that byte
  // runs are sometimes valid UTF-8 and sometimes not.
  std::uniform_int_distribution<int> kind(0, 9);
  std::uniform_int_distribution<int32_t> byte_id(238, 493);
  std::uniform_int_distribution<int32_t> any_id(0, tokenizer_->id_limit() - 1);
  for (int sequence = 0; sequence < 1000; ++sequence) {
    std::vector<int32_t> ids(1 + sequence % 40);
    for (int32_t& id : ids) {
      const int k = kind(rng);
      id = k < 5 ? byte_id(rng) : k < 6 ? static_cast<int32_t>(rng() % 4) : any_id(rng);
    }
    for (const bool skip : {false, true}) {
      EXPECT_EQ(Stream(ids, skip), *tokenizer_->Decode(ids, skip)) << "sequence " << sequence;
    }
  }
}

TEST_F(DetokenizerTest, HoldsASplitCharacterUntilItIsComplete) {
  // "é" as byte tokens <0xC3><0xA9>, then "!".
  const std::vector<int32_t> ids = {238 + 0xC3, 238 + 0xA9, *tokenizer_->TokenToId("!")};
  StreamingDetokenizer detokenizer(tokenizer_, false);
  EXPECT_EQ(*detokenizer.Add(ids[0]), "");
  EXPECT_EQ(*detokenizer.Add(ids[1]), "");
  EXPECT_EQ(*detokenizer.Add(ids[2]), "\xC3\xA9!");
  EXPECT_EQ(detokenizer.Finish(), "");
}

TEST_F(DetokenizerTest, EncodedTextStreamsBackExactly) {
  const std::string text = "Hi 𠀀 𒀀 \r\n <b>bold</b> 👩‍👩‍👧 done";
  const std::vector<int32_t> ids = *tokenizer_->Encode(text, {.add_special_tokens = true});
  EXPECT_EQ(Stream(ids, /*skip_special_tokens=*/true), text);
}

TEST_F(DetokenizerTest, UnknownIdIsAnError) {
  StreamingDetokenizer detokenizer(tokenizer_, false);
  EXPECT_EQ(detokenizer.Add(-5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(detokenizer.Add(tokenizer_->id_limit()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gemmaserve::text
