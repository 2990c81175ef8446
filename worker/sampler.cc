#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>

#include "ops/vector_loops.h"

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

bool HasPenalties(const SamplingOptions& o) {
  const bool repetition = o.repetition_penalty > 0.0f && o.repetition_penalty != 1.0f;
  return (repetition && (!o.prompt_tokens.empty() || !o.output_tokens.empty())) ||
         (!o.output_tokens.empty() && (o.presence_penalty != 0.0f || o.frequency_penalty != 0.0f));
}

// logits with the options' penalties applied; `scratch` holds the copy.
const float* Penalized(const float* logits, int64_t vocab_size, const SamplingOptions& o,
                       std::vector<float>& scratch) {
  if (!HasPenalties(o)) return logits;
  scratch.assign(logits, logits + vocab_size);
  if (o.repetition_penalty > 0.0f && o.repetition_penalty != 1.0f) {
    std::vector<bool> seen(vocab_size, false);
    for (absl::Span<const int32_t> tokens : {o.prompt_tokens, o.output_tokens}) {
      for (int32_t token : tokens) {
        if (token < 0 || token >= vocab_size || seen[token]) continue;
        seen[token] = true;
        float& logit = scratch[token];
        logit = logit > 0 ? logit / o.repetition_penalty : logit * o.repetition_penalty;
      }
    }
  }
  std::vector<int32_t> generated(o.output_tokens.begin(), o.output_tokens.end());
  std::sort(generated.begin(), generated.end());
  for (size_t i = 0; i < generated.size();) {
    const int32_t token = generated[i];
    size_t end = i;
    while (end < generated.size() && generated[end] == token) ++end;
    if (token >= 0 && token < vocab_size) {
      scratch[token] -= o.presence_penalty + o.frequency_penalty * static_cast<float>(end - i);
    }
    i = end;
  }
  return scratch.data();
}

// Candidates for top-k / top-p: most likely first. All of them (a sort) when top_k is off.
std::vector<int32_t> Candidates(const float* logits, int64_t vocab_size, int32_t top_k) {
  if (top_k > 0 && top_k < vocab_size) return TopIds(logits, vocab_size, top_k);
  std::vector<int32_t> order(vocab_size);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [logits](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  return order;
}

// Draws from the candidates (most likely first) after min-p and top-p, renormalised.
int32_t DrawFromCandidates(const float* logits, const std::vector<int32_t>& candidates,
                           const SamplingOptions& o, float scale, double draw) {
  const float top = logits[candidates[0]] * scale;
  // min-p: p ≥ min_p · p_top  ⟺  logit · scale ≥ top + log(min_p).
  const float floor = o.min_p > 0.0f ? top + std::log(o.min_p) : -INFINITY;
  std::vector<double> weights;  // exp(logit · scale − top), for the kept prefix
  double mass = 0.0;
  for (int32_t id : candidates) {
    const float scaled = logits[id] * scale;
    if (scaled < floor) break;
    weights.push_back(std::exp(static_cast<double>(scaled - top)));
    mass += weights.back();
  }
  if (o.top_p < 1.0f) {
    double cumulative = 0.0;
    size_t kept = 0;
    while (kept < weights.size()) {
      cumulative += weights[kept++];
      if (cumulative >= o.top_p * mass) break;
    }
    weights.resize(kept);
    mass = cumulative;
  }
  const double target = draw * mass;
  double cumulative = 0.0;
  for (size_t i = 0; i < weights.size(); ++i) {
    cumulative += weights[i];
    if (target < cumulative) return candidates[i];
  }
  return candidates[weights.size() - 1];
}

// Plain temperature sampling (maybe with min-p): walks the ids in order, no sort.
int32_t DrawInIdOrder(const float* logits, int64_t vocab_size, const SamplingOptions& o,
                      float scale, double draw) {
  const float top = ops::MaxRow(logits, vocab_size) * scale;
  const float floor = o.min_p > 0.0f ? top + std::log(o.min_p) : -INFINITY;
  auto weight = [&](int64_t i) {
    const float scaled = logits[i] * scale;
    return scaled < floor ? 0.0 : static_cast<double>(std::exp(scaled - top));
  };
  double mass = 0.0;
  for (int64_t i = 0; i < vocab_size; ++i) mass += weight(i);
  const double target = draw * mass;
  double cumulative = 0.0;
  int64_t last_kept = 0;
  for (int64_t i = 0; i < vocab_size; ++i) {
    const double w = weight(i);
    if (w == 0.0) continue;
    last_kept = i;
    cumulative += w;
    if (target < cumulative) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last_kept);
}

}  // namespace

int32_t ArgMax(const float* logits, int64_t vocab_size) {
  // The largest value by one vector pass, then its first position.
  const float top = ops::MaxRow(logits, vocab_size);
  for (int64_t i = 0; i < vocab_size; ++i) {
    if (logits[i] == top) return static_cast<int32_t>(i);
  }
  return 0;  // every logit NaN
}

double LogSumExp(const float* logits, int64_t vocab_size, float scale) {
  const float top = ops::MaxRow(logits, vocab_size) * scale;
  return top + std::log(ops::SumExpRow(logits, vocab_size, scale, top));
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
    if (ops::MaxRow(logits + i, end - i) > logits[heap.top()]) {
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

SampleResult Sample(const float* raw_logits, int64_t vocab_size, const SamplingOptions& options,
                    uint64_t token_index, int32_t num_top) {
  std::vector<float> penalized;
  const float* logits = Penalized(raw_logits, vocab_size, options, penalized);
  const bool greedy = !(options.temperature >= kMinTemperature);  // NaN too
  const float scale = greedy ? 1.0f : 1.0f / options.temperature;

  SampleResult result;
  if (greedy) {
    result.token_id = ArgMax(logits, vocab_size);
  } else {
    const double draw = UniformDraw(options.seed, token_index);
    const bool ordered = options.top_k > 0 || options.top_p < 1.0f;
    result.token_id = ordered ? DrawFromCandidates(logits, Candidates(logits, vocab_size,
                                                                      options.top_k),
                                                   options, scale, draw)
                              : DrawInIdOrder(logits, vocab_size, options, scale, draw);
  }
  const double log_sum = LogSumExp(logits, vocab_size, scale);
  result.logprob = static_cast<float>(logits[result.token_id] * scale - log_sum);
  if (num_top > 0) {
    for (int32_t id : TopIds(logits, vocab_size, num_top)) {
      result.top.push_back({id, static_cast<float>(logits[id] * scale - log_sum)});
    }
  }
  return result;
}

}  // namespace gemmaserve::worker
