#include "ops/sampler.h"

#include <algorithm>
#include <cmath>
#include <queue>

#include "common/check.h"
#include "ops/copy.h"
#include "ops/sampling_math.h"
#include "ops/vector_loops.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "kernels/sampling.h"
#endif

namespace gemmaserve::ops {
namespace {

bool RepetitionApplies(const SamplingOptions& o) {
  return o.repetition_penalty > 0.0f && o.repetition_penalty != 1.0f;
}

// logits with the plan's penalties applied; `scratch` holds the copy.
const float* Penalized(const float* logits, int64_t vocab_size, const sampling::RowPlan& plan,
                       absl::Span<const sampling::PenaltyEntry> penalties,
                       std::vector<float>& scratch) {
  if (plan.penalty_count == 0) return logits;
  scratch.assign(logits, logits + vocab_size);
  for (const sampling::PenaltyEntry& e : penalties.subspan(plan.penalty_begin, plan.penalty_count)) {
    scratch[e.token_id] = sampling::Penalize(scratch[e.token_id], plan.repetition != 0,
                                             plan.repetition_penalty, e.output_count,
                                             plan.presence_penalty, plan.frequency_penalty);
  }
  return scratch.data();
}

}  // namespace

int32_t ArgMax(const float* logits, int64_t vocab_size) {
  // The largest value by one vector pass, then its first position.
  const float top = MaxRow(logits, vocab_size);
  for (int64_t i = 0; i < vocab_size; ++i) {
    if (logits[i] == top) return static_cast<int32_t>(i);
  }
  return 0;  // every logit NaN
}

double LogSumExp(const float* logits, int64_t vocab_size, float scale) {
  const float top = MaxRow(logits, vocab_size) * scale;
  return top + std::log(SumExpRow(logits, vocab_size, scale, top));
}

float LogProbability(const float* logits, int64_t vocab_size, int32_t token_id) {
  return static_cast<float>(logits[token_id] - LogSumExp(logits, vocab_size));
}

std::vector<int32_t> TopIds(const float* logits, int64_t vocab_size, int64_t count) {
  count = std::min(count, vocab_size);
  // A min-heap of the best `count` so far; its top is the worst of them (lower logit, or the
  // same logit and a higher id). Scanning ids upwards, an equal logit never displaces it.
  auto worse = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::priority_queue<int32_t, std::vector<int32_t>, decltype(worse)> heap(worse);
  if (count <= 0) return {};
  int64_t i = 0;
  for (; i < vocab_size && static_cast<int64_t>(heap.size()) < count; ++i) {
    heap.push(static_cast<int32_t>(i));
  }
  // Then only a logit above the heap's worst enters, so a chunk whose maximum is not above it is
  // skipped on one vector pass.
  constexpr int64_t kChunk = 64;
  while (i < vocab_size) {
    const int64_t end = std::min(i + kChunk, vocab_size);
    if (MaxRow(logits + i, end - i) > logits[heap.top()]) {
      for (; i < end; ++i) {
        if (logits[i] > logits[heap.top()]) {
          heap.pop();
          heap.push(static_cast<int32_t>(i));
        }
      }
    }
    i = end;
  }
  std::vector<int32_t> ids(heap.size());
  for (size_t i = ids.size(); i > 0; --i) {
    ids[i - 1] = heap.top();
    heap.pop();
  }
  return ids;
}

std::vector<TokenProbability> TopLogprobs(const float* logits, int64_t vocab_size, int32_t count) {
  std::vector<TokenProbability> top;
  if (count <= 0) return top;
  const double log_sum = LogSumExp(logits, vocab_size);
  for (int32_t id : TopIds(logits, vocab_size, count)) {
    top.push_back({id, static_cast<float>(logits[id] - log_sum)});
  }
  return top;
}

std::vector<sampling::PenaltyEntry> PenaltyEntries(const SamplingOptions& o, int64_t vocab_size) {
  const bool repetition = RepetitionApplies(o) &&
                          (!o.prompt_tokens.empty() || !o.output_tokens.empty());
  const bool additive = !o.output_tokens.empty() &&
                        (o.presence_penalty != 0.0f || o.frequency_penalty != 0.0f);
  if (!repetition && !additive) return {};
  // (token, appears in the output) for every token seen, sorted, then merged per token.
  std::vector<std::pair<int32_t, bool>> seen;
  if (repetition) {
    for (int32_t token : o.prompt_tokens) seen.emplace_back(token, false);
  }
  for (int32_t token : o.output_tokens) seen.emplace_back(token, true);
  std::sort(seen.begin(), seen.end());
  std::vector<sampling::PenaltyEntry> entries;
  for (const auto& [token, in_output] : seen) {
    if (token < 0 || token >= vocab_size) continue;
    if (entries.empty() || entries.back().token_id != token) entries.push_back({token, 0});
    if (in_output && additive) ++entries.back().output_count;
  }
  return entries;
}

sampling::RowPlan PlanRow(const SamplingOptions& options, uint64_t token_index, int32_t num_top,
                          int64_t vocab_size, std::vector<sampling::PenaltyEntry>& penalties) {
  sampling::RowPlan plan;
  plan.greedy = !(options.temperature >= kMinTemperature);  // NaN too
  if (!plan.greedy) {
    plan.scale = 1.0f / options.temperature;
    plan.draw = sampling::UniformDraw(options.seed, token_index);
    plan.top_p = options.top_p;
    plan.log_min_p = options.min_p > 0.0f ? std::log(options.min_p) : -INFINITY;
    if (options.top_k > 0 || options.top_p < 1.0f) {
      plan.candidates = static_cast<int32_t>(
          options.top_k > 0 && options.top_k < vocab_size ? options.top_k : vocab_size);
    }
  }
  plan.num_top = static_cast<int32_t>(std::min<int64_t>(std::max(num_top, 0), vocab_size));
  const std::vector<sampling::PenaltyEntry> entries = PenaltyEntries(options, vocab_size);
  plan.repetition = RepetitionApplies(options);
  plan.repetition_penalty = options.repetition_penalty;
  plan.presence_penalty = options.presence_penalty;
  plan.frequency_penalty = options.frequency_penalty;
  plan.penalty_begin = static_cast<int32_t>(penalties.size());
  plan.penalty_count = static_cast<int32_t>(entries.size());
  penalties.insert(penalties.end(), entries.begin(), entries.end());
  return plan;
}

SampleResult SamplePlanned(const float* raw_logits, int64_t vocab_size,
                           const sampling::RowPlan& plan,
                           absl::Span<const sampling::PenaltyEntry> penalties) {
  std::vector<float> penalized;
  const float* logits = Penalized(raw_logits, vocab_size, plan, penalties, penalized);
  SampleResult result;
  sampling::WeightParams w;
  w.scale = plan.scale;
  if (plan.greedy) {
    result.token_id = ArgMax(logits, vocab_size);
  } else if (plan.candidates > 0) {
    const std::vector<int32_t> candidates = TopIds(logits, vocab_size, plan.candidates);
    w.top = sampling::Mul(logits[candidates[0]], plan.scale);
    w.floor = sampling::Add(w.top, plan.log_min_p);
    result.token_id = sampling::DrawFromCandidates(
        logits, candidates.data(), static_cast<int64_t>(candidates.size()), w, plan.top_p,
        plan.draw);
  } else {
    w.top = sampling::Mul(MaxRow(logits, vocab_size), plan.scale);
    w.floor = sampling::Add(w.top, plan.log_min_p);
    std::vector<double> chunk_mass(sampling::NumChunks(vocab_size));
    for (size_t c = 0; c < chunk_mass.size(); ++c) {
      const int64_t begin = static_cast<int64_t>(c) * sampling::kChunk;
      chunk_mass[c] = sampling::ChunkMassOnHost(logits, begin,
                                                std::min(begin + sampling::kChunk, vocab_size), w);
    }
    result.token_id = sampling::DrawInIdOrder(logits, vocab_size, chunk_mass.data(), w, plan.draw);
  }
  const double log_sum = LogSumExp(logits, vocab_size, plan.scale);
  result.logprob = static_cast<float>(logits[result.token_id] * plan.scale - log_sum);
  if (plan.num_top > 0) {
    for (int32_t id : TopIds(logits, vocab_size, plan.num_top)) {
      result.top.push_back({id, static_cast<float>(logits[id] * plan.scale - log_sum)});
    }
  }
  return result;
}

SampleResult Sample(const float* logits, int64_t vocab_size, const SamplingOptions& options,
                    uint64_t token_index, int32_t num_top) {
  std::vector<sampling::PenaltyEntry> penalties;
  const sampling::RowPlan plan = PlanRow(options, token_index, num_top, vocab_size, penalties);
  return SamplePlanned(logits, vocab_size, plan, penalties);
}


namespace internal {
#ifdef GEMMASERVE_HAVE_CUDA
class DeviceSampling : public kernels::DeviceSampler {};
#else
class DeviceSampling {};
#endif
}  // namespace internal

BatchSampler::BatchSampler() = default;
BatchSampler::~BatchSampler() = default;

std::vector<SampleResult> BatchSampler::Sample(const Tensor& logits,
                                               absl::Span<const SampleRequest> requests) {
  CHECK(logits.dtype() == DType::kF32 && logits.rank() == 2)
      << "BatchSampler: logits must be f32 [rows, vocab], got " << logits.DebugString();
  const int64_t vocab = logits.dim(1);
  std::vector<sampling::PenaltyEntry> penalties;
  std::vector<sampling::RowPlan> plans(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const SampleRequest& request = requests[i];
    CHECK(request.row >= 0 && request.row < logits.dim(0))
        << "BatchSampler: row " << request.row << " of " << logits.DebugString();
    plans[i] = PlanRow(request.options, request.token_index, request.num_top, vocab, penalties);
    plans[i].row = request.row;
  }
  std::vector<SampleResult> results(requests.size());
  if (logits.device().is_cpu()) {
    // Each request reads only its own row and writes only its own result.
#pragma omp parallel for schedule(dynamic)
    for (size_t i = 0; i < plans.size(); ++i) {
      results[i] = SamplePlanned(logits.data<float>() + plans[i].row * vocab, vocab, plans[i],
                                 penalties);
    }
    return results;
  }
#ifdef GEMMASERVE_HAVE_CUDA
  std::vector<sampling::RowPlan> device_plans;
  std::vector<size_t> device_requests;
  for (size_t i = 0; i < plans.size(); ++i) {
    const sampling::RowPlan& plan = plans[i];
    if (plan.candidates <= kernels::kMaxDeviceTopK && plan.num_top <= kernels::kMaxDeviceTopK) {
      device_plans.push_back(plan);
      device_requests.push_back(i);
      continue;
    }
    const Tensor row = ToHost(logits.Slice(plan.row, plan.row + 1));
    results[i] = SamplePlanned(row.data<float>(), vocab, plan, penalties);
    ++rows_copied_back_;
  }
  if (device_plans.empty()) return results;
  if (device_ == nullptr) device_ = std::make_unique<internal::DeviceSampling>();
  const kernels::DeviceSamples samples = device_->Sample(logits, device_plans, penalties);
  for (size_t d = 0; d < device_plans.size(); ++d) {
    SampleResult& result = results[device_requests[d]];
    result.token_id = samples.token_ids[d];
    result.logprob = samples.logprobs[d];
    for (int32_t j = 0; j < device_plans[d].num_top; ++j) {
      const size_t at = d * samples.max_num_top + j;
      result.top.push_back({samples.top_ids[at], samples.top_logprobs[at]});
    }
  }
  rows_on_device_ += static_cast<int64_t>(device_plans.size());
  return results;
#else
  CHECK(false) << "BatchSampler: logits on " << logits.device().ToString()
               << " in a build without CUDA";
  return results;
#endif
}

}  // namespace gemmaserve::ops
