// Parity of the CPU forward pass with the golden references in tests/data/ref, computed by the
// Hugging Face Gemma 4 code in float32 from the same bf16 checkpoints. Acceptance: max |Δlogit|
// ≤ 1e-3 and identical greedy tokens, decoding incrementally with the paged KV cache. Runs the
// real step path: StepPlans built by the SequenceDriver, executed by a ModelShard in this process.
#include <memory>
#include <string>
#include <vector>

#include "coordinator/sequence_driver.h"
#include "gtest/gtest.h"
#include "tests/model/golden_reference.h"
#include "worker/model_shard.h"

namespace gemmaserve {
namespace {

using coordinator::SequenceDriver;
using testing::kGoldenTolerance;
using testing::MaxAbsDiff;

constexpr int64_t kBlockSize = 16;
constexpr int64_t kMaxSequences = 4;
constexpr int64_t kBlocksPerSequence = 4;  // 64 tokens: the longest prompt (40) plus 16 and more

internal::v1::SamplingParams Greedy() { return internal::v1::SamplingParams(); }

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ref_ = testing::LoadGoldenReference(GetParam());
    auto loaded = worker::LoadShard("tests/data/" + GetParam(), parallel::ShardPlan::Single());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    vocab_ = loaded->config.vocab_size;
    const model::KvPages pages = model::BlockRuns::PagesFor(
        {0, worker::KvLayout(*loaded, kBlockSize).blocks_per_page}, kBlocksPerSequence,
        kMaxSequences);
    shard_ = std::make_unique<worker::ModelShard>(std::move(*loaded), kBlockSize, pages.num_pages,
                                                  comm_);
    driver_ = std::make_unique<SequenceDriver>(
        [this](const internal::v1::StepPlan& plan) { return shard_->executor().Execute(plan); },
        kBlockSize, pages, kMaxSequences, vocab_);
  }

  testing::GoldenReference ref_;
  int64_t vocab_ = 0;
  parallel::LocalCommunicator comm_;
  std::unique_ptr<worker::ModelShard> shard_;
  std::unique_ptr<SequenceDriver> driver_;
};

TEST_P(GoldenTest, LastLogitsMatchEachSequenceAlone) {
  for (size_t s = 0; s < ref_.inputs.size(); ++s) {
    auto logits = driver_->Logits({ref_.inputs[s]}, /*all_positions=*/false);
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_LE(MaxAbsDiff((*logits)[0], ref_.last_logits[s]), kGoldenTolerance) << "sequence " << s;
  }
}

TEST_P(GoldenTest, LastLogitsMatchWhenAllSequencesShareOneBatch) {
  auto logits = driver_->Logits(ref_.inputs, /*all_positions=*/false);
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (size_t s = 0; s < ref_.inputs.size(); ++s) {
    EXPECT_LE(MaxAbsDiff((*logits)[s], ref_.last_logits[s]), kGoldenTolerance) << "sequence " << s;
  }
}

TEST_P(GoldenTest, AllPositionLogitsMatchForSequenceZero) {
  auto logits = driver_->Logits({ref_.inputs[0]}, /*all_positions=*/true);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const std::vector<float>& rows = (*logits)[0];
  ASSERT_EQ(rows.size(), ref_.seq0_all_logits.size() * vocab_);
  for (size_t p = 0; p < ref_.seq0_all_logits.size(); ++p) {
    EXPECT_LE(MaxAbsDiff(rows.data() + p * vocab_, ref_.seq0_all_logits[p].data(), vocab_),
              kGoldenTolerance)
        << "position " << p;
  }
}

TEST_P(GoldenTest, GreedyDecodeWithKvCacheMatchesTokensAndStepLogits) {
  for (size_t s = 0; s < ref_.inputs.size(); ++s) {
    const std::vector<float> steps = testing::LoadGreedyStepLogits(GetParam(), s);
    ASSERT_EQ(steps.size(), 16u * vocab_);
    auto generations = driver_->Generate({ref_.inputs[s]}, 16, Greedy(), {}, /*capture_logits=*/true);
    ASSERT_TRUE(generations.ok()) << generations.status();
    const SequenceDriver::Generation& g = (*generations)[0];
    EXPECT_EQ(g.tokens, ref_.greedy[s]) << "sequence " << s;
    EXPECT_EQ(g.finish_reason, "length");
    ASSERT_EQ(g.step_logits.size(), 16u);
    for (size_t step = 0; step < 16; ++step) {
      EXPECT_LE(MaxAbsDiff(g.step_logits[step].data(), steps.data() + step * vocab_, vocab_),
                kGoldenTolerance)
          << "sequence " << s << " step " << step;
    }
  }
}

TEST_P(GoldenTest, BatchedGreedyDecodeMatchesEachSequence) {
  auto generations = driver_->Generate(ref_.inputs, 16, Greedy(), {});
  ASSERT_TRUE(generations.ok()) << generations.status();
  for (size_t s = 0; s < ref_.inputs.size(); ++s) EXPECT_EQ((*generations)[s].tokens, ref_.greedy[s]);
}

TEST_P(GoldenTest, GenerationStopsAtAStopIdAndKeepsIt) {
  const std::vector<int32_t>& greedy = ref_.greedy[0];
  const int32_t stop = greedy[4];  // stops at this token's first occurrence
  const size_t length = std::find(greedy.begin(), greedy.end(), stop) - greedy.begin() + 1;
  auto generations = driver_->Generate({ref_.inputs[0]}, 16, Greedy(), {stop});
  ASSERT_TRUE(generations.ok()) << generations.status();
  EXPECT_EQ((*generations)[0].tokens, std::vector<int32_t>(greedy.begin(), greedy.begin() + length));
  EXPECT_EQ((*generations)[0].finish_reason, "stop");
}

TEST_P(GoldenTest, RejectsPlansThatDoNotFit) {
  EXPECT_EQ(driver_->Logits({{2, 1000}}, false).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> too_long(kBlockSize * kBlocksPerSequence + 1, 2);
  EXPECT_EQ(driver_->Logits({too_long}, false).status().code(), absl::StatusCode::kInvalidArgument);
  // The model still serves afterwards.
  auto logits = driver_->Logits({ref_.inputs[3]}, false);
  ASSERT_TRUE(logits.ok());
  EXPECT_LE(MaxAbsDiff((*logits)[0], ref_.last_logits[3]), kGoldenTolerance);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, GoldenTest,
                         ::testing::ValuesIn(testing::TinyModelNames()),
                         testing::TinyModelTestName());

}  // namespace
}  // namespace gemmaserve
