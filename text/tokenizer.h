// Tokenizer: text <-> token ids for a Hugging Face tokenizer.json of the kind Gemma 3 and Gemma 4
// ship (GEMMA4.md §4), reproducing HF `tokenizers` exactly:
//
//   encode: raw text -> cut out added tokens (leftmost-longest, on the raw text)
//           -> normalizer on each remaining stretch (Replace " " -> "▁")
//           -> pre-tokenizer (Split on " ", MergedWithPrevious)
//           -> BPE with byte fallback on each word (bpe_model.h)
//           -> post-processor (TemplateProcessing, e.g. <bos> in front) if add_special_tokens
//   decode: ids -> token strings -> decoder steps (Replace "▁" -> " ", ByteFallback, Fuse)
//
// Anything in tokenizer.json this implementation does not reproduce exactly (another normalizer,
// a Regex pattern, a Metaspace pre-tokenizer, truncation, added tokens with lstrip, ...) makes
// Load fail with INVALID_ARGUMENT naming it, e.g.
//   tokenizer.json: normalizer type "NFKC" is not supported
// so nothing is ever silently encoded differently.
//
// Special tokens and untrusted text. By default added-token text inside the input ("<bos>",
// "<|turn>") becomes that single token, as in HF. With split_special_tokens the tokens marked
// special in tokenizer.json are not recognised and are encoded as plain characters; the server
// renders chat structure as ids itself and encodes all message text this way (chat_template.h),
// so a user cannot forge a turn marker.
//
// Thread-safety: a loaded Tokenizer is immutable apart from an internal, mutex-guarded cache;
// all methods may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "text/added_vocabulary.h"
#include "text/bpe_model.h"

namespace gemmaserve::text {

struct EncodeOptions {
  // Apply the post-processor's template (for Gemma: one <bos> in front). HF: add_special_tokens.
  bool add_special_tokens = false;
  // Encode the text of special added tokens as plain characters. HF: split_special_tokens.
  bool split_special_tokens = false;
};

// The byte of a "<0xHH>" token string (HF's ByteFallback test), or nullopt.
std::optional<uint8_t> ParseByteToken(std::string_view token);

class Tokenizer {
 public:
  // Loads DIR/tokenizer.json or a tokenizer.json path. NOT_FOUND for a missing file,
  // INVALID_ARGUMENT for malformed JSON or an unsupported feature (the message names it).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromModelDir(const std::string& dir);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromJson(std::string_view json_text);
  // From an already parsed tokenizer.json (e.g. one a test has edited).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromJsonValue(const nlohmann::json& root);

  // INVALID_ARGUMENT when `text` is not valid UTF-8 (the message gives the byte offset).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              const EncodeOptions& options = {}) const;

  // Concatenated text of `ids`; skip_special_tokens drops tokens marked special (HF semantics).
  // INVALID_ARGUMENT naming the first id that is not a token.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens = false) const;

  // The id of an added or vocab token with exactly this content.
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token string of an id (added tokens first, as HF), or nullopt for an unknown id.
  std::optional<std::string_view> IdToToken(int32_t id) const;
  bool IsValidId(int32_t id) const { return IdToToken(id).has_value(); }
  // Whether the id is an added token marked special.
  bool IsSpecial(int32_t id) const;
  // Whether the decoder turns this id into a raw byte (a `<0xNN>` token with ByteFallback on);
  // such bytes are only decoded together with their whole run of byte tokens.
  bool IsByteToken(int32_t id) const;
  // One past the largest id of any token.
  int32_t id_limit() const { return static_cast<int32_t>(added_token_of_id_.size()); }

 private:
  struct Replacement {
    std::string pattern;
    std::string content;
  };
  struct DecodeStep {
    enum class Kind { kReplace, kByteFallback, kFuse } kind;
    Replacement replacement;  // for kReplace
  };
  class Loader;

  Tokenizer() = default;

  std::string Normalize(std::string_view text) const;
  void PreTokenize(std::string_view text, std::vector<std::string_view>* words) const;
  void EncodeText(std::string_view text, std::vector<int32_t>* ids) const;
  void RunDecoderStep(const DecodeStep& step, std::vector<std::string>* pieces) const;
  void RunByteFallback(std::vector<std::string>* pieces) const;

  std::unique_ptr<BpeModel> model_;
  AddedVocabulary added_;
  std::vector<int32_t> added_token_of_id_;  // index into added_.tokens(), or -1
  std::vector<Replacement> normalizer_;     // applied in order
  std::vector<std::string> split_patterns_;  // Split MergedWithPrevious, applied in order
  std::vector<DecodeStep> decoder_;
  std::vector<int16_t> byte_value_;  // per id: the byte of a <0xNN> token with ByteFallback, or -1
  std::vector<int32_t> prefix_ids_;  // post-processor: before the sequence
  std::vector<int32_t> suffix_ids_;  // post-processor: after the sequence
};

}  // namespace gemmaserve::text
