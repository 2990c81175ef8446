// AddedVocabulary: the `added_tokens` of a tokenizer.json (control tokens such as <bos> and
// <|turn>, and plain extras such as newline runs or HTML tags). Before any normalization, the raw
// input is cut at every occurrence of an added token, found leftmost-longest as HF's Aho-Corasick
// matcher does; the text between occurrences goes on to the normalizer and the BPE model.
//
// With `split_special_tokens` (HF's encode_special_tokens) an occurrence of a token marked
// special is not cut out but left in the text, where the BPE encodes it as ordinary characters;
// the scan still resumes after it, exactly as HF does. Non-special added tokens are always cut.
//
// Only tokens with normalized, lstrip, rstrip and single_word all false are supported (the form
// Gemma ships); Add() rejects the others. Thread-safety: immutable after construction.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace gemmaserve::text {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
};

class AddedVocabulary {
 public:
  // One stretch of the input: an added token (id >= 0) or text to encode with the model (id -1).
  struct Segment {
    std::string_view text;
    int32_t id;
  };

  AddedVocabulary();

  // INVALID_ARGUMENT for empty content or content that is already present.
  absl::Status Add(AddedToken token);

  // Cuts `text` into segments; text segments are never empty. The views point into `text`.
  void Split(std::string_view text, bool split_special_tokens, std::vector<Segment>* out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  struct Match {
    size_t begin;
    size_t length;
    int32_t token_index;
  };
  // The leftmost-longest occurrence at or after `from`; token_index -1 when there is none.
  Match FindFrom(std::string_view text, size_t from) const;
  // The longest token that starts exactly at `pos`, as (length, token_index); (0, -1) if none.
  std::pair<size_t, int32_t> LongestAt(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  // Byte trie over token contents: edge key is node << 8 | byte, value the child node.
  absl::flat_hash_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> node_token_;  // token index ending at each node, or -1
  bool can_start_[256];              // whether some token starts with this byte
};

}  // namespace gemmaserve::text
