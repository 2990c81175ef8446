// The cluster across real network interfaces: the coordinator and two workers each run in their
// own network namespace, joined by veth pairs to a bridge in a fourth (hub) namespace, so gRPC
// (coordinator ↔ workers) and Gloo (worker ↔ worker) cross interfaces rather than loopback. The
// namespaces, links and private addresses exist only inside namespaces this test creates; the
// host's own namespace is never touched.
//
// The coordinator side is this test binary re-executed under `ip netns exec` with
// kCoordinatorFlag: it serves a WorkerGroup on its namespace's address, drives the golden
// sequences through a SequenceDriver and prints what it measured; the test checks the printout.
//
// Needs root (CAP_NET_ADMIN) and iproute2; skips with the reason otherwise.
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/check.h"
#include "coordinator/sequence_driver.h"
#include "coordinator/worker_group.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/model/golden_reference.h"
#include "tests/test_util/child_process.h"

namespace gemmaserve {
namespace {

constexpr char kCoordinatorFlag[] = "--netns-coordinator";
constexpr char kModel[] = "gemma4-tiny-dense";
// A fixed port is safe: it is bound inside a namespace created for this test alone.
constexpr int kCoordinatorPort = 50052;
constexpr int64_t kBlockSize = 16;
constexpr int64_t kMaxSequences = 4;
constexpr int64_t kBlocksPerSequence = 4;
constexpr int64_t kNewTokens = 16;
constexpr absl::Duration kCommandTimeout = absl::Seconds(20);
constexpr absl::Duration kClusterTimeout = absl::Seconds(120);  // hang guard: the coordinator run

// ---- The coordinator, run in its namespace: argv = {self, kCoordinatorFlag, ADDRESS}. ----

// Prints "last_logits_max_abs_diff X", "greedy_tokens_match 0|1" and "done"; exits non-zero
// with a message on any failure.
int RunCoordinator(const std::string& address) {
  const testing::GoldenReference ref = testing::LoadGoldenReference(kModel);
  coordinator::ClusterSpec spec;
  spec.model_dir = absl::StrCat("tests/data/", kModel);
  spec.layout = *parallel::ParallelLayout::Create(/*tp=*/2, /*ep=*/1);
  spec.block_size = kBlockSize;
  spec.join_timeout = absl::Seconds(60);
  spec.step_timeout = absl::Seconds(60);
  coordinator::WorkerGroup group(spec);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&group);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "cannot listen on %s\n", address.c_str());
    return 1;
  }
  auto fail = [&](const absl::Status& status) {
    std::fprintf(stderr, "coordinator: %s\n", status.ToString().c_str());
    group.Shutdown("test failed", absl::Seconds(2));
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    return 1;
  };
  if (absl::Status ready = group.WaitReady(absl::Seconds(60)); !ready.ok()) return fail(ready);
  coordinator::SequenceDriver driver(
      [&group](const internal::v1::StepPlan& plan) { return group.Step(plan); }, kBlockSize,
      model::BlockRuns::PagesFor(group.kv_pages(), kBlocksPerSequence, kMaxSequences),
      kMaxSequences, static_cast<int64_t>(ref.last_logits[0].size()));
  auto logits = driver.Logits(ref.inputs, /*all_positions=*/false);
  if (!logits.ok()) return fail(logits.status());
  float worst = 0;
  for (size_t s = 0; s < ref.inputs.size(); ++s) {
    worst = std::max(worst, testing::MaxAbsDiff((*logits)[s], ref.last_logits[s]));
  }
  auto generations = driver.Generate(ref.inputs, kNewTokens, internal::v1::SamplingParams(), {});
  if (!generations.ok()) return fail(generations.status());
  bool match = true;
  for (size_t s = 0; s < ref.inputs.size(); ++s) match = match && (*generations)[s].tokens == ref.greedy[s];
  std::printf("last_logits_max_abs_diff %g\ngreedy_tokens_match %d\n", worst, match ? 1 : 0);
  group.Shutdown("test done", absl::Seconds(5));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  std::printf("done\n");
  return 0;
}

// ---- The test, in the host namespace. ----

std::string FindIp() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "";
}

std::string SelfPath() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  return n > 0 ? std::string(path, static_cast<size_t>(n)) : "";
}

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root (CAP_NET_ADMIN)";
    ip_ = FindIp();
    if (ip_.empty()) GTEST_SKIP() << "iproute2's `ip` is not installed";
    const std::string prefix = absl::StrCat("gs", getpid(), "-");
    hub_ = prefix + "hub";
    const testing::ProcessResult probe = Ip({"netns", "add", hub_});
    if (probe.exit_code != 0) GTEST_SKIP() << "cannot create a network namespace: " << probe.output;
    namespaces_.push_back(hub_);
    ASSERT_TRUE(IpOk({"-n", hub_, "link", "add", "br0", "type", "bridge"}));
    ASSERT_TRUE(IpOk({"-n", hub_, "link", "set", "br0", "up"}));
    // One namespace per process, each with eth0 on the hub's bridge.
    for (const std::string name : {"coord", "w0", "w1"}) {
      const std::string ns = prefix + name;
      const std::string address = absl::StrCat("10.231.0.", namespaces_.size(), "/24");
      ASSERT_TRUE(IpOk({"netns", "add", ns}));
      namespaces_.push_back(ns);
      const std::string port = absl::StrCat("p-", name);
      ASSERT_TRUE(IpOk({"-n", hub_, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                        "netns", ns}));
      ASSERT_TRUE(IpOk({"-n", hub_, "link", "set", port, "master", "br0", "up"}));
      ASSERT_TRUE(IpOk({"-n", ns, "addr", "add", address, "dev", "eth0"}));
      ASSERT_TRUE(IpOk({"-n", ns, "link", "set", "eth0", "up"}));
      ASSERT_TRUE(IpOk({"-n", ns, "link", "set", "lo", "up"}));
    }
  }

  void TearDown() override {
    children_.clear();  // kills every process before its namespace goes
    for (auto it = namespaces_.rbegin(); it != namespaces_.rend(); ++it) Ip({"netns", "del", *it});
  }

  testing::ProcessResult Ip(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {ip_};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunProcess(argv, kCommandTimeout);
  }

  ::testing::AssertionResult IpOk(const std::vector<std::string>& args) {
    const testing::ProcessResult result = Ip(args);
    if (result.exit_code == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "ip " << absl::StrJoin(args, " ") << ": exit " << result.exit_code << ": " << result.output;
  }

  // Runs argv in namespace `ns`; the process (and its namespace) go at TearDown.
  testing::ChildProcess& Start(const std::string& ns, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {ip_, "netns", "exec", ns});
    testing::ChildOptions options;
    // gRPC would send the coordinator connection through a proxy named in the environment.
    options.unset_env = {"grpc_proxy", "https_proxy", "http_proxy"};
    absl::StatusOr<std::unique_ptr<testing::ChildProcess>> child =
        testing::ChildProcess::Start(argv, options);
    CHECK_OK(child.status());
    children_.push_back(std::move(*child));
    return *children_.back();
  }

  // The exit code of `child` within `timeout`; −1 (after killing it) when it is still running
  // then or a signal ended it.
  static int ExitCode(testing::ChildProcess& child, absl::Duration timeout) {
    const std::optional<testing::ExitStatus> status = child.Wait(timeout);
    if (!status.has_value()) child.Kill();
    return status.has_value() && status->signal == 0 ? status->exit_code : -1;
  }

  std::string ip_;
  std::string hub_;
  std::vector<std::string> namespaces_;  // hub, coord, w0, w1 (10.231.0.1, .2, .3)
  std::vector<std::unique_ptr<testing::ChildProcess>> children_;
};

TEST_F(NetnsTest, CoordinatorAndWorkersInSeparateNamespacesMatchTheGoldenLogitsAndTokens) {
  const std::string coordinator = absl::StrCat("10.231.0.1:", kCoordinatorPort);
  testing::ChildProcess& coord = Start(namespaces_[1], {SelfPath(), kCoordinatorFlag, coordinator});
  std::vector<testing::ChildProcess*> workers;
  for (int rank = 0; rank < 2; ++rank) {
    workers.push_back(&Start(
        namespaces_[2 + rank],
        {GEMMASERVE_BINARY, "worker", "--coordinator", coordinator, "--rank", absl::StrCat(rank),
         "--world-size", "2", "--collective-host", absl::StrCat("10.231.0.", 2 + rank), "--threads",
         "1", "--kv-cache-mb", "8", "--connect-timeout-s", "30", "--log-level", "warn"}));
  }
  const int exit_code = ExitCode(coord, kClusterTimeout);
  const std::string log = coord.output();
  const std::string worker_logs = absl::StrCat("\n--- w0 ---\n", workers[0]->output(),
                                               "\n--- w1 ---\n", workers[1]->output());
  ASSERT_EQ(exit_code, 0) << log << worker_logs;
  // The workers end on the coordinator's Shutdown.
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(ExitCode(*workers[rank], absl::Seconds(10)), 0) << "rank " << rank << worker_logs;
  }

  float max_abs_diff = -1;
  int greedy_match = -1;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() != 2) continue;
    if (fields[0] == "last_logits_max_abs_diff") {
      ASSERT_TRUE(absl::SimpleAtof(fields[1], &max_abs_diff)) << line;
    }
    if (fields[0] == "greedy_tokens_match") {
      ASSERT_TRUE(absl::SimpleAtoi(fields[1], &greedy_match)) << line;
    }
  }
  ASSERT_GE(max_abs_diff, 0) << log;
  EXPECT_LE(max_abs_diff, testing::kGoldenTolerance) << log;
  EXPECT_EQ(greedy_match, 1) << log;
}

}  // namespace
}  // namespace gemmaserve

// gtest_main is linked too, but this main wins: the binary doubles as the namespaced coordinator.
int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], gemmaserve::kCoordinatorFlag) == 0) {
    return gemmaserve::RunCoordinator(argv[2]);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
