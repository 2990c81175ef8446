#include "coordinator/step_message_size.h"

#include <algorithm>

namespace gemmaserve::coordinator {
namespace {

// Worst-case encoded sizes, bytes.
constexpr int64_t kVarint = 10;          // a uint64 or a negative int32
constexpr int64_t kPositiveInt32 = 5;
constexpr int64_t kField = 1 + kVarint;  // a tag and a varint value
constexpr int64_t kHeader = 1 + 5;       // a tag and a length (submessage or packed field)
constexpr int64_t kFloat = 1 + 4;
constexpr int64_t kTokenLogprob = kHeader + kField + kFloat;

// Sequences in one step: each computes at least one token.
int64_t SequencesPerStep(const StepShape& s) {
  return std::min(s.max_num_seqs, s.max_tokens_per_step);
}

}  // namespace

int64_t MaxPlanBytes(const StepShape& s) {
  const int64_t num_blocks = (s.max_model_len + s.block_size - 1) / s.block_size;
  // Sequence id, num_cached, sample, the flags, next_prompt_token_id, and SamplingParams (three
  // ints, six floats, two bools), each with its field's tag; plus the five packed fields' headers.
  constexpr int64_t kFixed = 3 * kField + 4 * 2 + kField + kHeader + 3 * kField + 6 * kFloat +
                             2 * 2 + 5 * kHeader;
  const int64_t per_sequence = kHeader + kFixed + kField +  // sliding_blocks_start
                               2 * num_blocks * kPositiveInt32 +  // sliding, full tables
                               s.max_model_len * kPositiveInt32;  // prompt + output history
  return kField + s.max_tokens_per_step * kPositiveInt32 + SequencesPerStep(s) * per_sequence;
}

int64_t MaxResultBytes(const StepShape& s) {
  const int64_t top = s.max_top_logprobs * kTokenLogprob;
  // Sequence id, token id, logprob; its top logprobs.
  const int64_t per_sequence = kHeader + 2 * kField + kFloat + top;
  // A prompt logprob and its alternatives, for each row of the step, plus one per sequence (the
  // prompt token after a prefill chunk).
  const int64_t per_row = kTokenLogprob + kHeader + top;
  const int64_t rows = s.max_tokens_per_step + SequencesPerStep(s);
  const int64_t expert_counts = s.num_layers * (kHeader + kField + kHeader + s.num_experts * kVarint);
  // Step id, rank, generation, two doubles, and an error message of a few hundred bytes.
  constexpr int64_t kFixed = 3 * kField + 2 * 9 + 1024;
  return kFixed + SequencesPerStep(s) * per_sequence + rows * per_row + expert_counts;
}

int64_t StepMessageLimit(const StepShape& shape) {
  const int64_t bound = std::max(MaxPlanBytes(shape), MaxResultBytes(shape));
  return std::clamp(bound + bound / 4, kMinStepMessageBytes, kMaxStepMessageBytes);
}

int64_t MaxLogitsRowsPerStep(int64_t max_message_bytes, int64_t vocab_size) {
  // Everything but the logits (ids, expert counts of the largest MoE, timings) fits in 1 MiB; a
  // small limit (tests) keeps a quarter.
  const int64_t reserved = std::min(int64_t{1} << 20, max_message_bytes / 4);
  const int64_t row_bytes = std::max<int64_t>(vocab_size, 1) * 4;
  return std::max<int64_t>(1, (max_message_bytes - reserved) / row_bytes);
}

}  // namespace gemmaserve::coordinator
