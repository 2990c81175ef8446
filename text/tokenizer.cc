#include "text/tokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "text/utf8.h"

namespace gemmaserve::text {
namespace {

void ReplaceAll(const std::string& pattern, const std::string& content, std::string* text) {
  if (text->find(pattern) == std::string::npos) return;
  std::string result;
  result.reserve(text->size());
  size_t start = 0;
  for (size_t pos = text->find(pattern); pos != std::string::npos;
       pos = text->find(pattern, start)) {
    result.append(*text, start, pos - start).append(content);
    start = pos + pattern.size();
  }
  result.append(*text, start);
  *text = std::move(result);
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       const EncodeOptions& options) const {
  const size_t invalid_at = FindInvalidUtf8(text);
  if (invalid_at != text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8 (bad byte at offset ", invalid_at, ")"));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + prefix_ids_.size() + suffix_ids_.size() + 1);
  if (options.add_special_tokens) ids = prefix_ids_;
  std::vector<AddedVocabulary::Segment> segments;
  added_.Split(text, options.split_special_tokens, &segments);
  for (const AddedVocabulary::Segment& segment : segments) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
    } else {
      EncodeText(segment.text, &ids);
    }
  }
  if (options.add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

void Tokenizer::EncodeText(std::string_view text, std::vector<int32_t>* ids) const {
  const std::string normalized = Normalize(text);
  std::vector<std::string_view> words;
  PreTokenize(normalized, &words);
  for (std::string_view word : words) model_->EncodeWord(word, ids);
}

std::string Tokenizer::Normalize(std::string_view text) const {
  std::string normalized(text);
  for (const Replacement& replacement : normalizer_) {
    ReplaceAll(replacement.pattern, replacement.content, &normalized);
  }
  return normalized;
}

// Split with MergedWithPrevious: each occurrence of a pattern ends the current word.
void Tokenizer::PreTokenize(std::string_view text, std::vector<std::string_view>* words) const {
  words->assign({text});
  std::vector<std::string_view> split;
  for (const std::string& pattern : split_patterns_) {
    split.clear();
    for (std::string_view word : *words) {
      size_t start = 0;
      for (size_t pos = word.find(pattern); pos != std::string_view::npos;
           pos = word.find(pattern, start)) {
        const size_t end = pos + pattern.size();
        split.push_back(word.substr(start, end - start));
        start = end;
      }
      if (start < word.size()) split.push_back(word.substr(start));
    }
    words->swap(split);
  }
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  for (const int32_t id : ids) {
    const std::optional<std::string_view> token = IdToToken(id);
    if (!token) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is not in the vocabulary (ids are 0..", id_limit() - 1,
                       ")"));
    }
    if (skip_special_tokens && IsSpecial(id)) continue;
    pieces.emplace_back(*token);
  }
  for (const DecodeStep& step : decoder_) RunDecoderStep(step, &pieces);
  std::string text;
  for (const std::string& piece : pieces) text += piece;
  return text;
}

void Tokenizer::RunDecoderStep(const DecodeStep& step, std::vector<std::string>* pieces) const {
  switch (step.kind) {
    case DecodeStep::Kind::kReplace:
      for (std::string& piece : *pieces) {
        ReplaceAll(step.replacement.pattern, step.replacement.content, &piece);
      }
      return;
    case DecodeStep::Kind::kFuse: {
      std::string fused;
      for (const std::string& piece : *pieces) fused += piece;
      pieces->assign({std::move(fused)});
      return;
    }
    case DecodeStep::Kind::kByteFallback:
      RunByteFallback(pieces);
      return;
  }
}

// HF ByteFallback: a run of "<0xHH>" pieces becomes its bytes when they form valid UTF-8, and
// otherwise one U+FFFD per byte.
void Tokenizer::RunByteFallback(std::vector<std::string>* pieces) const {
  std::vector<std::string> out;
  out.reserve(pieces->size());
  std::string run;
  size_t run_length = 0;
  const auto flush = [&] {
    if (run_length == 0) return;
    if (IsValidUtf8(run)) {
      out.push_back(std::move(run));
    } else {
      for (size_t i = 0; i < run_length; ++i) out.emplace_back("\uFFFD");
    }
    run.clear();
    run_length = 0;
  };
  for (std::string& piece : *pieces) {
    if (std::optional<uint8_t> byte = ParseByteToken(piece)) {
      run.push_back(static_cast<char>(*byte));
      ++run_length;
    } else {
      flush();
      out.push_back(std::move(piece));
    }
  }
  flush();
  pieces->swap(out);
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  for (const AddedToken& added : added_.tokens()) {
    if (added.content == token) return added.id;
  }
  return model_->TokenToId(token);
}

std::optional<std::string_view> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= id_limit()) return std::nullopt;
  const int32_t added_index = added_token_of_id_[id];
  if (added_index >= 0) return std::string_view(added_.tokens()[added_index].content);
  return model_->IdToToken(id);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  if (id < 0 || id >= id_limit()) return false;
  const int32_t added_index = added_token_of_id_[id];
  return added_index >= 0 && added_.tokens()[added_index].special;
}

bool Tokenizer::IsByteToken(int32_t id) const {
  return id >= 0 && id < id_limit() && byte_value_[id] >= 0;
}

std::optional<uint8_t> ParseByteToken(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token[5] != '>') return std::nullopt;
  uint8_t value = 0;
  for (const char c : token.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    value = static_cast<uint8_t>(value * 16 + digit);
  }
  return value;
}

}  // namespace gemmaserve::text
