#include "parallel/parallel_layout.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve::parallel {
namespace {

using ::testing::HasSubstr;

TEST(ParallelLayoutTest, DefaultIsOneRankHoldingEverything) {
  const ParallelLayout layout;
  EXPECT_EQ(layout.world_size(), 1);
  EXPECT_EQ(layout.ToString(), "--tp 1");
  const absl::StatusOr<ShardPlan> plan = layout.PlanFor(0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->world_size(), 1);
  EXPECT_EQ(*ParallelLayout::Create(1, 1), layout);
}

TEST(ParallelLayoutTest, TpSlicesEveryExpertOverTheWorld) {
  const absl::StatusOr<ParallelLayout> layout = ParallelLayout::Create(4, 1);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->world_size(), 4);
  EXPECT_EQ(layout->tp(), 4);
  EXPECT_EQ(layout->ep(), 1);
  EXPECT_EQ(layout->expert_sharding(), ExpertSharding::kTensorParallel);
  EXPECT_EQ(layout->ToString(), "--tp 4");
  const absl::StatusOr<ShardPlan> plan = layout->PlanFor(3);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->rank(), 3);
  EXPECT_EQ(plan->world_size(), 4);
  EXPECT_EQ(*plan->Experts(8), (Range{0, 8}));       // every expert ...
  EXPECT_EQ(*plan->ExpertWidth(64), (Range{48, 64}));  // ... a quarter of each
}

TEST(ParallelLayoutTest, EpSplitsExpertsWholeAndTheRestLikeTp) {
  const absl::StatusOr<ParallelLayout> layout = ParallelLayout::Create(1, 2);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->world_size(), 2);
  EXPECT_EQ(layout->expert_sharding(), ExpertSharding::kExpertParallel);
  EXPECT_EQ(layout->ToString(), "--ep 2");
  const absl::StatusOr<ShardPlan> plan = layout->PlanFor(1);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(*plan->Experts(8), (Range{4, 8}));
  EXPECT_EQ(*plan->ExpertWidth(64), (Range{0, 64}));
  EXPECT_EQ(*plan->QueryHeads(4), (Range{2, 4}));  // attention is still split over both ranks
}

TEST(ParallelLayoutTest, RejectsBothOrNonPositiveNamingTheFlags) {
  const std::pair<int64_t, int64_t> cases[] = {{2, 2}, {0, 1}, {1, -3}, {int64_t{1} << 40, 1}};
  for (const auto& [tp, ep] : cases) {
    const absl::StatusOr<ParallelLayout> layout = ParallelLayout::Create(tp, ep);
    ASSERT_FALSE(layout.ok()) << tp << " " << ep;
    EXPECT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(layout.status().message(), HasSubstr(absl::StrCat("--tp ", tp, " --ep ", ep)));
  }
}

TEST(ParallelLayoutTest, PlanForARankOutsideTheWorldIsAnError) {
  const ParallelLayout layout = *ParallelLayout::Create(2, 1);
  EXPECT_EQ(layout.PlanFor(2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(layout.PlanFor(-1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gemmaserve::parallel
