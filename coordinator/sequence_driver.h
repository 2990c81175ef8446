// SequenceDriver: runs whole sequences (prefill, then one decode token per step) through a step
// function that executes StepPlans, be it a ModelShard in this process or a WorkerGroup of worker
// processes. Each sequence slot owns a fixed, contiguous run of KV blocks, so there is no block
// manager: this serves `gemmaserve run` / `logits` and the parity tests, where every sequence
// starts and ends together. Serving goes through the scheduler instead.
//
// Thread-safety: one thread drives a SequenceDriver.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/step_message_size.h"
#include "gemmaserve/internal/v1/worker.pb.h"
#include "model/kv_pages.h"

namespace gemmaserve::coordinator {

class SequenceDriver {
 public:
  using StepFn = std::function<absl::StatusOr<internal::v1::StepResult>(const internal::v1::StepPlan&)>;

  // The workers' `kv_pages`, in blocks of `block_size` slots, are split evenly over
  // `max_sequences` slots (model::BlockRuns); `vocab_size` shapes the returned logits. No step
  // asks for more logits than a result of `max_message_bytes` holds (step_message_size.h).
  SequenceDriver(StepFn step, int64_t block_size, const model::KvPages& kv_pages,
                 int64_t max_sequences, int64_t vocab_size,
                 int64_t max_message_bytes = kDefaultMaxStepMessageBytes);

  // Tokens one sequence can hold (prompt plus generated).
  int64_t max_context() const { return runs_.blocks() * block_size_; }

  // Returns, per prompt, the logits of its last position ([vocab]: every prompt prefilled in one
  // step) or of every position ([length × vocab]: each prompt prefilled in as many steps as its
  // logits need to fit the message limit).
  absl::StatusOr<std::vector<std::vector<float>>> Logits(
      const std::vector<std::vector<int32_t>>& prompts, bool all_positions);

  struct Generation {
    std::vector<int32_t> tokens;
    std::string finish_reason;             // "stop" (a stop id, kept in tokens) or "length"
    std::vector<std::vector<float>> step_logits;  // with capture_logits: [tokens][vocab]
    // Wall time from the end of the prefill step to this sequence's last token: its decode steps
    // (tokens.size() − 1 of them), timed apart from the prefill.
    double decode_seconds = 0;
  };
  // Prefills the prompts together, then decodes them in lockstep until each has max_new_tokens
  // tokens or produced one of stop_ids.
  absl::StatusOr<std::vector<Generation>> Generate(const std::vector<std::vector<int32_t>>& prompts,
                                                   int64_t max_new_tokens,
                                                   const internal::v1::SamplingParams& sampling,
                                                   const std::vector<int64_t>& stop_ids,
                                                   bool capture_logits = false);

 private:
  absl::StatusOr<std::vector<std::vector<float>>> AllLogits(
      const std::vector<std::vector<int32_t>>& prompts);
  internal::v1::SequencePlan PlanFor(int64_t slot, const std::vector<int32_t>& tokens,
                                     int64_t num_cached) const;
  absl::Status CheckFits(const std::vector<std::vector<int32_t>>& prompts, int64_t extra) const;

  StepFn step_;
  int64_t block_size_;
  model::BlockRuns runs_;  // one per slot
  int64_t max_sequences_;
  int64_t vocab_size_;
  int64_t max_message_bytes_;
  uint64_t next_step_id_ = 1;
};

}  // namespace gemmaserve::coordinator
