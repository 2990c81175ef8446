// SequenceDriver::Generate over a step function that stands in for a model: each sequence's
// tokens come back in order, and decode_seconds times the decode steps without the prefill (what
// `bench-model` reports as decode speed at any prompt length).
#include "coordinator/sequence_driver.h"

#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace gemmaserve::coordinator {
namespace {

namespace pb = internal::v1;

// Answers every sequence with token 100 + (its cached tokens), sleeping `prefill` on the first step
// and `decode` on each later one.
SequenceDriver::StepFn SleepingModel(std::chrono::milliseconds prefill,
                                     std::chrono::milliseconds decode) {
  return [prefill, decode, first = true](const pb::StepPlan& plan) mutable {
    std::this_thread::sleep_for(first ? prefill : decode);
    first = false;
    pb::StepResult result;
    result.set_step_id(plan.step_id());
    for (const pb::SequencePlan& seq : plan.sequences()) {
      pb::SequenceResult* out = result.add_sequences();
      out->set_sequence_id(seq.sequence_id());
      out->set_token_id(static_cast<int32_t>(100 + seq.num_cached()));
    }
    return absl::StatusOr<pb::StepResult>(result);
  };
}

TEST(SequenceDriverTest, DecodeSecondsTimeTheDecodeStepsAndNotThePrefill) {
  SequenceDriver driver(SleepingModel(std::chrono::milliseconds(300), std::chrono::milliseconds(20)),
                        /*block_size=*/16, model::KvPages{.num_pages = 16},
                        /*max_sequences=*/2,
                        /*vocab_size=*/512);
  const absl::StatusOr<std::vector<SequenceDriver::Generation>> generated =
      driver.Generate({{2, 7, 9}, {2, 8}}, 4, pb::SamplingParams(), {});
  ASSERT_TRUE(generated.ok()) << generated.status();
  ASSERT_EQ(generated->size(), 2u);
  EXPECT_EQ((*generated)[0].tokens, (std::vector<int32_t>{100, 103, 104, 105}));
  EXPECT_EQ((*generated)[1].tokens, (std::vector<int32_t>{100, 102, 103, 104}));
  for (const SequenceDriver::Generation& g : *generated) {
    EXPECT_GE(g.decode_seconds, 0.060);  // three decode steps of at least 20 ms
    EXPECT_LT(g.decode_seconds, 0.300);  // the 300 ms prefill is not in it
  }
}

}  // namespace
}  // namespace gemmaserve::coordinator
