// The step message bounds (step_message_size.h) against real messages built in their worst case:
// the largest ids, negative (−1) sliding table entries, every optional field set. If a field is
// added to StepPlan or StepResult and the bounds are not, these fail.
#include "coordinator/step_message_size.h"

#include "gemmaserve/internal/v1/worker.pb.h"
#include "gtest/gtest.h"

namespace gemmaserve::coordinator {
namespace {

namespace pb = internal::v1;

constexpr int32_t kLargestId = 262143;

StepShape SmallShape() {
  StepShape shape;
  shape.max_num_seqs = 4;
  shape.max_tokens_per_step = 64;
  shape.max_model_len = 256;
  shape.block_size = 16;
  shape.max_top_logprobs = 20;
  shape.num_layers = 30;
  shape.num_experts = 128;
  return shape;
}

pb::TokenLogprob Entry() {
  pb::TokenLogprob entry;
  entry.set_token_id(kLargestId);
  entry.set_logprob(-123.456f);
  return entry;
}

TEST(StepMessageSizeTest, LargestPlanFitsItsBound) {
  const StepShape shape = SmallShape();
  pb::StepPlan plan;
  plan.set_step_id(UINT64_MAX);
  const int64_t tokens_each = shape.max_tokens_per_step / shape.max_num_seqs;
  for (int64_t s = 0; s < shape.max_num_seqs; ++s) {
    pb::SequencePlan* seq = plan.add_sequences();
    seq->set_sequence_id(UINT64_MAX);
    for (int64_t t = 0; t < tokens_each; ++t) seq->add_token_ids(kLargestId);
    seq->set_num_cached(shape.max_model_len);
    seq->set_sliding_blocks_start(INT64_MAX);
    for (int64_t b = 0; b < shape.max_model_len / shape.block_size; ++b) {
      seq->add_sliding_blocks(INT32_MAX);
      seq->add_full_blocks(INT32_MAX);
    }
    seq->set_sample(true);
    pb::SamplingParams* sampling = seq->mutable_sampling();
    sampling->set_temperature(0.7f);
    sampling->set_top_k(INT32_MAX);
    sampling->set_top_p(0.9f);
    sampling->set_min_p(0.1f);
    sampling->set_seed(UINT64_MAX);
    sampling->set_has_seed(true);
    sampling->set_repetition_penalty(1.1f);
    sampling->set_presence_penalty(0.5f);
    sampling->set_frequency_penalty(0.5f);
    sampling->set_top_logprobs(20);
    sampling->set_logprobs(true);
    for (int64_t t = 0; t < shape.max_model_len / 2; ++t) {
      seq->add_prompt_token_ids(kLargestId);
      seq->add_output_token_ids(kLargestId);
    }
    seq->set_prompt_logprobs(true);
    seq->set_return_logits(true);
    seq->set_all_logits(true);
    seq->set_next_prompt_token_id(kLargestId);
  }
  EXPECT_LE(static_cast<int64_t>(plan.ByteSizeLong()), MaxPlanBytes(shape));
  EXPECT_LE(MaxPlanBytes(shape), StepMessageLimit(shape));
}

TEST(StepMessageSizeTest, LargestServingResultFitsItsBound) {
  const StepShape shape = SmallShape();
  pb::StepResult result;
  result.set_step_id(UINT64_MAX);
  result.set_rank(INT32_MAX);
  result.set_generation(UINT64_MAX);
  result.set_compute_ms(1e300);
  result.set_communication_ms(1e300);
  const int64_t rows_each = shape.max_tokens_per_step / shape.max_num_seqs;
  for (int64_t s = 0; s < shape.max_num_seqs; ++s) {
    pb::SequenceResult* seq = result.add_sequences();
    seq->set_sequence_id(UINT64_MAX);
    seq->set_token_id(kLargestId);
    seq->set_logprob(-1.5f);
    for (int64_t k = 0; k < shape.max_top_logprobs; ++k) *seq->add_top_logprobs() = Entry();
    for (int64_t row = 0; row < rows_each + 1; ++row) {  // + the next prompt token
      *seq->add_prompt_logprobs() = Entry();
      pb::TopLogprobs* top = seq->add_prompt_top_logprobs();
      for (int64_t k = 0; k < shape.max_top_logprobs; ++k) *top->add_alternatives() = Entry();
    }
  }
  for (int64_t layer = 0; layer < shape.num_layers; ++layer) {
    pb::ExpertCounts* counts = result.add_expert_counts();
    counts->set_layer(static_cast<int32_t>(layer));
    for (int64_t e = 0; e < shape.num_experts; ++e) counts->add_tokens(INT64_MAX);
  }
  EXPECT_LE(static_cast<int64_t>(result.ByteSizeLong()), MaxResultBytes(shape));
  EXPECT_LE(MaxResultBytes(shape), StepMessageLimit(shape));
}

TEST(StepMessageSizeTest, LimitStaysWithinGrpcsRange) {
  EXPECT_EQ(StepMessageLimit(SmallShape()), kMinStepMessageBytes);
  StepShape huge = SmallShape();
  huge.max_num_seqs = 4096;
  huge.max_tokens_per_step = 65536;
  huge.max_model_len = 262144;
  EXPECT_EQ(StepMessageLimit(huge), kMaxStepMessageBytes);
  StepShape defaults;  // the serve defaults with the API's 20 alternatives
  EXPECT_GT(StepMessageLimit(defaults), MaxPlanBytes(defaults));
  EXPECT_LT(StepMessageLimit(defaults), int64_t{64} << 20);
}

TEST(StepMessageSizeTest, LogitsRowsPerStepLeaveRoomForTheRest) {
  EXPECT_EQ(MaxLogitsRowsPerStep(kDefaultMaxStepMessageBytes, 262144), 63);
  EXPECT_EQ(MaxLogitsRowsPerStep(32 << 10, 512), 12);
  EXPECT_EQ(MaxLogitsRowsPerStep(1024, 262144), 1);  // never 0
}

}  // namespace
}  // namespace gemmaserve::coordinator
