#include "text/added_vocabulary.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace gemmaserve::text {
namespace {

uint64_t EdgeKey(int32_t node, unsigned char byte) {
  return (static_cast<uint64_t>(node) << 8) | byte;
}

}  // namespace

AddedVocabulary::AddedVocabulary() : node_token_{-1} {
  std::fill(std::begin(can_start_), std::end(can_start_), false);
}

absl::Status AddedVocabulary::Add(AddedToken token) {
  if (token.content.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("added token id ", token.id, " has empty content"));
  }
  int32_t node = 0;
  for (const char c : token.content) {
    const auto [it, inserted] = edges_.try_emplace(EdgeKey(node, static_cast<unsigned char>(c)),
                                                   static_cast<int32_t>(node_token_.size()));
    if (inserted) node_token_.push_back(-1);
    node = it->second;
  }
  if (node_token_[node] >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("added token \"", token.content,
                                                   "\" appears more than once"));
  }
  node_token_[node] = static_cast<int32_t>(tokens_.size());
  can_start_[static_cast<unsigned char>(token.content[0])] = true;
  tokens_.push_back(std::move(token));
  return absl::OkStatus();
}

std::pair<size_t, int32_t> AddedVocabulary::LongestAt(std::string_view text, size_t pos) const {
  std::pair<size_t, int32_t> best{0, -1};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto it = edges_.find(EdgeKey(node, static_cast<unsigned char>(text[i])));
    if (it == edges_.end()) break;
    node = it->second;
    if (node_token_[node] >= 0) best = {i + 1 - pos, node_token_[node]};
  }
  return best;
}

AddedVocabulary::Match AddedVocabulary::FindFrom(std::string_view text, size_t from) const {
  for (size_t pos = from; pos < text.size(); ++pos) {
    if (!can_start_[static_cast<unsigned char>(text[pos])]) continue;
    const auto [length, token_index] = LongestAt(text, pos);
    if (token_index >= 0) return Match{pos, length, token_index};
  }
  return Match{text.size(), 0, -1};
}

void AddedVocabulary::Split(std::string_view text, bool split_special_tokens,
                            std::vector<Segment>* out) const {
  out->clear();
  size_t text_begin = 0;  // start of the pending text segment
  size_t scan = 0;
  while (scan < text.size()) {
    const Match match = FindFrom(text, scan);
    if (match.token_index < 0) break;
    scan = match.begin + match.length;
    const AddedToken& token = tokens_[match.token_index];
    if (split_special_tokens && token.special) continue;  // stays part of the text
    if (match.begin > text_begin) {
      out->push_back({text.substr(text_begin, match.begin - text_begin), -1});
    }
    out->push_back({text.substr(match.begin, match.length), token.id});
    text_begin = scan;
  }
  if (text_begin < text.size()) out->push_back({text.substr(text_begin), -1});
}

}  // namespace gemmaserve::text
