#include "text/bpe_model.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "text/utf8.h"

namespace gemmaserve::text {
namespace {

constexpr std::string_view kWordMarker = "\u2581";  // "▁", what the normalizer makes of a space
constexpr size_t kMaxCachedChunkBytes = 64;
constexpr size_t kMaxCacheEntries = 1 << 17;
// Beyond this many cross-token occurrences the cut test would cost more than it saves.
constexpr size_t kMaxCrossOccurrences = 64;

absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
         static_cast<uint32_t>(right);
}

absl::Status Unsupported(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(what, " is not supported"));
}

// Checks that an optional field of `model` is absent, null or equal to `allowed`.
absl::Status CheckField(const nlohmann::json& model, const char* name,
                        const nlohmann::json& allowed) {
  const auto it = model.find(name);
  if (it == model.end() || it->is_null() || *it == allowed) return absl::OkStatus();
  return Unsupported(absl::StrCat("model.", name, " = ", it->dump()));
}

bool EndsWithMarker(std::string_view text, size_t pos) {
  return pos >= kWordMarker.size() &&
         text.substr(pos - kWordMarker.size(), kWordMarker.size()) == kWordMarker;
}

}  // namespace

// Scratch space reused across the chunks of one EncodeWord() call.
struct BpeModel::Workspace {
  struct Symbol {
    int32_t id;
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;  // index of the left symbol; breaks rank ties leftmost-first
    int32_t new_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  std::vector<int32_t> initial;
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::vector<int32_t> chunk_ids;
};

void BpeEntries::AddVocab(std::string token, const nlohmann::json& id) {
  if (!status.ok()) return;
  if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (int64_t{1} << 30)) {
    status = absl::InvalidArgumentError(
        absl::StrCat("model.vocab[\"", token, "\"] is not a valid id"));
    return;
  }
  vocab.emplace_back(std::move(token), id.get<int32_t>());
}

void BpeEntries::AddMerge(const nlohmann::json& merge) {
  if (!status.ok()) return;
  const size_t rank = merges.size();
  if (merge.is_string()) {
    const std::string& text = merge.get_ref<const std::string&>();
    const size_t space = text.find(' ');
    if (space == std::string::npos) {
      status = absl::InvalidArgumentError(
          absl::StrCat("model.merges[", rank, "] \"", text, "\" has no space"));
      return;
    }
    merges.emplace_back(text.substr(0, space), text.substr(space + 1));
  } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
             merge[1].is_string()) {
    merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
  } else {
    status = absl::InvalidArgumentError(absl::StrCat(
        "model.merges[", rank, "] is neither \"a b\" nor [\"a\", \"b\"]"));
  }
}

BpeEntries BpeEntries::FromModelJson(const nlohmann::json& model) {
  BpeEntries entries;
  if (!model.is_object()) return entries;
  if (const auto vocab = model.find("vocab"); vocab != model.end() && vocab->is_object()) {
    entries.has_vocab = true;
    entries.vocab.reserve(vocab->size());
    for (const auto& [token, id] : vocab->items()) entries.AddVocab(token, id);
  }
  if (const auto merges = model.find("merges"); merges != model.end() && merges->is_array()) {
    entries.has_merges = true;
    entries.merges.reserve(merges->size());
    for (const nlohmann::json& merge : *merges) entries.AddMerge(merge);
  }
  return entries;
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(const nlohmann::json& model,
                                                            const BpeEntries& entries) {
  if (!model.is_object()) return absl::InvalidArgumentError("model is not an object");
  const auto type = model.find("type");
  if (type == model.end() || *type != "BPE") {
    return Unsupported(absl::StrCat("model type ", type == model.end() ? "(none)" : type->dump()));
  }
  RETURN_IF_ERROR(CheckField(model, "dropout", 0.0));
  RETURN_IF_ERROR(CheckField(model, "continuing_subword_prefix", ""));
  RETURN_IF_ERROR(CheckField(model, "end_of_word_suffix", ""));
  RETURN_IF_ERROR(CheckField(model, "ignore_merges", false));
  const auto byte_fallback = model.find("byte_fallback");
  if (byte_fallback == model.end() || *byte_fallback != true) {
    return Unsupported("model.byte_fallback other than true");
  }
  if (!entries.has_vocab) return absl::InvalidArgumentError("model.vocab is not an object");
  if (!entries.has_merges) return absl::InvalidArgumentError("model.merges is not an array");
  RETURN_IF_ERROR(entries.status);
  std::unique_ptr<BpeModel> bpe(new BpeModel());
  RETURN_IF_ERROR(bpe->LoadVocab(entries));
  RETURN_IF_ERROR(bpe->LoadMerges(entries));
  RETURN_IF_ERROR(bpe->LoadByteTokens());
  bpe->FindCrossTokens();
  return bpe;
}

absl::Status BpeModel::LoadVocab(const BpeEntries& entries) {
  token_to_id_.reserve(entries.vocab.size());
  for (const auto& [token, id] : entries.vocab) {
    if (static_cast<size_t>(id) >= id_to_token_.size()) {
      id_to_token_.resize(id + 1);
      id_present_.resize(id + 1, false);
    }
    if (id_present_[id]) {
      return absl::InvalidArgumentError(absl::StrCat("model.vocab id ", id, " is used by both \"",
                                                     id_to_token_[id], "\" and \"", token, "\""));
    }
    id_present_[id] = true;
    id_to_token_[id] = token;
    token_to_id_.emplace(token, id);
  }
  std::fill(std::begin(ascii_char_id_), std::end(ascii_char_id_), -1);
  for (int c = 0; c < 128; ++c) {
    const char ch = static_cast<char>(c);
    if (std::optional<int32_t> id = TokenToId(std::string_view(&ch, 1))) ascii_char_id_[c] = *id;
  }
  return absl::OkStatus();
}

absl::Status BpeModel::LoadMerges(const BpeEntries& entries) {
  merges_.reserve(entries.merges.size());
  std::string joined;
  for (size_t rank = 0; rank < entries.merges.size(); ++rank) {
    const auto& [left, right] = entries.merges[rank];
    joined.assign(left).append(right);
    const std::optional<int32_t> left_id = TokenToId(left);
    const std::optional<int32_t> right_id = TokenToId(right);
    const std::optional<int32_t> new_id = TokenToId(joined);
    if (!left_id || !right_id || !new_id) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.merges[", rank, "] (\"", left, "\", \"", right,
                       "\") uses or makes a token that is not in model.vocab"));
    }
    // A repeated pair keeps its last rank, as in HF.
    merges_[PairKey(*left_id, *right_id)] = MergeTarget{static_cast<int32_t>(rank), *new_id};
  }
  return absl::OkStatus();
}

absl::Status BpeModel::LoadByteTokens() {
  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", byte);
    const std::optional<int32_t> id = TokenToId(name);
    if (!id) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.byte_fallback is true but token ", name, " is not in model.vocab"));
    }
    byte_token_id_[byte] = *id;
  }
  return absl::OkStatus();
}

void BpeModel::FindCrossTokens() {
  cross_occurrences_.clear();
  chunking_enabled_ = TokenToId(kWordMarker).has_value();
  for (const std::string& token : id_to_token_) {
    for (size_t pos = token.find(kWordMarker, 1); pos != std::string::npos;
         pos = token.find(kWordMarker, pos + 1)) {
      if (EndsWithMarker(token, pos)) continue;
      if (token.find("<0x") != std::string::npos) chunking_enabled_ = false;
      cross_occurrences_.push_back(CrossOccurrence{token, pos});
    }
  }
  if (cross_occurrences_.size() > kMaxCrossOccurrences) chunking_enabled_ = false;
}

std::optional<std::string_view> BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= id_limit() || !id_present_[id]) return std::nullopt;
  return id_to_token_[id];
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  const auto it = token_to_id_.find(AsAbsl(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::optional<BpeModel::MergeTarget> BpeModel::FindMerge(int32_t left, int32_t right) const {
  const auto it = merges_.find(PairKey(left, right));
  if (it == merges_.end()) return std::nullopt;
  return it->second;
}

bool BpeModel::IsSafeCut(std::string_view word, size_t pos) const {
  if (EndsWithMarker(word, pos)) return false;
  for (const CrossOccurrence& cross : cross_occurrences_) {
    if (pos >= cross.marker_offset &&
        word.substr(pos - cross.marker_offset).starts_with(cross.token)) {
      return false;
    }
  }
  return true;
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  Workspace workspace;
  if (!chunking_enabled_) {
    MergeChunk(word, &workspace, ids);
    return;
  }
  size_t start = 0;
  for (size_t pos = word.find(kWordMarker, 1); pos != std::string_view::npos;
       pos = word.find(kWordMarker, pos + kWordMarker.size())) {
    if (pos > start && IsSafeCut(word, pos)) {
      EncodeChunk(word.substr(start, pos - start), &workspace, ids);
      start = pos;
    }
  }
  EncodeChunk(word.substr(start), &workspace, ids);
}

void BpeModel::EncodeChunk(std::string_view chunk, Workspace* workspace,
                           std::vector<int32_t>* ids) const {
  if (chunk.size() > kMaxCachedChunkBytes) {
    MergeChunk(chunk, workspace, ids);
    return;
  }
  {
    absl::MutexLock lock(&cache_mutex_);
    const auto it = cache_.find(AsAbsl(chunk));
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  workspace->chunk_ids.clear();
  MergeChunk(chunk, workspace, &workspace->chunk_ids);
  ids->insert(ids->end(), workspace->chunk_ids.begin(), workspace->chunk_ids.end());
  absl::MutexLock lock(&cache_mutex_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.emplace(std::string(chunk), workspace->chunk_ids);
}

void BpeModel::InitialSymbols(std::string_view chunk, std::vector<int32_t>* symbol_ids) const {
  symbol_ids->clear();
  size_t pos = 0;
  while (pos < chunk.size()) {
    const unsigned char lead = static_cast<unsigned char>(chunk[pos]);
    if (lead < 0x80 && ascii_char_id_[lead] >= 0) {
      symbol_ids->push_back(ascii_char_id_[lead]);
      ++pos;
      continue;
    }
    // Callers pass valid UTF-8; the clamp only keeps a bad byte from reading past the end.
    const size_t length = std::clamp<size_t>(Utf8SequenceLength(lead), 1, chunk.size() - pos);
    if (std::optional<int32_t> id = TokenToId(chunk.substr(pos, length))) {
      symbol_ids->push_back(*id);
    } else {
      for (size_t k = 0; k < length; ++k) {
        symbol_ids->push_back(byte_token_id_[static_cast<unsigned char>(chunk[pos + k])]);
      }
    }
    pos += length;
  }
}

void BpeModel::MergeChunk(std::string_view chunk, Workspace* workspace,
                          std::vector<int32_t>* ids) const {
  InitialSymbols(chunk, &workspace->initial);
  const int32_t num_symbols = static_cast<int32_t>(workspace->initial.size());
  auto& symbols = workspace->symbols;
  auto& heap = workspace->heap;
  symbols.clear();
  heap.clear();
  for (int32_t i = 0; i < num_symbols; ++i) {
    symbols.push_back({workspace->initial[i], i - 1, i + 1 < num_symbols ? i + 1 : -1, true});
  }
  const auto greater = std::greater<Workspace::Candidate>();
  const auto push_pair = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    if (std::optional<MergeTarget> merge = FindMerge(symbols[left].id, symbols[right].id)) {
      heap.push_back({merge->rank, left, merge->new_id});
      std::push_heap(heap.begin(), heap.end(), greater);
    }
  };
  for (int32_t i = 0; i + 1 < num_symbols; ++i) push_pair(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), greater);
    const Workspace::Candidate top = heap.back();
    heap.pop_back();
    Workspace::Symbol& left = symbols[top.pos];
    // A stale candidate: its left symbol was merged away, or its pair changed since it was queued.
    if (!left.alive || left.next < 0) continue;
    const std::optional<MergeTarget> current = FindMerge(left.id, symbols[left.next].id);
    if (!current || current->new_id != top.new_id) continue;
    Workspace::Symbol& right = symbols[left.next];
    right.alive = false;
    left.id = top.new_id;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int32_t i = num_symbols > 0 ? 0 : -1; i >= 0; i = symbols[i].next) {
    ids->push_back(symbols[i].id);
  }
}

}  // namespace gemmaserve::text
