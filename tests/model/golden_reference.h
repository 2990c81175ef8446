// The golden references of tests/data/ref (see tests/data/README.md): per model, four token
// sequences with their last-position logits, 16 greedy tokens and per-step logits, and every
// position's logits for sequence 0. Shared by the single-process and the multi-process parity
// tests. Test-only.
#pragma once

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/model/npy.h"

namespace gemmaserve::testing {

// Max |Δlogit| allowed against the float32 references.
inline constexpr float kGoldenTolerance = 1e-3f;

struct GoldenReference {
  std::vector<std::vector<int32_t>> inputs;
  std::vector<std::vector<float>> last_logits;
  std::vector<std::vector<int32_t>> greedy;
  std::vector<std::vector<float>> seq0_all_logits;  // [position][vocab]
};

inline GoldenReference LoadGoldenReference(const std::string& model) {
  std::ifstream in("tests/data/ref/" + model + ".json");
  const nlohmann::json json = nlohmann::json::parse(in);
  GoldenReference ref;
  for (const auto& seq : json["sequences"]) {
    ref.inputs.push_back(seq["input_ids"].get<std::vector<int32_t>>());
    ref.last_logits.push_back(seq["last_logits"].get<std::vector<float>>());
    ref.greedy.push_back(seq["greedy_new_tokens"].get<std::vector<int32_t>>());
    if (seq["index"] == 0) {
      ref.seq0_all_logits = seq["all_logits"].get<std::vector<std::vector<float>>>();
    }
  }
  return ref;
}

// Per-step logits of sequence `index`'s greedy decode: [16][vocab] flattened.
inline std::vector<float> LoadGreedyStepLogits(const std::string& model, size_t index) {
  auto array = ReadNpyF32("tests/data/ref/" + model + "/seq" + std::to_string(index) +
                          "_greedy_step_logits.npy");
  return array.ok() ? array->values : std::vector<float>{};
}

// The tiny checkpoints the parity tests run on, and their names as test-name suffixes.
inline const std::vector<std::string>& TinyModelNames() {
  static const std::vector<std::string> names = {"gemma4-tiny-dense", "gemma4-tiny-moe"};
  return names;
}
struct TinyModelTestName {
  template <typename Info>
  std::string operator()(const Info& info) const {
    std::string name = info.param;
    std::replace(name.begin(), name.end(), '-', '_');
    return name;
  }
};

inline float MaxAbsDiff(const float* actual, const float* expected, size_t count) {
  float worst = 0.0f;
  for (size_t i = 0; i < count; ++i) worst = std::max(worst, std::fabs(actual[i] - expected[i]));
  return worst;
}

inline float MaxAbsDiff(const std::vector<float>& actual, const std::vector<float>& expected) {
  if (actual.size() != expected.size()) return INFINITY;
  return MaxAbsDiff(actual.data(), expected.data(), actual.size());
}

}  // namespace gemmaserve::testing
