// WorkerGroup without workers: what a failure does to its generation, readiness and health, and
// what it refuses before anything is sent. The paths with real workers are in tests/cluster and
// tests/integration.
#include "coordinator/worker_group.h"

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve::coordinator {
namespace {

using ::testing::HasSubstr;

ClusterSpec Spec() {
  ClusterSpec spec;
  spec.model_dir = "tests/data/gemma4-tiny-dense";
  spec.layout = *parallel::ParallelLayout::Create(/*tp=*/2, /*ep=*/1);
  spec.recovery_timeout = absl::Milliseconds(100);
  spec.max_message_bytes = 1024;
  return spec;
}

TEST(WorkerGroupTest, HealthTurnsFalseOnlyWhenAFailureIsNotRecoveredInTime) {
  WorkerGroup group(Spec());
  EXPECT_FALSE(group.ready());
  absl::SleepFor(absl::Milliseconds(150));
  EXPECT_TRUE(group.healthy()) << "starting up is not a failure";
  std::vector<std::pair<uint64_t, std::string>> failures;
  group.SetFailureCallback([&failures](uint64_t generation, const std::string& reason) {
    failures.push_back({generation, reason});
  });

  group.Fail("rank 1 vanished");
  EXPECT_EQ(group.generation(), 2u);
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].first, 2u);
  EXPECT_THAT(failures[0].second, HasSubstr("rank 1 vanished"));
  group.Fail("stale report", /*generation=*/1);  // names an ended generation: ignored
  EXPECT_EQ(group.generation(), 2u);
  EXPECT_EQ(failures.size(), 1u);
  EXPECT_TRUE(group.healthy());
  absl::SleepFor(absl::Milliseconds(150));
  EXPECT_FALSE(group.healthy());

  group.Shutdown("done", absl::Milliseconds(10));
  EXPECT_TRUE(group.healthy()) << "a coordinator shutting down is not restarted";
  group.Fail("after shutdown");
  EXPECT_EQ(group.generation(), 2u);
  EXPECT_EQ(failures.size(), 1u);
}

TEST(WorkerGroupTest, StepIsRefusedWhenNotReadyOrOverTheMessageLimit) {
  WorkerGroup group(Spec());
  internal::v1::StepPlan plan;
  plan.set_step_id(1);
  plan.add_sequences()->add_token_ids(2);
  EXPECT_EQ(group.Step(plan).status().code(), absl::StatusCode::kUnavailable);
  for (int i = 0; i < 1000; ++i) plan.mutable_sequences(0)->add_prompt_token_ids(300);
  const auto oversized = group.Step(plan);
  EXPECT_EQ(oversized.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(oversized.status().message()),
              HasSubstr("more than the step message limit of 1024 bytes"));
}

}  // namespace
}  // namespace gemmaserve::coordinator
