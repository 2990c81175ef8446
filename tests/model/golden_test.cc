// Parity of the CPU forward pass with the golden references in tests/data/ref, computed by the
// Hugging Face Gemma 4 code in float32 from the same bf16 checkpoints (tests/data/README.md).
// Acceptance: max |Δlogit| ≤ 1e-3 and identical greedy tokens, decoding incrementally with the KV
// cache.
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/local_runner.h"
#include "nlohmann/json.hpp"
#include "tests/model/npy.h"
#include "worker/sampler.h"

namespace gemmaserve::model {
namespace {

constexpr float kTolerance = 1e-3f;

struct Reference {
  std::vector<std::vector<int32_t>> inputs;
  std::vector<std::vector<float>> last_logits;
  std::vector<std::vector<int32_t>> greedy;
  std::vector<std::vector<float>> seq0_all_logits;  // [positions][vocab]
};

Reference LoadReference(const std::string& model) {
  std::ifstream in("tests/data/ref/" + model + ".json");
  EXPECT_TRUE(in.good()) << "missing reference for " << model;
  nlohmann::json json = nlohmann::json::parse(in);
  Reference ref;
  for (const auto& seq : json["sequences"]) {
    ref.inputs.push_back(seq["input_ids"].get<std::vector<int32_t>>());
    ref.last_logits.push_back(seq["last_logits"].get<std::vector<float>>());
    ref.greedy.push_back(seq["greedy_new_tokens"].get<std::vector<int32_t>>());
    if (seq["index"] == 0) ref.seq0_all_logits = seq["all_logits"].get<std::vector<std::vector<float>>>();
  }
  return ref;
}

float MaxAbsDiff(const float* actual, const std::vector<float>& expected) {
  float worst = 0.0f;
  for (size_t i = 0; i < expected.size(); ++i) {
    worst = std::max(worst, std::fabs(actual[i] - expected[i]));
  }
  return worst;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ref_ = LoadReference(GetParam());
    auto runner = LocalRunner::Load("tests/data/" + GetParam(), /*max_context=*/64,
                                    /*max_sequences=*/4);
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = std::move(*runner);
  }

  int64_t vocab() const { return runner_->config().vocab_size; }

  Reference ref_;
  std::unique_ptr<LocalRunner> runner_;
};

TEST_P(GoldenTest, LastLogitsMatchEachSequenceAlone) {
  for (size_t s = 0; s < ref_.inputs.size(); ++s) {
    auto logits = runner_->Prefill({ref_.inputs[s]}, /*all_positions=*/false);
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_LE(MaxAbsDiff(logits->data<float>(), ref_.last_logits[s]), kTolerance) << "sequence " << s;
  }
}

TEST_P(GoldenTest, LastLogitsMatchWhenAllSequencesShareOneBatch) {
  auto logits = runner_->Prefill(ref_.inputs, /*all_positions=*/false);
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (size_t s = 0; s < ref_.inputs.size(); ++s) {
    EXPECT_LE(MaxAbsDiff(logits->data<float>() + s * vocab(), ref_.last_logits[s]), kTolerance)
        << "sequence " << s;
  }
}

TEST_P(GoldenTest, AllPositionLogitsMatchForSequenceZero) {
  auto logits = runner_->Prefill({ref_.inputs[0]}, /*all_positions=*/true);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->dim(0), static_cast<int64_t>(ref_.seq0_all_logits.size()));
  for (size_t p = 0; p < ref_.seq0_all_logits.size(); ++p) {
    EXPECT_LE(MaxAbsDiff(logits->data<float>() + p * vocab(), ref_.seq0_all_logits[p]), kTolerance)
        << "position " << p;
  }
}

TEST_P(GoldenTest, GreedyDecodeWithKvCacheMatchesTokensAndStepLogits) {
  for (size_t s = 0; s < ref_.inputs.size(); ++s) {
    auto steps = testing::ReadNpyF32("tests/data/ref/" + GetParam() + "/seq" + std::to_string(s) +
                                     "_greedy_step_logits.npy");
    ASSERT_TRUE(steps.ok()) << steps.status();
    std::vector<std::vector<float>> seen;
    auto greedy = [&](const float* logits, int64_t vocab_size) {
      seen.emplace_back(logits, logits + vocab_size);
      return worker::ArgMax(logits, vocab_size);
    };
    auto outputs = runner_->Generate({ref_.inputs[s]}, 16, greedy);
    ASSERT_TRUE(outputs.ok()) << outputs.status();
    EXPECT_EQ((*outputs)[0], ref_.greedy[s]) << "sequence " << s;
    ASSERT_EQ(seen.size(), 16u);
    for (size_t step = 0; step < seen.size(); ++step) {
      std::vector<float> expected(steps->values.begin() + step * vocab(),
                                  steps->values.begin() + (step + 1) * vocab());
      EXPECT_LE(MaxAbsDiff(seen[step].data(), expected), kTolerance)
          << "sequence " << s << " step " << step;
    }
  }
}

TEST_P(GoldenTest, BatchedGreedyDecodeMatchesEachSequence) {
  auto outputs = runner_->Generate(ref_.inputs, 16, worker::ArgMax);
  ASSERT_TRUE(outputs.ok()) << outputs.status();
  for (size_t s = 0; s < ref_.inputs.size(); ++s) EXPECT_EQ((*outputs)[s], ref_.greedy[s]);
}

TEST_P(GoldenTest, GenerationStopsAtAStopIdAndKeepsIt) {
  const std::vector<int32_t>& greedy = ref_.greedy[0];
  // Stop at the first occurrence of the fifth greedy token.
  const int32_t stop = greedy[4];
  const size_t expected_length = std::find(greedy.begin(), greedy.end(), stop) - greedy.begin() + 1;
  auto outputs = runner_->Generate({ref_.inputs[0]}, 16, worker::ArgMax, {stop});
  ASSERT_TRUE(outputs.ok()) << outputs.status();
  EXPECT_EQ((*outputs)[0], std::vector<int32_t>(greedy.begin(), greedy.begin() + expected_length));
}

INSTANTIATE_TEST_SUITE_P(TinyModels, GoldenTest,
                         ::testing::Values("gemma4-tiny-dense", "gemma4-tiny-moe"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace gemmaserve::model
