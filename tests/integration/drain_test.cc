// Graceful drain of `gemmaserve serve`: on SIGTERM the coordinator turns not-ready and refuses new
// requests (HTTP 503, gRPC UNAVAILABLE) while a running request finishes normally, then exits 0
// within --drain-timeout-s and its workers are gone.
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"
#include "tests/model/golden_reference.h"

namespace gemmaserve::testing {
namespace {

using Json = nlohmann::json;

constexpr int kDrainTimeoutS = 30;

TEST(DrainTest, SigtermRefusesNewRequestsFinishesRunningOnesAndExitsZero) {
  ServeProcess server;
  ASSERT_TRUE(server.Start({"--drain-timeout-s", std::to_string(kDrainTimeoutS)}))
      << server.output();
  const std::vector<pid_t> workers = server.Children();
  ASSERT_EQ(workers.size(), 2u) << "expected the two EP workers as children";
  auto stub = NewInferenceStub(server.grpc_port());
  const HttpClient http(server.http_port());
  ASSERT_EQ(http.Get("/ready").status, 200);

  const std::vector<int32_t> prompt = LoadGoldenReference("gemma4-tiny-moe").inputs[0];
  // Long enough to outlast the checks below (steps take tens of milliseconds here).
  constexpr int kMaxTokens = 60;
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, GreedyTokenRequest(prompt, kMaxTokens));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  std::vector<int32_t> ids(response.delta().token_ids().begin(), response.delta().token_ids().end());

  server.Terminate();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int ready_status = 200;
  while (ready_status == 200 && std::chrono::steady_clock::now() < give_up) {
    ready_status = http.Get("/ready").status;
  }
  EXPECT_EQ(ready_status, 503);
  const HttpReply refused = http.Post("/v1/completions", R"({"prompt": [2, 40], "max_tokens": 2})");
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(Json::parse(refused.body, nullptr, false)["error"]["code"], 503) << refused.body;
  const GrpcResult refused_grpc = GenerateAll(*stub, GreedyTokenRequest({2, 40}, 2));
  EXPECT_EQ(refused_grpc.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused_grpc.status.error_message();
  EXPECT_EQ(GetLoad(*stub).running_requests(), 1)
      << "the long request ended before the checks; make it longer";

  bool final_seen = false;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      ids.insert(ids.end(), response.delta().token_ids().begin(), response.delta().token_ids().end());
    } else {
      final_seen = true;
      EXPECT_EQ(response.final().finish_reason(), v1::FINISH_REASON_LENGTH);
      EXPECT_EQ(response.final().usage().completion_tokens(), kMaxTokens);
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(final_seen);
  EXPECT_EQ(ids.size(), static_cast<size_t>(kMaxTokens));

  EXPECT_EQ(server.WaitExit(kDrainTimeoutS), 0) << server.output();
  for (pid_t worker : workers) EXPECT_FALSE(IsRunning(worker)) << "worker " << worker;
}

}  // namespace
}  // namespace gemmaserve::testing
