// Token sampling on rank 0 (DESIGN.md: "rank 0 samples"). Stateless per call: a seeded choice
// depends only on (seed, index of the token in its sequence), so the same request and seed give
// the same tokens whatever else shares the batch.
//
// The order is vLLM's: penalties, temperature, then min-p (relative to the most likely token),
// top-k, and top-p over what is left, renormalised. Every pass over the vocabulary is linear
// except top-p without top-k, which sorts it.
//
// Each row's options resolve to a sampling::RowPlan (PlanRow), which the CPU (SamplePlanned) and
// the GPU (kernels/sampling.h, through BatchSampler) execute with the same arithmetic
// (ops/sampling_math.h): for the same logits, options and seed both choose the same token, and
// their logprobs agree to float rounding. Functions are thread-safe; a BatchSampler is not.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/types/span.h"
#include "common/tensor.h"
#include "ops/sampling_math.h"

namespace gemmaserve::ops {

// Temperatures below this sample greedily, as in vLLM: dividing the logits by a smaller one can
// overflow f32 (a temperature of 3e-39 made every logprob NaN).
inline constexpr float kMinTemperature = 1e-5f;

struct SamplingOptions {
  float temperature = 1.0f;  // below kMinTemperature (0 included) = greedy
  int32_t top_k = 0;         // 0 = all tokens
  float top_p = 1.0f;        // nucleus mass; 1 = off
  float min_p = 0.0f;        // drop tokens below min_p × the top probability; 0 = off
  uint64_t seed = 0;
  // Penalties as OpenAI and vLLM define them: presence subtracts once from every token generated
  // so far (`output_tokens`), frequency once per appearance; repetition divides positive logits
  // and multiplies negative ones of every token in the prompt (`prompt_tokens`) or the output.
  float repetition_penalty = 1.0f;  // 1 = off
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  absl::Span<const int32_t> prompt_tokens;
  absl::Span<const int32_t> output_tokens;
};

struct TokenProbability {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token_id = 0;
  float logprob = 0.0f;  // log-probability of the chosen token under the temperature-scaled softmax
  std::vector<TokenProbability> top;  // the num_top most likely tokens, most likely first
};

// Greedy choice: the highest logit, ties to the lowest id; NaNs are skipped.
int32_t ArgMax(const float* logits, int64_t vocab_size);

// log Σ exp(logits[i] · scale), each exp in float, accumulated in double.
double LogSumExp(const float* logits, int64_t vocab_size, float scale = 1.0f);

// log softmax(logits)[token_id] at temperature 1.
float LogProbability(const float* logits, int64_t vocab_size, int32_t token_id);

// The `count` highest logits' ids, highest first, ties to the lower id; one pass
// with a heap, skipping whole chunks that cannot enter it.
std::vector<int32_t> TopIds(const float* logits, int64_t vocab_size, int64_t count);

// The `count` most likely tokens at temperature 1 with their logprobs, most likely first.
std::vector<TokenProbability> TopLogprobs(const float* logits, int64_t vocab_size, int32_t count);

// The tokens the options' penalties touch, each once, by ascending id: prompt and output tokens
// when a repetition penalty applies, output tokens (with their count in the output) when a
// presence or frequency penalty does. Empty when no penalty applies.
std::vector<sampling::PenaltyEntry> PenaltyEntries(const SamplingOptions& options,
                                                   int64_t vocab_size);

// The options of one row as both samplers execute them; appends the row's penalty entries to
// `penalties` (plan.penalty_begin indexes it). plan.row is 0: the caller sets it.
sampling::RowPlan PlanRow(const SamplingOptions& options, uint64_t token_index, int32_t num_top,
                          int64_t vocab_size, std::vector<sampling::PenaltyEntry>& penalties);

// Executes `plan` on `logits` [vocab_size] in host memory; `penalties` is what PlanRow appended to.
SampleResult SamplePlanned(const float* logits, int64_t vocab_size, const sampling::RowPlan& plan,
                           absl::Span<const sampling::PenaltyEntry> penalties);

// Chooses a token from `logits` [vocab_size]. `token_index` is the position of the new token in
// its sequence, mixed with options.seed for the random draw.
SampleResult Sample(const float* logits, int64_t vocab_size, const SamplingOptions& options,
                    uint64_t token_index, int32_t num_top = 0);

// One row of a batch to sample.
struct SampleRequest {
  int64_t row = 0;  // of the logits
  SamplingOptions options;
  uint64_t token_index = 0;
  int32_t num_top = 0;
};

namespace internal {
class DeviceSampling;
}

// Samples rows of a batch's logits where they are. From logits in host memory, Sample on each row
// (rows in parallel, OpenMP). From logits on a GPU, the rows' plans run there and only the chosen
// ids and logprobs come back, except for a row the device does not sample (more than
// kernels::kMaxDeviceTopK candidates or top logprobs: top-p without top-k, say), whose logits are
// copied back and sampled here. Keeps its GPU buffers between calls. One thread at a time.
class BatchSampler {
 public:
  BatchSampler();
  ~BatchSampler();
  BatchSampler(const BatchSampler&) = delete;
  BatchSampler& operator=(const BatchSampler&) = delete;

  // results[i] for requests[i], from row requests[i].row of `logits` [rows, vocab] f32.
  std::vector<SampleResult> Sample(const Tensor& logits, absl::Span<const SampleRequest> requests);

  // Of the rows sampled so far, how many were sampled on a GPU and how many copied back for it.
  int64_t rows_on_device() const { return rows_on_device_; }
  int64_t rows_copied_back() const { return rows_copied_back_; }

 private:
  std::unique_ptr<internal::DeviceSampling> device_;  // made at the first GPU batch
  int64_t rows_on_device_ = 0;
  int64_t rows_copied_back_ = 0;
};

}  // namespace gemmaserve::ops
