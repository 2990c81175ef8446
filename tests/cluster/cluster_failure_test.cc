// How the cluster fails: a coordinator that never answers, a worker killed mid-life, command
// lines that cannot be sharded, and a plan the workers must reject. Each failure must be quick,
// name its cause, and leave nothing running. Time bounds here are generous guards against hangs,
// not performance assertions.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/local_cluster.h"
#include "coordinator/local_launcher.h"
#include "coordinator/sequence_driver.h"
#include "coordinator/worker_group.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/test_util/child_process.h"
#include "tests/model/golden_reference.h"

namespace gemmaserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::RunProcess;

constexpr char kDense[] = "tests/data/gemma4-tiny-dense";
constexpr char kMoe[] = "tests/data/gemma4-tiny-moe";
constexpr int64_t kBlockSize = 16;
constexpr absl::Duration kCliTimeout = absl::Seconds(60);  // a hang guard: each ends in seconds

// A TCP port on 127.0.0.1 that was free a moment ago and has no listener now.
int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

std::vector<std::string> Gemmaserve(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {GEMMASERVE_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

TEST(ClusterFailureTest, WorkerExitsNamingTheCoordinatorWhenItStaysUnreachable) {
  const std::string address = absl::StrCat("127.0.0.1:", ClosedPort());
  const testing::ProcessResult run =
      RunProcess(Gemmaserve({"worker", "--coordinator", address, "--rank", "0", "--world-size", "1",
                             "--connect-timeout-s", "2"}),
                 kCliTimeout);
  ASSERT_FALSE(run.timed_out) << run.output;
  EXPECT_EQ(run.signal, 0) << run.output;
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, AllOf(HasSubstr(address), HasSubstr("unreachable")));
  EXPECT_LT(run.elapsed_s, 15) << "the retry budget was 2 s";
}

TEST(ClusterFailureTest, EpOnADenseModelIsRejectedNamingTheModel) {
  const testing::ProcessResult run =
      RunProcess(Gemmaserve({"logits", "--model", kDense, "--ep", "2", "--tokens", "2"}),
                 kCliTimeout);
  ASSERT_FALSE(run.timed_out) << run.output;
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, AllOf(HasSubstr("--ep 2"), HasSubstr("dense")));
}

TEST(ClusterFailureTest, TpThatDoesNotDivideTheModelFailsNamingWhatIsNotDivisible) {
  for (const char* model : {kDense, kMoe}) {
    SCOPED_TRACE(model);
    const testing::ProcessResult run =
        RunProcess(Gemmaserve({"logits", "--model", model, "--tp", "3", "--tokens", "2"}),
                   kCliTimeout);
    ASSERT_FALSE(run.timed_out) << run.output;
    EXPECT_NE(run.exit_code, 0) << run.output;
    // Neither the 4 query heads nor the 512-row vocabulary of the tiny models splits 3 ways; the
    // message names the first quantity checked, e.g. "vocab_size (512) is not divisible by the
    // world size 3".
    EXPECT_THAT(run.output, HasSubstr("is not divisible by the world size 3"));
  }
}

// The pid of this process's child running `worker ... --rank <rank>`, or 0.
pid_t WorkerPid(int rank) {
  for (pid_t pid : testing::ChildrenOf(getpid())) {
    const std::vector<std::string> args = testing::CommandLineOf(pid);
    const auto rank_flag = std::find(args.begin(), args.end(), "--rank");
    if (args.size() > 1 && args[1] == "worker" && rank_flag != args.end() &&
        rank_flag + 1 != args.end() && *(rank_flag + 1) == absl::StrCat(rank)) {
      return pid;
    }
  }
  return 0;
}

// A coordinator assembled by hand, so the test holds the launcher and sees its exit reports.
class KilledWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    coordinator::ClusterSpec spec;
    spec.model_dir = kDense;
    spec.layout = *parallel::ParallelLayout::Create(/*tp=*/2, /*ep=*/1);
    spec.block_size = kBlockSize;
    spec.join_timeout = absl::Seconds(60);
    spec.step_timeout = absl::Seconds(300);  // far above the bound asserted below
    group_ = std::make_unique<coordinator::WorkerGroup>(spec);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(group_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    coordinator::LaunchOptions launch;
    launch.binary = GEMMASERVE_BINARY;
    launch.coordinator = absl::StrCat("127.0.0.1:", port);
    launch.world_size = 2;
    launch.extra_args = {"--threads", "1", "--log-level", "warn", "--kv-cache-mb", "8"};
    auto launcher = coordinator::LocalLauncher::Start(launch, [this](const coordinator::WorkerExit& exit) {
      absl::MutexLock lock(&mu_);
      exits_.push_back(absl::StrCat("rank ", exit.rank, " ", exit.how));
    });
    ASSERT_TRUE(launcher.ok()) << launcher.status();
    launcher_ = std::move(*launcher);
    ASSERT_TRUE(group_->WaitReady(absl::Seconds(60)).ok());
  }

  void TearDown() override {
    if (group_ != nullptr) group_->Shutdown("test done", absl::Seconds(2));
    if (launcher_ != nullptr) launcher_->Stop(absl::Seconds(2));
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  std::unique_ptr<coordinator::WorkerGroup> group_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<coordinator::LocalLauncher> launcher_;
  absl::Mutex mu_;
  std::vector<std::string> exits_ ABSL_GUARDED_BY(mu_);
};

TEST_F(KilledWorkerTest, NextStepIsUnavailableAtOnceAndTheExitIsReported) {
  const testing::GoldenReference ref = testing::LoadGoldenReference("gemma4-tiny-dense");
  coordinator::SequenceDriver driver(
      [this](const internal::v1::StepPlan& plan) { return group_->Step(plan); }, kBlockSize,
      model::BlockRuns::PagesFor(group_->kv_pages(), /*blocks=*/4, /*num_runs=*/1),
      /*max_sequences=*/1, static_cast<int64_t>(ref.last_logits[0].size()));
  auto before = driver.Logits({ref.inputs[0]}, false);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_LE(testing::MaxAbsDiff((*before)[0], ref.last_logits[0]), testing::kGoldenTolerance);

  const pid_t victim = WorkerPid(1);
  ASSERT_NE(victim, 0) << "no child runs worker rank 1";
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  const auto start = std::chrono::steady_clock::now();
  auto after = driver.Logits({ref.inputs[0]}, false);
  const double elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable) << after.status();
  EXPECT_LT(elapsed_s, 30) << "the step waited for its timeout instead of noticing the lost worker";
  EXPECT_FALSE(group_->ready());

  absl::MutexLock lock(&mu_);
  auto reported = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const std::string& exit : exits_) {
      if (exit.rfind("rank 1 ", 0) == 0) return true;
    }
    return false;
  };
  ASSERT_TRUE(mu_.AwaitWithTimeout(absl::Condition(&reported), absl::Seconds(10)))
      << "exits so far: " << absl::StrJoin(exits_, "; ");
  EXPECT_THAT(exits_, ::testing::Contains("rank 1 killed by signal 9"));
}

TEST(ClusterFailureTest, PlanWithABlockOutsideThePoolIsRejectedAndTheReplicaKeepsServing) {
  const testing::GoldenReference ref = testing::LoadGoldenReference("gemma4-tiny-dense");
  coordinator::LocalClusterOptions options;
  options.spec.model_dir = kDense;
  options.spec.layout = *parallel::ParallelLayout::Create(/*tp=*/2, /*ep=*/1);
  options.spec.block_size = kBlockSize;
  options.spec.step_timeout = absl::Seconds(60);
  options.worker_binary = GEMMASERVE_BINARY;
  options.worker_args = {"--threads", "1", "--log-level", "warn", "--kv-cache-mb", "8"};
  options.ready_timeout = absl::Seconds(60);
  auto cluster = coordinator::LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  coordinator::WorkerGroup& group = (*cluster)->group();
  ASSERT_GT(ref.inputs[2].size(), static_cast<size_t>(kBlockSize)) << "needs a second block";

  // Sequence 0 is valid; sequence 1's second block lies far outside the pool. Sequence ids equal
  // their index in the plan, which is what the workers' message names.
  internal::v1::StepPlan plan;
  plan.set_step_id(1000);
  for (int s = 0; s < 2; ++s) {
    internal::v1::SequencePlan* seq = plan.add_sequences();
    seq->set_sequence_id(static_cast<uint64_t>(s));
    seq->mutable_token_ids()->Add(ref.inputs[2].begin(), ref.inputs[2].end());
    const std::vector<int32_t> blocks = {3 * s, s == 1 ? 1 << 30 : 3 * s + 1, 3 * s + 2};
    seq->mutable_sliding_blocks()->Add(blocks.begin(), blocks.end());
    seq->mutable_full_blocks()->Add(blocks.begin(), blocks.end());
    seq->set_return_logits(true);
  }
  auto rejected = group.Step(plan);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument) << rejected.status();
  EXPECT_THAT(std::string(rejected.status().message()),
              AllOf(HasSubstr("sequence 1"), HasSubstr("outside the pool")));
  EXPECT_TRUE(group.ready());
  // A sliding table said to start past the full one (the worker would fill the gap with −1).
  plan.mutable_sequences(1)->set_sliding_blocks_start(int64_t{1} << 40);
  plan.set_step_id(1001);
  rejected = group.Step(plan);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument) << rejected.status();
  EXPECT_THAT(std::string(rejected.status().message()),
              AllOf(HasSubstr("sequence 1"), HasSubstr("sliding_blocks_start 1099511627776")));
  EXPECT_TRUE(group.ready());

  coordinator::SequenceDriver driver(
      [&group](const internal::v1::StepPlan& step) { return group.Step(step); }, kBlockSize,
      model::BlockRuns::PagesFor(group.kv_pages(), /*blocks=*/4, /*num_runs=*/2),
      /*max_sequences=*/2, static_cast<int64_t>(ref.last_logits[0].size()));
  auto logits = driver.Logits({ref.inputs[3]}, false);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_LE(testing::MaxAbsDiff((*logits)[0], ref.last_logits[3]), testing::kGoldenTolerance);
}

}  // namespace
}  // namespace gemmaserve
