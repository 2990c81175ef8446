#include "worker/step_executor.h"

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "ops/copy.h"
#include "ops/sampler.h"

namespace gemmaserve::worker {
namespace {

using internal::v1::SequencePlan;
using internal::v1::SequenceResult;
using internal::v1::StepPlan;
using internal::v1::StepResult;

ops::SamplingOptions ToOptions(const internal::v1::SamplingParams& params, uint64_t sequence_id) {
  ops::SamplingOptions options;
  options.temperature = params.temperature();
  options.top_k = params.top_k();
  options.top_p = params.top_p() > 0 ? params.top_p() : 1.0f;
  options.min_p = params.min_p();
  // Without a seed the draw still must not depend on the batch: derive one from the sequence.
  options.seed = params.has_seed() ? params.seed() : sequence_id * 0x9e3779b97f4a7c15ull;
  options.repetition_penalty = params.repetition_penalty() > 0 ? params.repetition_penalty() : 1.0f;
  options.presence_penalty = params.presence_penalty();
  options.frequency_penalty = params.frequency_penalty();
  return options;
}

void AddTokenLogprob(int32_t token_id, double logprob, internal::v1::TokenLogprob* entry) {
  entry->set_token_id(token_id);
  entry->set_logprob(static_cast<float>(logprob));
}

// The logprob of each prompt token the step's rows predict (temperature 1): row i predicts the
// step's token i + 1, and the last row the next prompt token when the plan names it.
void AddPromptLogprobs(const SequencePlan& seq, const float* first, int64_t rows, int64_t vocab,
                       SequenceResult& out) {
  const int32_t num_top = seq.sampling().top_logprobs();
  const int64_t predicted = rows - 1 + (seq.has_next_prompt_token_id() ? 1 : 0);
  for (int64_t i = 0; i < predicted; ++i) {
    const float* logits = first + i * vocab;
    const int32_t token = i + 1 < rows ? seq.token_ids(static_cast<int>(i + 1))
                                       : seq.next_prompt_token_id();
    const double log_sum = ops::LogSumExp(logits, vocab);
    AddTokenLogprob(token, logits[token] - log_sum, out.add_prompt_logprobs());
    if (num_top <= 0) continue;
    internal::v1::TopLogprobs* top = out.add_prompt_top_logprobs();
    for (int32_t id : ops::TopIds(logits, vocab, num_top)) {
      AddTokenLogprob(id, logits[id] - log_sum, top->add_alternatives());
    }
  }
}

// What rank 0 samples for one sequence: its last logits row, `row`.
ops::SampleRequest ToRequest(const SequencePlan& seq, int64_t row) {
  ops::SampleRequest request;
  request.row = row;
  request.options = ToOptions(seq.sampling(), seq.sequence_id());
  request.options.prompt_tokens = absl::MakeConstSpan(
      seq.prompt_token_ids().data(), static_cast<size_t>(seq.prompt_token_ids_size()));
  request.options.output_tokens = absl::MakeConstSpan(
      seq.output_token_ids().data(), static_cast<size_t>(seq.output_token_ids_size()));
  request.token_index = static_cast<uint64_t>(seq.num_cached() + seq.token_ids_size());
  request.num_top = seq.sampling().top_logprobs();
  return request;
}

// Rank 0's answer for one sequence: requested logits and prompt logprobs from `first`, its first
// of `rows` logits rows in host memory (null when it asked for neither), and its sampled token.
void FillSequence(const SequencePlan& seq, const float* first, int64_t rows, int64_t vocab,
                  const ops::SampleResult* sampled, SequenceResult& out) {
  out.set_sequence_id(seq.sequence_id());
  out.set_token_id(-1);
  if (seq.return_logits()) {
    const float* last = first + (rows - 1) * vocab;
    const float* begin = seq.all_logits() ? first : last;
    out.mutable_logits()->Add(begin, last + vocab);
  }
  if (seq.prompt_logprobs()) AddPromptLogprobs(seq, first, rows, vocab, out);
  if (sampled == nullptr) return;
  out.set_token_id(sampled->token_id);
  out.set_logprob(sampled->logprob);
  for (const ops::TokenProbability& top : sampled->top) {
    AddTokenLogprob(top.token_id, top.logprob, out.add_top_logprobs());
  }
}

}  // namespace

StepExecutor::StepExecutor(model::Gemma4Model& model, model::KvCache& cache, int rank)
    : model_(model), cache_(cache), rank_(rank) {}

absl::Status StepExecutor::BuildBatch(const StepPlan& plan) {
  const int64_t vocab = model_.config().vocab_size;
  batch_.token_ids.clear();
  batch_.sequence_ids.clear();
  batch_.sequences.resize(plan.sequences_size());
  for (int s = 0; s < plan.sequences_size(); ++s) {
    const SequencePlan& seq = plan.sequences(s);
    if (seq.has_next_prompt_token_id() &&
        (seq.next_prompt_token_id() < 0 || seq.next_prompt_token_id() >= vocab)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", seq.sequence_id(), ": next_prompt_token_id ", seq.next_prompt_token_id(),
          " is outside the vocabulary of ", vocab));
    }
    batch_.token_ids.insert(batch_.token_ids.end(), seq.token_ids().begin(), seq.token_ids().end());
    model::BatchSequence& entry = batch_.sequences[s];
    entry.num_cached = seq.num_cached();
    entry.num_tokens = seq.token_ids_size();
    // The sliding table's freed front is not sent; it is never longer than the full table.
    const int64_t start = seq.sliding_blocks_start();
    if (start < 0 || start > seq.full_blocks_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", seq.sequence_id(), ": sliding_blocks_start ", start, " outside [0, ",
          seq.full_blocks_size(), "]"));
    }
    std::vector<int32_t>& sliding = entry.block_tables[static_cast<int>(model::LayerKind::kSliding)];
    sliding.assign(static_cast<size_t>(start), -1);
    sliding.insert(sliding.end(), seq.sliding_blocks().begin(), seq.sliding_blocks().end());
    entry.block_tables[static_cast<int>(model::LayerKind::kFull)].assign(seq.full_blocks().begin(),
                                                                         seq.full_blocks().end());
    entry.all_logits = seq.all_logits() || seq.prompt_logprobs();
    batch_.sequence_ids.push_back(seq.sequence_id());
  }
  return batch_.Finalize(model_.config(), cache_.geometry());
}

absl::StatusOr<StepResult> StepExecutor::Execute(const StepPlan& plan) {
  const auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(BuildBatch(plan));
  const Tensor logits = model_.Forward(batch_, cache_);
  StepResult result;
  result.set_step_id(plan.step_id());
  result.set_rank(rank_);
  if (rank_ == 0) FillResults(plan, logits, result);
  result.set_compute_ms(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  return result;
}

void StepExecutor::FillResults(const StepPlan& plan, const Tensor& logits, StepResult& result) {
  const int64_t vocab = model_.config().vocab_size;
  const int num_sequences = plan.sequences_size();
  std::vector<int64_t> first_row(num_sequences);
  std::vector<int64_t> num_rows(num_sequences);
  std::vector<ops::SampleRequest> requests;
  std::vector<int> sampled_index(num_sequences, -1);
  bool rows_wanted = false;
  int64_t row = 0;  // logits rows follow the sequences: all of a sequence's tokens, or its last
  for (int s = 0; s < num_sequences; ++s) {
    const SequencePlan& seq = plan.sequences(s);
    num_rows[s] = batch_.sequences[s].all_logits ? seq.token_ids_size() : 1;
    first_row[s] = row;
    row += num_rows[s];
    rows_wanted = rows_wanted || seq.return_logits() || seq.prompt_logprobs();
    if (seq.sample()) {
      sampled_index[s] = static_cast<int>(requests.size());
      requests.push_back(ToRequest(seq, first_row[s] + num_rows[s] - 1));
    }
    result.add_sequences();
  }
  // Sampled where the logits are: from a GPU only the tokens and logprobs come back, and the
  // rows themselves only when some sequence asked for logits or prompt logprobs.
  const std::vector<ops::SampleResult> sampled = sampler_.Sample(logits, requests);
  const Tensor host = rows_wanted ? ops::ToHost(logits) : Tensor();
  // Each sequence reads only its own logits rows and writes only its own SequenceResult.
#pragma omp parallel for schedule(dynamic)
  for (int s = 0; s < num_sequences; ++s) {
    const float* first = rows_wanted ? host.data<float>() + first_row[s] * vocab : nullptr;
    FillSequence(plan.sequences(s), first, num_rows[s], vocab,
                 sampled_index[s] < 0 ? nullptr : &sampled[sampled_index[s]],
                 *result.mutable_sequences(s));
  }
  const Tensor counts = model_.TakeExpertCounts();  // [layers, experts] i64, host
  for (int64_t layer = 0; layer < counts.dim(0); ++layer) {
    internal::v1::ExpertCounts* entry = result.add_expert_counts();
    entry->set_layer(static_cast<int32_t>(layer));
    const int64_t* tokens = counts.data<int64_t>() + layer * counts.dim(1);
    entry->mutable_tokens()->Add(tokens, tokens + counts.dim(1));
  }
}

}  // namespace gemmaserve::worker
