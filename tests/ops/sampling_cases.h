// Sampling requests that take every path of the samplers (test-only): greedy, temperature in id
// order, min-p, top-k, top-k with top-p, top-p alone, repetition, presence and frequency
// penalties, top logprobs, over rows of logits with ties at the top and in the middle. The CPU
// tests (tests/ops/sampler_test.cc) and the GPU's (tests/kernels/gpu_ops_test.cc) share them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "common/tensor.h"
#include "ops/sampler.h"

namespace gemmaserve::testing {

// The option sets, one per request in turn. kTopPAlone has no top-k: more candidates than a GPU
// sorts (kernels::kMaxDeviceTopK) when the vocabulary is larger.
inline constexpr int kNumOptionSets = 11;
inline constexpr int kTopPAlone = 9;

inline ops::SamplingOptions OptionSet(int set) {
  ops::SamplingOptions o;
  switch (set) {
    case 0: o.temperature = 0.0f; break;
    case 1: o.temperature = 0.0f; break;  // with top logprobs
    case 2: break;                        // temperature 1, every token, id order
    case 3: o.temperature = 0.7f; o.min_p = 0.05f; break;
    case 4: o.top_k = 50; break;
    case 5: o.temperature = 0.8f; o.top_k = 64; o.top_p = 0.95f; break;  // Gemma's defaults
    case 6: o.top_k = 1024; o.top_p = 0.9f; o.min_p = 0.01f; break;
    case 7: o.temperature = 1.5f; o.repetition_penalty = 1.3f; break;
    case 8: o.top_k = 40; o.presence_penalty = 0.5f; o.frequency_penalty = 0.3f; break;
    case kTopPAlone: o.top_p = 0.9f; break;
    case 10: o.temperature = 2.0f; break;  // flat, with top logprobs
  }
  return o;
}

inline int32_t NumTop(int set) { return set == 1 ? 5 : set == 3 ? 3 : set == 10 ? 20 : 0; }

struct SamplingCases {
  Tensor logits;  // [rows, vocab] f32, host
  std::vector<ops::SampleRequest> requests;
  // What the requests' token spans point into.
  std::vector<std::unique_ptr<std::vector<int32_t>>> token_lists;
};

// `rows` rows of logits (normal, σ = 3, a few values repeated so that the maximum and some middle
// values tie) and one request per row, option set row % kNumOptionSets, penalties from prompt
// and output tokens (with repeats, and ids outside the vocabulary, which penalties skip).
inline SamplingCases MakeSamplingCases(int64_t vocab, int64_t rows, uint32_t seed) {
  SamplingCases cases;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int32_t> any_id(0, static_cast<int32_t>(vocab - 1));
  cases.logits = Tensor::Empty(DType::kF32, {rows, vocab});
  for (int64_t r = 0; r < rows; ++r) {
    float* row = cases.logits.data<float>() + r * vocab;
    for (int64_t i = 0; i < vocab; ++i) row[i] = normal(rng);
    const float top = *std::max_element(row, row + vocab) + 1.0f;
    for (int tie = 0; tie < 3; ++tie) row[any_id(rng)] = top;  // the maximum, three times
    const float middle = row[any_id(rng)];
    for (int tie = 0; tie < 40; ++tie) row[any_id(rng)] = middle;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int set = static_cast<int>(r % kNumOptionSets);
    ops::SampleRequest request;
    request.row = r;
    request.options = OptionSet(set);
    request.options.seed = 1000 + static_cast<uint64_t>(r);
    request.token_index = 7 * static_cast<uint64_t>(r);
    request.num_top = NumTop(set);
    auto& prompt = *cases.token_lists.emplace_back(std::make_unique<std::vector<int32_t>>());
    auto& output = *cases.token_lists.emplace_back(std::make_unique<std::vector<int32_t>>());
    for (int i = 0; i < 30; ++i) prompt.push_back(any_id(rng));
    for (int i = 0; i < 12; ++i) output.push_back(any_id(rng));
    for (int i = 0; i < 8; ++i) output.push_back(output[i % 3]);  // repeats
    output.push_back(-1);
    output.push_back(static_cast<int32_t>(vocab) + 5);
    request.options.prompt_tokens = prompt;
    request.options.output_tokens = output;
    cases.requests.push_back(request);
  }
  return cases;
}

}  // namespace gemmaserve::testing
