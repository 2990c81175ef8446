// Local workers that would run more compute threads than the machine has cores wait passively
// (tools/parallel_flags.h, PrepareLocalWorkerThreads): serve says so, the workers' environment
// carries OMP_WAIT_POLICY=passive, and they still serve the golden tokens. Workers that fit are
// left alone.
#include <sched.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"
#include "tests/model/golden_reference.h"

namespace gemmaserve::testing {
namespace {

int Cores() {
  cpu_set_t allowed;
  return sched_getaffinity(0, sizeof(allowed), &allowed) == 0 ? CPU_COUNT(&allowed) : 1;
}

// The NUL-separated entries of /proc/PID/environ.
std::vector<std::string> EnvironmentOf(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::vector<std::string> entries;
  for (size_t begin = 0; begin < text.size();) {
    const size_t end = text.find('\0', begin);
    entries.push_back(text.substr(begin, end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return entries;
}

bool WaitsPassively(pid_t pid) {
  for (const std::string& entry : EnvironmentOf(pid)) {
    if (entry == "OMP_WAIT_POLICY=passive") return true;
  }
  return false;
}

TEST(WorkerThreadsTest, OversubscribedWorkersWaitPassivelyAndServeSaysSo) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) GTEST_SKIP() << "OMP_WAIT_POLICY is set here";
  // Two EP workers of as many threads as there are cores: twice too many.
  ServeProcess server;
  ASSERT_TRUE(server.Start({"--threads", std::to_string(Cores())})) << server.output();
  EXPECT_NE(server.output().find("more compute threads than the " + std::to_string(Cores()) +
                                 " cores here"),
            std::string::npos)
      << server.output();
  for (int rank : {0, 1}) {
    const pid_t worker = server.WorkerPid(rank);
    ASSERT_GT(worker, 0) << "rank " << rank;
    EXPECT_TRUE(WaitsPassively(worker)) << "rank " << rank;
  }
  const GoldenReference golden = LoadGoldenReference("gemma4-tiny-moe");
  auto stub = NewInferenceStub(server.grpc_port());
  const GrpcResult result = GenerateAll(*stub, GreedyTokenRequest(golden.inputs[0], 8));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.token_ids,
            std::vector<int32_t>(golden.greedy[0].begin(), golden.greedy[0].begin() + 8));
}

TEST(WorkerThreadsTest, WorkersThatFitTheCoresAreLeftAlone) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) GTEST_SKIP() << "OMP_WAIT_POLICY is set here";
  if (Cores() < 2) GTEST_SKIP() << "two workers of one thread do not fit one core";
  ServeProcess server;
  ASSERT_TRUE(server.Start({})) << server.output();  // two workers of one thread
  EXPECT_EQ(server.output().find("more compute threads than"), std::string::npos);
  const pid_t worker = server.WorkerPid(0);
  ASSERT_GT(worker, 0);
  EXPECT_FALSE(WaitsPassively(worker));
}

}  // namespace
}  // namespace gemmaserve::testing
