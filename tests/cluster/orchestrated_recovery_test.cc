// Recovery in the `coordinator` layout, where workers are started elsewhere: the test plays the
// orchestrator (a StatefulSet) that restarts them. A worker stopped mid-step is found at the
// step's deadline; its generation ends and the live worker exits on its own at once, though its
// step is stuck in a collective. Both ranks started again form generation 2, which gives the
// golden logits; the stopped worker, resumed, exits without disturbing it, and a worker of
// generation 1 can neither register nor attach any more.
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/sequence_driver.h"
#include "coordinator/worker_group.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/model/golden_reference.h"
#include "tests/test_util/child_process.h"

namespace gemmaserve {
namespace {

namespace pb = internal::v1;
using ::testing::HasSubstr;

constexpr int64_t kBlockSize = 16;
constexpr int64_t kNumBlocks = 8;

class OrchestratedRecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ref_ = testing::LoadGoldenReference("gemma4-tiny-dense");
    coordinator::ClusterSpec spec;
    spec.model_dir = "tests/data/gemma4-tiny-dense";
    spec.layout = *parallel::ParallelLayout::Create(/*tp=*/2, /*ep=*/1);
    spec.block_size = kBlockSize;
    spec.join_timeout = absl::Seconds(60);
    spec.step_timeout = absl::Seconds(2);
    spec.step_timeout_per_token = absl::Milliseconds(10);
    group_ = std::make_unique<coordinator::WorkerGroup>(spec);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(group_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
  }

  void TearDown() override {
    group_->Shutdown("test done", absl::Seconds(2));
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  std::unique_ptr<testing::ChildProcess> StartWorker(int rank) {
    auto worker = testing::ChildProcess::Start(
        {GEMMASERVE_BINARY, "worker", "--coordinator", absl::StrCat("127.0.0.1:", port_),
         "--rank", absl::StrCat(rank), "--world-size", "2", "--threads", "1", "--kv-cache-mb", "8",
         "--metrics-port", "-1", "--log-level", "warn"});
    EXPECT_TRUE(worker.ok()) << worker.status();
    return worker.ok() ? std::move(*worker) : nullptr;
  }

  // Golden sequence 2's last-position logits through the group.
  absl::Status ExpectGoldenLogits() {
    coordinator::SequenceDriver driver(
        [this](const pb::StepPlan& plan) { return group_->Step(plan); }, kBlockSize,
        model::BlockRuns::PagesFor(group_->kv_pages(), kNumBlocks, /*num_runs=*/1),
        /*max_sequences=*/1, static_cast<int64_t>(ref_.last_logits[2].size()));
    absl::StatusOr<std::vector<std::vector<float>>> logits = driver.Logits({ref_.inputs[2]}, false);
    if (!logits.ok()) return logits.status();
    EXPECT_LE(testing::MaxAbsDiff((*logits)[0], ref_.last_logits[2]), testing::kGoldenTolerance);
    return absl::OkStatus();
  }

  testing::GoldenReference ref_;
  std::unique_ptr<coordinator::WorkerGroup> group_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(OrchestratedRecoveryTest, StoppedWorkerEndsItsGenerationAndRestartedWorkersFormTheNext) {
  std::unique_ptr<testing::ChildProcess> rank0 = StartWorker(0);
  std::unique_ptr<testing::ChildProcess> rank1 = StartWorker(1);
  ASSERT_TRUE(group_->WaitReady(absl::Seconds(60)).ok());
  ASSERT_TRUE(ExpectGoldenLogits().ok());
  EXPECT_EQ(group_->generation(), 1u);

  ASSERT_EQ(kill(rank1->pid(), SIGSTOP), 0);
  const auto stopped = std::chrono::steady_clock::now();
  const absl::Status lost = ExpectGoldenLogits();
  const double detect_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  EXPECT_EQ(lost.code(), absl::StatusCode::kUnavailable) << lost;
  EXPECT_THAT(std::string(lost.message()), HasSubstr("deadline"));
  EXPECT_LT(detect_s, 15) << "the step's deadline is 2 s plus 10 ms per token";
  EXPECT_FALSE(group_->ready());
  EXPECT_EQ(group_->generation(), 2u);
  // The live worker's step waits in a collective for the stopped one; it exits all the same.
  const std::optional<testing::ExitStatus> survivor = rank0->Wait(absl::Seconds(10));
  ASSERT_TRUE(survivor.has_value()) << "rank 0 of the ended generation is still running";
  EXPECT_NE(survivor->exit_code, 0);

  // The orchestrator starts both ranks again; the stopped one is still there, stopped.
  std::unique_ptr<testing::ChildProcess> new_rank0 = StartWorker(0);
  std::unique_ptr<testing::ChildProcess> new_rank1 = StartWorker(1);
  ASSERT_TRUE(group_->WaitReady(absl::Seconds(60)).ok());
  EXPECT_TRUE(group_->healthy());
  ASSERT_TRUE(ExpectGoldenLogits().ok());

  ASSERT_EQ(kill(rank1->pid(), SIGCONT), 0);
  const std::optional<testing::ExitStatus> zombie = rank1->Wait(absl::Seconds(10));
  ASSERT_TRUE(zombie.has_value()) << "the resumed worker of generation 1 is still running";
  EXPECT_TRUE(group_->ready());
  EXPECT_EQ(group_->generation(), 2u);
  ASSERT_TRUE(ExpectGoldenLogits().ok());

  // Nor could it have come back: generation 1 can neither register nor attach.
  auto stub = pb::Coordinator::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                                                           grpc::InsecureChannelCredentials()));
  pb::ClusterConfig config;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetClusterConfig(&context, {}, &config).ok());
  }
  EXPECT_EQ(config.generation(), 2u);
  pb::RegisterRequest late;
  late.set_rank(1);
  late.set_world_size(2);
  late.set_session_id(config.session_id());
  late.set_generation(1);
  late.set_kv_pages(2 * kNumBlocks);
  late.set_sliding_blocks_per_page(1);
  late.set_full_blocks_per_page(1);
  pb::RegisterResponse response;
  grpc::ClientContext register_context;
  const grpc::Status registered = stub->Register(&register_context, late, &response);
  EXPECT_EQ(registered.error_code(), grpc::StatusCode::ABORTED) << registered.error_message();
  grpc::ClientContext attach_context;
  auto stream = stub->Attach(&attach_context);
  pb::StepResult hello;
  hello.set_rank(1);
  hello.set_generation(1);
  stream->Write(hello);
  stream->WritesDone();
  pb::CoordinatorMessage ignored;
  EXPECT_FALSE(stream->Read(&ignored));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::ABORTED);
  EXPECT_TRUE(group_->ready());
  ASSERT_TRUE(ExpectGoldenLogits().ok());
}

}  // namespace
}  // namespace gemmaserve
