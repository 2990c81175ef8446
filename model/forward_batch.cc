#include "model/forward_batch.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gemmaserve::model {
namespace {

// The window of keys a group's layers read: every position for full layers, the last
// sliding_window positions (including the first query's own) for sliding ones.
int64_t FirstReadPosition(const Gemma4Config& config, LayerKind group, int64_t num_cached) {
  if (group == LayerKind::kFull) return 0;
  return std::max<int64_t>(0, num_cached - config.sliding_window + 1);
}

}  // namespace

absl::Status ForwardBatch::Finalize(const Gemma4Config& config, int64_t block_size,
                                    const std::array<int64_t, kNumKvGroups>& num_blocks) {
  auto Name = [this](size_t s) {
    return absl::StrCat("sequence ", s < sequence_ids.size() ? sequence_ids[s] : s);
  };
  positions.clear();
  token_begin.clear();
  logits_rows.clear();
  for (auto& slots : slot_mapping) slots.assign(token_ids.size(), -1);

  int64_t next_token = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const BatchSequence& seq = sequences[s];
    if (seq.num_tokens <= 0 || seq.num_cached < 0) {
      return absl::InvalidArgumentError(absl::StrCat(Name(s), ": num_tokens ", seq.num_tokens,
                                                     ", num_cached ", seq.num_cached));
    }
    const int64_t end = seq.num_cached + seq.num_tokens;
    if (end > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(Name(s), ": context of ", end,
                                                     " tokens exceeds max_position_embeddings ",
                                                     config.max_position_embeddings));
    }
    if (next_token + seq.num_tokens > num_tokens()) {
      return absl::InvalidArgumentError(absl::StrCat(Name(s), " needs ", seq.num_tokens,
                                                     " tokens but only ", num_tokens() - next_token,
                                                     " remain in token_ids"));
    }
    for (int g = 0; g < kNumKvGroups; ++g) {
      const LayerKind group = static_cast<LayerKind>(g);
      if (config.NumLayersOfKind(group) == 0) continue;
      const std::vector<int32_t>& table = seq.block_tables[g];
      const int64_t needed = (end + block_size - 1) / block_size;
      if (static_cast<int64_t>(table.size()) < needed) {
        return absl::InvalidArgumentError(absl::StrCat(Name(s), ": ", LayerKindName(group),
                                                       " block table has ", table.size(),
                                                       " blocks, needs ", needed));
      }
      for (int64_t b = FirstReadPosition(config, group, seq.num_cached) / block_size; b < needed; ++b) {
        if (table[b] < 0 || table[b] >= num_blocks[g]) {
          return absl::InvalidArgumentError(absl::StrCat(Name(s), ": ", LayerKindName(group),
                                                         " block ", b, " is ", table[b],
                                                         ", outside the pool of ", num_blocks[g]));
        }
      }
      for (int64_t i = 0; i < seq.num_tokens; ++i) {
        const int64_t position = seq.num_cached + i;
        slot_mapping[g][next_token + i] =
            static_cast<int64_t>(table[position / block_size]) * block_size + position % block_size;
      }
    }
    token_begin.push_back(next_token);
    for (int64_t i = 0; i < seq.num_tokens; ++i) {
      const int32_t id = token_ids[next_token + i];
      if (id < 0 || id >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(Name(s), ": token id ", id,
                                                       " outside the vocabulary [0, ",
                                                       config.vocab_size, ")"));
      }
      positions.push_back(static_cast<int32_t>(seq.num_cached + i));
      if (seq.all_logits || i == seq.num_tokens - 1) logits_rows.push_back(next_token + i);
    }
    next_token += seq.num_tokens;
  }
  if (next_token != num_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat("token_ids has ", num_tokens(),
                                                   " tokens but the sequences take ", next_token));
  }
  return absl::OkStatus();
}

}  // namespace gemmaserve::model
