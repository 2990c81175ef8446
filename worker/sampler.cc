#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace gemmaserve::worker {
namespace {

// splitmix64: a well-mixed 64-bit hash, so nearby (seed, index) pairs give unrelated draws.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from the top 53 bits.
double UniformDraw(uint64_t seed, uint64_t index) {
  const uint64_t bits = Mix(Mix(seed) ^ Mix(index + 0x632be59bd9b4e019ull));
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

// log-softmax of logits / temperature, in double for a stable normaliser.
std::vector<double> LogSoftmax(const float* logits, int64_t n, double temperature) {
  std::vector<double> out(n);
  double max_value = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = logits[i] / temperature;
    max_value = std::max(max_value, out[i]);
  }
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(out[i] - max_value);
  const double log_sum = max_value + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[i] -= log_sum;
  return out;
}

}  // namespace

int32_t ArgMax(const float* logits, int64_t vocab_size) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab_size; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

float LogProbability(const float* logits, int64_t vocab_size, int32_t token_id) {
  double max_value = -INFINITY;
  for (int64_t i = 0; i < vocab_size; ++i) max_value = std::max<double>(max_value, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab_size; ++i) sum += std::exp(logits[i] - max_value);
  return static_cast<float>(logits[token_id] - max_value - std::log(sum));
}

namespace {

bool HasPenalties(const SamplingOptions& o) {
  return !o.output_tokens.empty() &&
         ((o.repetition_penalty > 0.0f && o.repetition_penalty != 1.0f) ||
          o.presence_penalty != 0.0f || o.frequency_penalty != 0.0f);
}

// logits with the options' penalties applied; `scratch` holds the copy.
const float* Penalized(const float* logits, int64_t vocab_size, const SamplingOptions& o,
                       std::vector<float>& scratch) {
  if (!HasPenalties(o)) return logits;
  scratch.assign(logits, logits + vocab_size);
  std::vector<std::pair<int32_t, int32_t>> counts;  // (token, occurrences), sorted by token
  std::vector<int32_t> tokens(o.output_tokens.begin(), o.output_tokens.end());
  std::sort(tokens.begin(), tokens.end());
  for (int32_t token : tokens) {
    if (token < 0 || token >= vocab_size) continue;
    if (counts.empty() || counts.back().first != token) counts.push_back({token, 0});
    ++counts.back().second;
  }
  for (const auto& [token, count] : counts) {
    float& logit = scratch[token];
    if (o.repetition_penalty > 0.0f && o.repetition_penalty != 1.0f) {
      logit = logit > 0 ? logit / o.repetition_penalty : logit * o.repetition_penalty;
    }
    logit -= o.presence_penalty + o.frequency_penalty * static_cast<float>(count);
  }
  return scratch.data();
}

}  // namespace

SampleResult Sample(const float* raw_logits, int64_t vocab_size, const SamplingOptions& options,
                    uint64_t token_index, int32_t num_top) {
  std::vector<float> penalized;
  const float* logits = Penalized(raw_logits, vocab_size, options, penalized);
  const bool greedy = options.temperature <= 0.0f;
  const std::vector<double> logprobs =
      LogSoftmax(logits, vocab_size, greedy ? 1.0 : static_cast<double>(options.temperature));

  const bool filtered = options.top_k > 0 || options.top_p < 1.0f || options.min_p > 0.0f;
  if (!greedy && !filtered && num_top == 0) {
    // Plain temperature sampling needs no ordering: walk the distribution in id order.
    const double target = UniformDraw(options.seed, token_index);
    double cumulative = 0.0;
    int64_t chosen = vocab_size - 1;
    for (int64_t i = 0; i < vocab_size; ++i) {
      cumulative += std::exp(logprobs[i]);
      if (target < cumulative) {
        chosen = i;
        break;
      }
    }
    return {static_cast<int32_t>(chosen), static_cast<float>(logprobs[chosen]), {}};
  }

  // Candidates by descending probability, ties to the lower id.
  std::vector<int32_t> order(vocab_size);
  std::iota(order.begin(), order.end(), 0);
  auto more_likely = [&](int32_t a, int32_t b) {
    return logprobs[a] > logprobs[b] || (logprobs[a] == logprobs[b] && a < b);
  };
  const int64_t top_k = options.top_k > 0 ? std::min<int64_t>(options.top_k, vocab_size) : vocab_size;
  const int64_t needed = std::max<int64_t>(greedy ? 1 : top_k, std::min<int64_t>(num_top, vocab_size));
  std::partial_sort(order.begin(), order.begin() + needed, order.end(), more_likely);

  SampleResult result;
  for (int32_t i = 0; i < std::min<int64_t>(num_top, vocab_size); ++i) {
    result.top.push_back({order[i], static_cast<float>(logprobs[order[i]])});
  }
  if (greedy) {
    result.token_id = order[0];
    result.logprob = static_cast<float>(logprobs[order[0]]);
    return result;
  }
  // Filter: top-k, then min-p relative to the best, then the smallest prefix with mass ≥ top-p.
  const double best = std::exp(logprobs[order[0]]);
  int64_t kept = 0;
  double mass = 0.0;
  for (int64_t i = 0; i < top_k; ++i) {
    const double p = std::exp(logprobs[order[i]]);
    if (options.min_p > 0.0f && p < options.min_p * best) break;
    mass += p;
    ++kept;
    if (options.top_p < 1.0f && mass >= options.top_p) break;
  }
  const double target = UniformDraw(options.seed, token_index) * mass;
  double cumulative = 0.0;
  int32_t chosen = order[kept - 1];
  for (int64_t i = 0; i < kept; ++i) {
    cumulative += std::exp(logprobs[order[i]]);
    if (target < cumulative) {
      chosen = order[i];
      break;
    }
  }
  result.token_id = chosen;
  result.logprob = static_cast<float>(logprobs[chosen]);
  return result;
}

}  // namespace gemmaserve::worker
