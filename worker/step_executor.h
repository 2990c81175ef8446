// StepExecutor: runs one StepPlan on this rank's model shard and, on rank 0, turns the logits into
// the step's results (sampled tokens, logprobs, requested logits, expert counts). It holds no
// scheduling state: everything a step needs arrives in its plan.
//
// Thread-safety: one thread drives Execute.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "gemmaserve/internal/v1/worker.pb.h"
#include "model/gemma4.h"
#include "model/kv_cache.h"
#include "ops/sampler.h"

namespace gemmaserve::worker {

class StepExecutor {
 public:
  // `model` and `cache` must outlive the executor. Only rank 0 fills results.
  StepExecutor(model::Gemma4Model& model, model::KvCache& cache, int rank);

  // INVALID_ARGUMENT (naming the sequence) when the plan does not fit the model or the cache;
  // nothing is computed then. Every rank must be given the same plan.
  absl::StatusOr<internal::v1::StepResult> Execute(const internal::v1::StepPlan& plan);

 private:
  // Fills batch_ from the plan (reusing its vectors' capacity) and finalizes it.
  absl::Status BuildBatch(const internal::v1::StepPlan& plan);
  // `logits`: [rows, vocab] f32, in host or GPU memory.
  void FillResults(const internal::v1::StepPlan& plan, const Tensor& logits,
                   internal::v1::StepResult& result);

  model::Gemma4Model& model_;
  model::KvCache& cache_;
  const int rank_;
  model::ForwardBatch batch_;  // the current step's; kept to reuse its storage
  ops::BatchSampler sampler_;  // keeps its GPU buffers between steps
};

}  // namespace gemmaserve::worker
