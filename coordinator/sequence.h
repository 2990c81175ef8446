// Sequence: the scheduler's record of one request's generation: its tokens (prompt, then what has
// been sampled), how many of them are in the KV cache, where it is in its life, and its block
// table per KV group.
//
// A plain record, and the one place a request's tokens and their counts are kept: the engine
// loop reads them here (for stop conditions and usage) rather than counting on its own.
// Ownership: the Scheduler owns every live Sequence; the Scheduler advances num_computed and
// appends tokens and prompt logprobs, the BlockManager edits block_tables (and sets num_computed
// when the prefix cache serves the front of the sequence). Nothing else writes it.
// Thread-safety: none; the engine loop is the only thread that sees it.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "coordinator/request.h"
#include "model/config.h"

namespace gemmaserve::coordinator {

enum class SequenceStatus {
  kWaiting,   // queued; holds no blocks (new, or preempted and to be recomputed)
  kRunning,   // admitted; holds blocks for its computed tokens
  kFinished,  // finished or aborted; holds nothing
};
const char* SequenceStatusName(SequenceStatus status);  // "waiting", "running", "finished"

struct Sequence {
  Sequence(uint64_t id, Request request);

  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  int64_t num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  // Tokens whose KV is still to be computed: the rest of the prompt (or of what a preemption
  // discarded), or the one newest sampled token.
  int64_t num_uncomputed() const { return num_tokens() - num_computed; }

  const uint64_t id;  // unique among the scheduler's sequences; the plan's sequence_id
  Request request;
  std::vector<int32_t> token_ids;  // prompt, then sampled tokens
  const int64_t num_prompt_tokens;
  int64_t num_computed = 0;  // front tokens whose KV is in the cache: positions [0, num_computed)
  SequenceStatus status = SequenceStatus::kWaiting;
  // Physical block per logical block (block_size positions each), indexed by model::LayerKind.
  // Both tables have the same length; the sliding one holds −1 for blocks that fell out of the
  // sliding window and were freed.
  std::array<std::vector<int32_t>, model::kNumKvGroups> block_tables;

  // With request.prompt_logprobs: entry j − 1 is prompt token j's logprob (the first prompt token
  // has none), gathered over the prefill chunks; alternatives alongside when top_logprobs > 0.
  std::vector<internal::v1::TokenLogprob> prompt_logprobs;
  std::vector<internal::v1::TopLogprobs> prompt_top_logprobs;

  // Counters for usage reports.
  int64_t num_cached_tokens = 0;  // tokens the prefix cache served at the latest admission
  int64_t num_preemptions = 0;    // times its blocks were taken back and its tokens recomputed
};

}  // namespace gemmaserve::coordinator
