// The workers' own /metrics and /health ports on a real cluster (tiny MoE, EP 2): each rank
// answers with its rank-labelled series, keeps answering under a workload, and survives the
// scrapes (a worker once died on its first scrape: its HTTP threads' stacks were too small for
// the process's thread-local storage once OpenBLAS was loaded).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"
#include "tests/model/golden_reference.h"

namespace gemmaserve::testing {
namespace {

using ::testing::HasSubstr;

// Binds a socket to 127.0.0.1:port (0: any free port); its fd, or −1. Sets *bound to the port.
int BindLoopback(int port, int* bound) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t length = sizeof(address);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  *bound = ntohs(address.sin_port);
  return fd;
}

// A port p such that p and p + 1 (one per rank) were both free just now.
int FreePortPair() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int first = 0;
    int second = 0;
    const int a = BindLoopback(0, &first);
    if (a < 0) continue;
    const int b = first < 65535 ? BindLoopback(first + 1, &second) : -1;
    close(a);
    if (b >= 0) {
      close(b);
      return first;
    }
  }
  return 0;
}

TEST(WorkerMetricsEndpointTest, EveryRankServesItsSeriesAndSurvivesScrapes) {
  const int base = FreePortPair();
  ASSERT_GT(base, 0);
  ServeProcess server;
  ASSERT_TRUE(server.Start({"--worker-metrics-port", std::to_string(base)})) << server.output();
  auto stub = NewInferenceStub(server.grpc_port());
  const GoldenReference golden = LoadGoldenReference("gemma4-tiny-moe");
  for (int round = 0; round < 3; ++round) {
    for (int rank = 0; rank < 2; ++rank) {
      const HttpClient worker(base + rank);
      const HttpReply metrics = worker.Get("/metrics");
      ASSERT_EQ(metrics.status, 200) << "rank " << rank << "\n" << server.output();
      EXPECT_THAT(metrics.body, HasSubstr("gemmaserve_worker_up{rank=\"" + std::to_string(rank)));
      EXPECT_EQ(worker.Get("/health").status, 200);
      EXPECT_EQ(worker.Get("/nothing").status, 404);
    }
    // The workers still take steps between scrapes.
    const GrpcResult result = GenerateAll(*stub, GreedyTokenRequest(golden.inputs[0], 4));
    ASSERT_TRUE(result.status.ok()) << result.status.error_message() << "\n" << server.output();
  }
  const std::string metrics = HttpClient(base).Get("/metrics").body;
  EXPECT_THAT(metrics, HasSubstr("gemmaserve_worker_ready{rank=\"0\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("gemmaserve_worker_step_compute_seconds_count{rank=\"0\"}"));
}

}  // namespace
}  // namespace gemmaserve::testing
