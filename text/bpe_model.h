// BpeModel: the "model" object of a Hugging Face tokenizer.json of type BPE with byte fallback, as
// Gemma ships it. It turns one normalized, pre-tokenized word into token ids exactly as the HF
// `tokenizers` BPE does: start from one symbol per character (a character missing from the vocab
// becomes its UTF-8 bytes as `<0xNN>` tokens), then repeatedly apply the lowest-ranked merge,
// the leftmost one on ties, until none applies.
//
// Speed. Gemma has no pre-tokenization split (spaces become "▁" and the Split finds nothing), so
// a whole paragraph is one word. Merging uses a heap over a linked list of symbols, O(n log n).
// On top of that a word is cut into chunks before every "▁" that follows a non-"▁" character,
// and chunks are cached. The cut is exact: a symbol spanning such a cut would be a vocab token
// containing "X▁" with X not "▁"; the few such tokens ("cross tokens", one in Gemma 3: ">▁</")
// are found at load time, and no cut is made where one of them occurs in the text. When the
// vocab makes this proof impossible (no "▁" token, a cross token containing "<0x", or too many
// cross tokens) words are merged whole, still exactly.
//
// Thread-safety: immutable after Create(), except for the chunk cache, which is guarded by a
// mutex; EncodeWord() may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::text {

// The vocab and merges of tokenizer.json's `model`, collected either from a parsed document or
// while parsing (tokenizer_loader.cc streams them, so the 33 MB file never becomes a DOM).
struct BpeEntries {
  bool has_vocab = false;   // model.vocab is an object
  bool has_merges = false;  // model.merges is an array
  std::vector<std::pair<std::string, int32_t>> vocab;       // token, id
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  absl::Status status;  // the first malformed entry, if any

  void AddVocab(std::string token, const nlohmann::json& id);
  // A merge as "left right" (split at the first space, as HF does) or ["left", "right"].
  void AddMerge(const nlohmann::json& merge);
  static BpeEntries FromModelJson(const nlohmann::json& model);
};

class BpeModel {
 public:
  // Builds from the `model` object of tokenizer.json (its settings) and its entries.
  // INVALID_ARGUMENT naming the field for anything this implementation does not reproduce
  // exactly (another model type, dropout, subword prefixes/suffixes, ignore_merges,
  // byte_fallback off), a malformed entry, a merge of unknown tokens or one whose result is not
  // in the vocab, duplicate ids, or missing <0x00>..<0xFF> tokens.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(const nlohmann::json& model,
                                                          const BpeEntries& entries);

  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one word (normalized text with no added tokens in it).
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;

  // The vocab token with this id, or nullopt when no token has it.
  std::optional<std::string_view> IdToToken(int32_t id) const;
  // The id of a vocab token, or nullopt.
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // One past the largest vocab id.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct MergeTarget {
    int32_t rank;    // position in the merges list; lower merges first
    int32_t new_id;  // id of the concatenated token
  };
  // Where a cross token could span a cut: the byte offset of its "▁" that follows a non-"▁".
  struct CrossOccurrence {
    std::string token;
    size_t marker_offset;
  };
  struct Workspace;

  BpeModel() = default;
  absl::Status LoadVocab(const BpeEntries& entries);
  absl::Status LoadMerges(const BpeEntries& entries);
  absl::Status LoadByteTokens();
  void FindCrossTokens();

  bool IsSafeCut(std::string_view word, size_t pos) const;
  void EncodeChunk(std::string_view chunk, Workspace* workspace, std::vector<int32_t>* ids) const;
  void MergeChunk(std::string_view chunk, Workspace* workspace, std::vector<int32_t>* ids) const;
  void InitialSymbols(std::string_view chunk, std::vector<int32_t>* symbol_ids) const;
  std::optional<MergeTarget> FindMerge(int32_t left, int32_t right) const;

  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;  // "" marks an id no token has
  std::vector<bool> id_present_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;  // key: left id << 32 | right id
  int32_t ascii_char_id_[128];                          // -1: not in the vocab
  int32_t byte_token_id_[256];                          // <0xNN>
  bool chunking_enabled_ = false;
  std::vector<CrossOccurrence> cross_occurrences_;

  // Chunk cache: chunk text -> ids. Cleared when full, so memory stays bounded.
  mutable absl::Mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_
      ABSL_GUARDED_BY(cache_mutex_);
};

}  // namespace gemmaserve::text
