// WorkerMetrics: serves its series over HTTP on a free port, and turns a taken port into a Status.
#include "worker/worker_metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve::worker {
namespace {

using ::testing::HasSubstr;

// GET `path` from 127.0.0.1:port over a fresh connection; the whole response, or "" on failure.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request =
        "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) response.append(buffer, n);
    }
  }
  close(fd);
  return response;
}

std::unique_ptr<WorkerMetrics> StartOnFreePort(int rank) {
  absl::StatusOr<std::unique_ptr<WorkerMetrics>> metrics =
      WorkerMetrics::Start({.rank = rank, .bind_address = "127.0.0.1", .port = 0});
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  return metrics.ok() ? std::move(*metrics) : nullptr;
}

TEST(WorkerMetricsTest, ServesRankLabelledSeriesOverHttp) {
  std::unique_ptr<WorkerMetrics> metrics = StartOnFreePort(3);
  ASSERT_NE(metrics, nullptr);
  ASSERT_GT(metrics->port(), 0);

  std::string response = HttpGet(metrics->port(), "/metrics");
  EXPECT_THAT(response, HasSubstr("200 OK"));
  EXPECT_THAT(response, HasSubstr(R"(gemmaserve_worker_up{rank="3"} 1)"));
  EXPECT_THAT(response, HasSubstr(R"(gemmaserve_worker_ready{rank="3"} 0)"));

  metrics->SetReady(true);
  metrics->SetWeightBytes(int64_t{3} << 30);
  metrics->SetKvCacheBytes(1048576);
  metrics->RecordStep(absl::Milliseconds(12), absl::Milliseconds(3));
  metrics->RecordStep(absl::Milliseconds(30), absl::Microseconds(200));
  metrics->SetDecodeGraphs(/*recorded=*/2, /*replayed=*/5, /*held=*/2);
  metrics->SetDecodeGraphs(/*recorded=*/3, /*replayed=*/9, /*held=*/1);
  response = HttpGet(metrics->port(), "/metrics");
  EXPECT_THAT(response, HasSubstr(R"(gemmaserve_worker_ready{rank="3"} 1)"));
  EXPECT_THAT(response, HasSubstr(R"(gemmaserve_worker_weight_bytes{rank="3"} 3221225472)"));
  EXPECT_THAT(response, HasSubstr(R"(gemmaserve_worker_kv_cache_bytes{rank="3"} 1048576)"));
  EXPECT_THAT(response, HasSubstr(R"(gemmaserve_worker_step_compute_seconds_count{rank="3"} 2)"));
  EXPECT_THAT(response, HasSubstr(R"(gemmaserve_worker_decode_graph_steps_total{rank="3"} 9)"));
  EXPECT_THAT(response, HasSubstr(R"(gemmaserve_worker_decode_graphs_recorded_total{rank="3"} 3)"));
  EXPECT_THAT(response, HasSubstr(R"(gemmaserve_worker_decode_graphs{rank="3"} 1)"));
  EXPECT_THAT(response,
              HasSubstr(R"(gemmaserve_worker_step_compute_seconds_bucket{rank="3",le="0.025"} 1)"));
  EXPECT_THAT(
      response,
      HasSubstr(R"(gemmaserve_worker_step_communication_seconds_bucket{rank="3",le="0.00025"} 1)"));
  // The scrape and Serialize show the same registry.
  EXPECT_THAT(metrics->Serialize(), HasSubstr(R"(gemmaserve_worker_ready{rank="3"} 1)"));
}

TEST(WorkerMetricsTest, TakenPortIsAnUnavailableStatusNamingTheAddress) {
  std::unique_ptr<WorkerMetrics> first = StartOnFreePort(0);
  ASSERT_NE(first, nullptr);
  absl::StatusOr<std::unique_ptr<WorkerMetrics>> second =
      WorkerMetrics::Start({.rank = 1, .bind_address = "127.0.0.1", .port = first->port()});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr("127.0.0.1:" + std::to_string(first->port())));
  // The first server is unharmed.
  EXPECT_THAT(HttpGet(first->port(), "/metrics"), HasSubstr("gemmaserve_worker_up"));
}

TEST(WorkerMetricsTest, RejectsPortOutOfRange) {
  absl::StatusOr<std::unique_ptr<WorkerMetrics>> metrics =
      WorkerMetrics::Start({.rank = 0, .bind_address = "127.0.0.1", .port = 70000});
  EXPECT_EQ(metrics.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gemmaserve::worker
