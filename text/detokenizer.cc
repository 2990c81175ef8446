#include "text/detokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace gemmaserve::text {

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer* tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

absl::StatusOr<std::string> StreamingDetokenizer::Add(int32_t id) {
  if (!tokenizer_->IsValidId(id)) {
    return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary"));
  }
  // A skipped token is dropped before decoding, so it does not end a byte run (as in HF).
  if (skip_special_tokens_ && tokenizer_->IsSpecial(id)) return std::string();
  pending_.push_back(id);
  if (tokenizer_->IsByteToken(id)) return std::string();
  absl::StatusOr<std::string> text = tokenizer_->Decode(pending_, skip_special_tokens_);
  CHECK(text.ok()) << text.status();  // every pending id was validated above
  pending_.clear();
  return text;
}

std::string StreamingDetokenizer::Finish() {
  absl::StatusOr<std::string> text = tokenizer_->Decode(pending_, skip_special_tokens_);
  CHECK(text.ok()) << text.status();
  pending_.clear();
  return *std::move(text);
}

}  // namespace gemmaserve::text
