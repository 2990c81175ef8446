// WorkerGroup without workers: what a failure does to its generation, readiness and health, and
// what it refuses before anything is sent. The paths with real workers are in tests/cluster and
// tests/integration.
#include "coordinator/worker_group.h"

#include <array>
#include <thread>
#include <vector>

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

// Ranks report their KV pages; the replica runs with the fewest, and refuses a rank whose pages
// hold other block counts (block ids would name other memory there) or no valid layout at all.
TEST(WorkerGroupTest, RegistrationAgreesOnPagesAndRefusesOtherLayouts) {
  WorkerGroup group(Spec());
  internal::v1::ClusterConfig config;
  {
    grpc::ServerContext context;
    ASSERT_TRUE(group.GetClusterConfig(&context, nullptr, &config).ok());
  }
  auto Request = [&config](int rank, int64_t pages, int64_t sliding, int64_t full) {
    internal::v1::RegisterRequest request;
    request.set_rank(rank);
    request.set_world_size(2);
    request.set_session_id(config.session_id());
    request.set_generation(config.generation());
    request.set_kv_pages(pages);
    request.set_sliding_blocks_per_page(sliding);
    request.set_full_blocks_per_page(full);
    return request;
  };
  std::array<grpc::Status, 2> status;
  std::array<internal::v1::RegisterResponse, 2> response;
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      grpc::ServerContext context;
      const internal::v1::RegisterRequest request = Request(rank, rank == 0 ? 300 : 200, 1, 10);
      status[rank] = group.Register(&context, &request, &response[rank]);
    });
  }
  for (std::thread& rank : ranks) rank.join();
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(status[rank].ok()) << status[rank].error_message();
    EXPECT_EQ(response[rank].kv_pages(), 200);
  }
  EXPECT_EQ(group.kv_pages().num_pages, 200);
  EXPECT_EQ(group.kv_pages().blocks_per_page, (std::array<int64_t, 2>{1, 10}));

  group.Fail("rank 1 vanished");  // a new generation keeps the first one's pages
  config.set_generation(group.generation());
  grpc::ServerContext context;
  internal::v1::RegisterResponse refused;
  internal::v1::RegisterRequest other = Request(0, 300, 1, 5);
  grpc::Status result = group.Register(&context, &other, &refused);
  EXPECT_EQ(result.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(result.error_message(),
              HasSubstr("rank 0 holds 1 sliding or 5 full blocks per KV page, but the replica's "
                        "pages hold 1 or 10"));
  other = Request(0, 300, 2, 5);
  result = group.Register(&context, &other, &refused);
  EXPECT_EQ(result.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  other = Request(0, 100, 1, 10);
  result = group.Register(&context, &other, &refused);
  EXPECT_EQ(result.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(result.error_message(), HasSubstr("holds 100 KV pages, but the replica runs with 200"));
  group.Shutdown("done", absl::Milliseconds(10));
}

}  // namespace
}  // namespace gemmaserve::coordinator
