#include "coordinator/sequence_driver.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace gemmaserve::coordinator {

namespace pb = internal::v1;

SequenceDriver::SequenceDriver(StepFn step, int64_t block_size, const model::KvPages& kv_pages,
                               int64_t max_sequences, int64_t vocab_size,
                               int64_t max_message_bytes)
    : step_(std::move(step)),
      block_size_(block_size),
      runs_(kv_pages, model::BlockRuns::MaxBlocks(kv_pages, std::max<int64_t>(max_sequences, 1))),
      max_sequences_(max_sequences),
      vocab_size_(vocab_size),
      max_message_bytes_(max_message_bytes) {}

pb::SequencePlan SequenceDriver::PlanFor(int64_t slot, const std::vector<int32_t>& tokens,
                                         int64_t num_cached) const {
  pb::SequencePlan plan;
  plan.set_sequence_id(static_cast<uint64_t>(slot));
  plan.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  plan.set_num_cached(num_cached);
  for (int64_t b = 0; b < runs_.blocks(); ++b) {
    plan.add_sliding_blocks(runs_.Block(slot, model::LayerKind::kSliding, b));
    plan.add_full_blocks(runs_.Block(slot, model::LayerKind::kFull, b));
  }
  return plan;
}

absl::Status SequenceDriver::CheckFits(const std::vector<std::vector<int32_t>>& prompts,
                                       int64_t extra) const {
  if (prompts.empty()) return absl::InvalidArgumentError("no prompt given");
  if (static_cast<int64_t>(prompts.size()) > max_sequences_) {
    return absl::InvalidArgumentError(absl::StrCat(prompts.size(), " prompts exceed the ",
                                                   max_sequences_, " sequences the cache holds"));
  }
  for (size_t s = 0; s < prompts.size(); ++s) {
    if (prompts[s].empty()) return absl::InvalidArgumentError(absl::StrCat("prompt ", s, " is empty"));
    const int64_t needed = static_cast<int64_t>(prompts[s].size()) + extra;
    if (needed > max_context()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", s, " (", prompts[s].size(),
                                                     " tokens) plus ", extra,
                                                     " new tokens exceeds the context of ",
                                                     max_context(), " tokens"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<float>>> SequenceDriver::Logits(
    const std::vector<std::vector<int32_t>>& prompts, bool all_positions) {
  RETURN_IF_ERROR(CheckFits(prompts, 0));
  if (all_positions) return AllLogits(prompts);
  pb::StepPlan plan;
  plan.set_step_id(next_step_id_++);
  for (size_t s = 0; s < prompts.size(); ++s) {
    pb::SequencePlan* seq = plan.add_sequences();
    *seq = PlanFor(static_cast<int64_t>(s), prompts[s], 0);
    seq->set_return_logits(true);
  }
  ASSIGN_OR_RETURN(pb::StepResult result, step_(plan));
  std::vector<std::vector<float>> logits;
  for (const pb::SequenceResult& seq : result.sequences()) {
    logits.emplace_back(seq.logits().begin(), seq.logits().end());
  }
  if (logits.size() != prompts.size()) {
    return absl::InternalError(absl::StrCat("step returned ", logits.size(), " sequences for ",
                                            prompts.size(), " prompts"));
  }
  return logits;
}

absl::StatusOr<std::vector<std::vector<float>>> SequenceDriver::AllLogits(
    const std::vector<std::vector<int32_t>>& prompts) {
  const int64_t rows_per_step = MaxLogitsRowsPerStep(max_message_bytes_, vocab_size_);
  std::vector<std::vector<float>> logits(prompts.size());
  for (size_t s = 0; s < prompts.size(); ++s) {
    const int64_t length = static_cast<int64_t>(prompts[s].size());
    for (int64_t begin = 0; begin < length; begin += rows_per_step) {
      const int64_t end = std::min(length, begin + rows_per_step);
      pb::StepPlan plan;
      plan.set_step_id(next_step_id_++);
      pb::SequencePlan* seq = plan.add_sequences();
      *seq = PlanFor(static_cast<int64_t>(s),
                     std::vector<int32_t>(prompts[s].begin() + begin, prompts[s].begin() + end),
                     begin);
      seq->set_return_logits(true);
      seq->set_all_logits(true);
      ASSIGN_OR_RETURN(pb::StepResult result, step_(plan));
      if (result.sequences_size() != 1 ||
          result.sequences(0).logits_size() != (end - begin) * vocab_size_) {
        return absl::InternalError(absl::StrCat("step ", plan.step_id(), " returned no logits for ",
                                                end - begin, " positions"));
      }
      const auto& chunk = result.sequences(0).logits();
      logits[s].insert(logits[s].end(), chunk.begin(), chunk.end());
    }
  }
  return logits;
}

absl::StatusOr<std::vector<SequenceDriver::Generation>> SequenceDriver::Generate(
    const std::vector<std::vector<int32_t>>& prompts, int64_t max_new_tokens,
    const pb::SamplingParams& sampling, const std::vector<int64_t>& stop_ids, bool capture_logits) {
  if (max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens must be ≥ 0");
  RETURN_IF_ERROR(CheckFits(prompts, max_new_tokens));
  std::vector<Generation> generations(prompts.size());
  if (max_new_tokens == 0) {
    for (Generation& g : generations) g.finish_reason = "length";
    return generations;
  }
  // Step inputs: the whole prompt first, then each sequence's newest token.
  std::vector<int64_t> active(prompts.size());
  for (size_t s = 0; s < prompts.size(); ++s) active[s] = static_cast<int64_t>(s);
  bool prefill = true;
  std::chrono::steady_clock::time_point decode_start;
  while (!active.empty()) {
    pb::StepPlan plan;
    plan.set_step_id(next_step_id_++);
    for (int64_t s : active) {
      const std::vector<int32_t>& out = generations[s].tokens;
      const int64_t cached = prefill ? 0 : static_cast<int64_t>(prompts[s].size() + out.size()) - 1;
      pb::SequencePlan* seq = plan.add_sequences();
      *seq = PlanFor(s, prefill ? prompts[s] : std::vector<int32_t>{out.back()}, cached);
      seq->set_sample(true);
      *seq->mutable_sampling() = sampling;
      seq->set_return_logits(capture_logits);
    }
    const bool was_prefill = prefill;
    prefill = false;
    ASSIGN_OR_RETURN(pb::StepResult result, step_(plan));
    const auto now = std::chrono::steady_clock::now();
    if (was_prefill) decode_start = now;
    if (result.sequences_size() != static_cast<int>(active.size())) {
      return absl::InternalError(absl::StrCat("step ", plan.step_id(), " returned ",
                                              result.sequences_size(), " sequences for ",
                                              active.size()));
    }
    std::vector<int64_t> still_active;
    for (size_t i = 0; i < active.size(); ++i) {
      Generation& g = generations[active[i]];
      const pb::SequenceResult& seq = result.sequences(static_cast<int>(i));
      g.tokens.push_back(seq.token_id());
      g.decode_seconds = std::chrono::duration<double>(now - decode_start).count();
      if (capture_logits) g.step_logits.emplace_back(seq.logits().begin(), seq.logits().end());
      if (std::find(stop_ids.begin(), stop_ids.end(), seq.token_id()) != stop_ids.end()) {
        g.finish_reason = "stop";
      } else if (static_cast<int64_t>(g.tokens.size()) >= max_new_tokens) {
        g.finish_reason = "length";
      } else {
        still_active.push_back(active[i]);
      }
    }
    active = std::move(still_active);
  }
  return generations;
}

}  // namespace gemmaserve::coordinator
