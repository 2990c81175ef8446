// Step messages over gRPC's default 4 MiB never break a replica. `gemmaserve logits
// --all-positions` with --tp 2 and --ep 2 returns results of 5.3 MB (2,600 tokens of the tiny MoE,
// 512-token vocabulary) and 16.8 MB (16 tokens of a checkpoint with the real 262,144-token
// vocabulary) equal to the single-process logits. Under a small configured limit, a plan or a
// result that would exceed it is refused with an error naming both sizes while the replica stays
// ready, and the SequenceDriver splits all-position logits into steps that fit.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/local_cluster.h"
#include "coordinator/sequence_driver.h"
#include "coordinator/step_message_size.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/model/golden_reference.h"
#include "tests/test_util/child_process.h"

namespace gemmaserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr float kSingleProcessTolerance = 1e-4f;  // as in cluster_golden_test
constexpr int64_t kBlockSize = 16;

// `gemmaserve logits --all-positions` over `tokens` with `layout_flags`: one row per position.
std::vector<std::vector<float>> AllPositionLogits(const std::string& model_dir,
                                                  const std::vector<int32_t>& tokens,
                                                  const std::vector<std::string>& layout_flags) {
  std::vector<std::string> argv = {GEMMASERVE_BINARY, "logits",        "--model",
                                   model_dir,         "--all-positions", "--threads",
                                   "1",               "--tokens",        absl::StrJoin(tokens, ",")};
  argv.insert(argv.end(), layout_flags.begin(), layout_flags.end());
  testing::ChildOptions options;
  options.capture_stderr = false;  // stdout is the JSON
  const testing::ProcessResult run = testing::RunProcess(argv, absl::Seconds(300), options);
  EXPECT_FALSE(run.timed_out);
  EXPECT_EQ(run.exit_code, 0) << absl::StrJoin(layout_flags, " ") << ": " << run.output.substr(0, 2000);
  if (run.exit_code != 0) return {};
  return nlohmann::json::parse(run.output)["logits"].get<std::vector<std::vector<float>>>();
}

void ExpectLayoutsMatchTheSingleProcess(const std::string& model_dir,
                                        const std::vector<int32_t>& tokens, int64_t vocab) {
  const std::vector<std::vector<float>> single = AllPositionLogits(model_dir, tokens, {});
  ASSERT_EQ(single.size(), tokens.size());
  ASSERT_EQ(single[0].size(), static_cast<size_t>(vocab));
  for (const std::vector<std::string>& layout :
       std::vector<std::vector<std::string>>{{"--tp", "2"}, {"--ep", "2"}}) {
    SCOPED_TRACE(absl::StrJoin(layout, " "));
    const std::vector<std::vector<float>> sharded = AllPositionLogits(model_dir, tokens, layout);
    ASSERT_EQ(sharded.size(), tokens.size());
    float worst = 0;
    for (size_t p = 0; p < tokens.size(); ++p) worst = std::max(worst, testing::MaxAbsDiff(sharded[p], single[p]));
    EXPECT_LE(worst, kSingleProcessTolerance);
  }
}

TEST(StepMessageLimitTest, AllPositionLogitsOf2600TokensMatchTheSingleProcessWithTpAndEp) {
  std::vector<int32_t> tokens = {2};
  while (tokens.size() < 2600) tokens.push_back(3 + static_cast<int32_t>(tokens.size() * 7 % 500));
  // 2,600 rows × 512 × 4 bytes = 5.3 MB in one step result.
  ExpectLayoutsMatchTheSingleProcess("tests/data/gemma4-tiny-moe", tokens, 512);
}

TEST(StepMessageLimitTest, AllPositionLogitsOverTheFullVocabularyMatchTheSingleProcess) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/full_vocab_", getpid());
  const testing::ProcessResult written = testing::RunProcess(
      {GEMMASERVE_BINARY, "gen-checkpoint", "--preset", "tiny-moe-full-vocab", "--out", dir},
      absl::Seconds(300));
  ASSERT_EQ(written.exit_code, 0) << written.output;
  std::vector<int32_t> tokens = {2};
  while (tokens.size() < 16) tokens.push_back(3 + static_cast<int32_t>(tokens.size() * 16381));
  // 16 rows × 262,144 × 4 bytes = 16.8 MB in one step result.
  ExpectLayoutsMatchTheSingleProcess(dir, tokens, 262144);
  std::filesystem::remove_all(dir);
}

// A replica whose step messages may take at most kLimit bytes.
class SmallLimitTest : public ::testing::Test {
 protected:
  static constexpr int64_t kLimit = 32 << 10;
  static constexpr int64_t kVocab = 512;
  static constexpr int64_t kNumBlocks = 16;

  void SetUp() override {
    ref_ = testing::LoadGoldenReference("gemma4-tiny-moe");
    coordinator::LocalClusterOptions options;
    options.spec.model_dir = "tests/data/gemma4-tiny-moe";
    options.spec.layout = *parallel::ParallelLayout::Create(/*tp=*/1, /*ep=*/2);
    options.spec.block_size = kBlockSize;
    options.spec.max_message_bytes = kLimit;
    options.worker_binary = GEMMASERVE_BINARY;
    options.worker_args = {"--threads", "1", "--log-level", "warn", "--kv-cache-mb", "8"};
    options.ready_timeout = absl::Seconds(60);
    auto cluster = coordinator::LocalCluster::Start(options);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = std::move(*cluster);
  }

  coordinator::WorkerGroup& group() { return cluster_->group(); }

  // One sequence: `tokens` prefilled from position 0, all-position logits returned.
  internal::v1::StepPlan LogitsPlan(uint64_t step_id, const std::vector<int32_t>& tokens) {
    internal::v1::StepPlan plan;
    plan.set_step_id(step_id);
    internal::v1::SequencePlan* seq = plan.add_sequences();
    seq->set_sequence_id(1);
    seq->mutable_token_ids()->Add(tokens.begin(), tokens.end());
    for (int32_t b = 0; b < 4; ++b) {
      seq->add_sliding_blocks(b);
      seq->add_full_blocks(b);
    }
    seq->set_return_logits(true);
    seq->set_all_logits(true);
    return plan;
  }

  // A step that fits still runs, and gives golden sequence 0's last-position logits.
  void ExpectServes(uint64_t step_id) {
    internal::v1::StepPlan plan = LogitsPlan(step_id, ref_.inputs[0]);
    plan.mutable_sequences(0)->set_all_logits(false);
    const auto served = group().Step(plan);
    ASSERT_TRUE(served.ok()) << served.status();
    const auto& logits = served->sequences(0).logits();
    EXPECT_LE(testing::MaxAbsDiff(std::vector<float>(logits.begin(), logits.end()),
                                  ref_.last_logits[0]),
              testing::kGoldenTolerance);
  }

  testing::GoldenReference ref_;
  std::unique_ptr<coordinator::LocalCluster> cluster_;
};

TEST_F(SmallLimitTest, OversizedPlanIsRefusedBeforeItIsSentAndTheReplicaKeepsServing) {
  internal::v1::StepPlan plan = LogitsPlan(1, {2, 40});
  plan.mutable_sequences(0)->set_return_logits(false);
  // A penalised sequence carries its whole history: 20,000 ids of 2 bytes each.
  for (int i = 0; i < 20000; ++i) plan.mutable_sequences(0)->add_prompt_token_ids(300);
  const auto refused = group().Step(plan);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              AllOf(HasSubstr("plan takes"), HasSubstr(absl::StrCat(kLimit, " bytes"))));
  EXPECT_TRUE(group().ready());
  ExpectServes(2);
}

TEST_F(SmallLimitTest, OversizedResultIsRefusedByTheWorkerAndTheReplicaKeepsServing) {
  // 40 rows × 512 × 4 bytes = 80 KiB of logits, over the 32 KiB limit.
  std::vector<int32_t> tokens(40, 300);
  tokens[0] = 2;
  const auto refused = group().Step(LogitsPlan(1, tokens));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              AllOf(HasSubstr("rank 0"), HasSubstr("result takes"),
                    HasSubstr(absl::StrCat(kLimit, " bytes"))));
  EXPECT_TRUE(group().ready());
  ExpectServes(2);
}

TEST_F(SmallLimitTest, DriverSplitsAllPositionLogitsIntoStepsThatFit) {
  const int64_t rows_per_step = coordinator::MaxLogitsRowsPerStep(kLimit, kVocab);
  ASSERT_LT(rows_per_step, static_cast<int64_t>(ref_.inputs[0].size()))
      << "sequence 0 must need several steps";
  int num_steps = 0;
  coordinator::SequenceDriver driver(
      [&](const internal::v1::StepPlan& plan) {
        ++num_steps;
        return group().Step(plan);
      },
      kBlockSize, model::BlockRuns::PagesFor(group().kv_pages(), kNumBlocks, /*num_runs=*/1),
      /*max_sequences=*/1, kVocab, kLimit);
  auto logits = driver.Logits({ref_.inputs[0]}, /*all_positions=*/true);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const std::vector<float>& rows = (*logits)[0];
  ASSERT_EQ(rows.size(), ref_.seq0_all_logits.size() * kVocab);
  for (size_t p = 0; p < ref_.seq0_all_logits.size(); ++p) {
    EXPECT_LE(testing::MaxAbsDiff(rows.data() + p * kVocab, ref_.seq0_all_logits[p].data(), kVocab),
              testing::kGoldenTolerance)
        << "position " << p;
  }
  const int64_t length = static_cast<int64_t>(ref_.inputs[0].size());
  EXPECT_EQ(num_steps, (length + rows_per_step - 1) / rows_per_step);
}

}  // namespace
}  // namespace gemmaserve
