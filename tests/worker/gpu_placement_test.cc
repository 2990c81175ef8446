// The GPU worker's placement and memory plan (worker/gpu_placement.h), as pure functions of what a
// worker measures: which GPU a rank takes, what --gpu-memory-utilization allows, what the KV cache
// gets after loading, and when ranks get NCCL.
#include "worker/gpu_placement.h"

#include <cstdlib>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve::worker {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

TEST(LocalRankTest, FlagThenLocalRankEnvironmentThenRank) {
  unsetenv("LOCAL_RANK");
  EXPECT_EQ(*LocalRank(-1, 5), 5);
  EXPECT_EQ(*LocalRank(2, 5), 2);
  setenv("LOCAL_RANK", "3", 1);
  EXPECT_EQ(*LocalRank(-1, 5), 3);
  EXPECT_EQ(*LocalRank(1, 5), 1);
  setenv("LOCAL_RANK", "three", 1);
  const absl::StatusOr<int> bad = LocalRank(-1, 5);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("LOCAL_RANK=\"three\""));
  unsetenv("LOCAL_RANK");
}

TEST(WorkerDeviceTest, CudaPicksTheLocalRanksGpuAndOtherNamesStay) {
  EXPECT_EQ(*WorkerDevice("cuda", 0, 8), "cuda:0");
  EXPECT_EQ(*WorkerDevice("cuda", 5, 8), "cuda:5");
  EXPECT_EQ(*WorkerDevice("cuda", 3, 2), "cuda:1");  // more ranks than GPUs: they share
  EXPECT_EQ(*WorkerDevice("cuda:4", 1, 8), "cuda:4");
  EXPECT_EQ(*WorkerDevice("cpu", 1, 0), "cpu");
  const absl::StatusOr<std::string> none = WorkerDevice("cuda", 0, 0);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(none.status().message(), HasSubstr("no GPU is visible"));
}

TEST(GpuBudgetTest, IsUtilizationTimesTotalCappedByWhatIsFree) {
  GpuMemoryNeeds needs{10 * kGiB, kGiB, 64 * kMiB};
  // An empty 140 GiB GPU at 0.9: 126 GiB.
  EXPECT_EQ(*GpuBudget(needs, 140 * kGiB, 140 * kGiB, 0.9, "cuda:0"),
            static_cast<int64_t>(0.9 * 140 * kGiB));
  // Another process holds 40 GiB: only what is free.
  EXPECT_EQ(*GpuBudget(needs, 100 * kGiB, 140 * kGiB, 0.9, "cuda:0"), 100 * kGiB);
}

TEST(GpuBudgetTest, AShardThatDoesNotFitIsRefusedNamingTheBytes) {
  // 62 GiB of bf16 31B weights on a 40 GiB GPU.
  const GpuMemoryNeeds needs{62 * kGiB, 0, 0};
  const absl::StatusOr<int64_t> refused = GpuBudget(needs, 39 * kGiB, 40 * kGiB, 0.9, "cuda:1");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("cuda:1 cannot hold this shard: it needs 64000 MiB (weights 63488 MiB"));
  EXPECT_THAT(refused.status().message(),
              HasSubstr("39936 MiB of 40960 MiB are free and --gpu-memory-utilization 0.9 "
                        "allows 36864 MiB"));
  // The reserve counts: weights that fit only without it are refused too.
  EXPECT_FALSE(GpuBudget({36 * kGiB, 0, 0}, 40 * kGiB, 40 * kGiB, 0.9, "cuda:0").ok());
}

TEST(GpuBudgetTest, UtilizationOutsideZeroToOneIsInvalid) {
  for (const double utilization : {0.0, -0.5, 1.01}) {
    EXPECT_EQ(GpuBudget({}, kGiB, kGiB, utilization, "cuda:0").status().code(),
              absl::StatusCode::kInvalidArgument)
        << utilization;
  }
  EXPECT_TRUE(GpuBudget({}, kGiB, kGiB, 1.0, "cuda:0").ok());
}

TEST(GpuKvBytesTest, TheKvCacheGetsTheBudgetLessWhatLoadingTookActivationsAndTheReserve) {
  const GpuMemoryNeeds needs{60 * kGiB, 2 * kGiB, 16 * kMiB};
  const int64_t budget = 126 * kGiB;
  // Loading took 61 GiB (weights plus library allocations).
  const absl::StatusOr<int64_t> kv =
      GpuKvBytes(needs, budget, 139 * kGiB, 78 * kGiB, "cuda:0");
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(*kv, budget - 61 * kGiB - 2 * kGiB - kGpuReserveBytes);
}

TEST(GpuKvBytesTest, NoRoomForOneBlockPairIsRefused) {
  const GpuMemoryNeeds needs{10 * kGiB, 5 * kGiB, kGiB};
  const absl::StatusOr<int64_t> kv = GpuKvBytes(needs, 16 * kGiB, 20 * kGiB, 9 * kGiB, "cuda:0");
  EXPECT_EQ(kv.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(kv.status().message(),
              HasSubstr("cuda:0: loading took 11264 MiB of a budget of 16384 MiB"));
}

TEST(EveryRankHasItsOwnGpuTest, SharedGpusMeanNoNccl) {
  EXPECT_TRUE(EveryRankHasItsOwnGpu({"node-a/uuid0", "node-a/uuid1"}));
  EXPECT_TRUE(EveryRankHasItsOwnGpu({"node-a/uuid0", "node-b/uuid0"}));  // two machines
  EXPECT_FALSE(EveryRankHasItsOwnGpu({"node-a/uuid0", "node-a/uuid0"}));
  EXPECT_TRUE(EveryRankHasItsOwnGpu({"node-a/uuid0"}));
}

}  // namespace
}  // namespace gemmaserve::worker
