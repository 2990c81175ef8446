// Graceful drain of `gemmaserve serve`: on SIGTERM the coordinator turns not-ready and refuses new
// requests (HTTP 503, gRPC UNAVAILABLE) while a running request finishes normally, then exits 0
// within --drain-timeout-s and its workers are gone. Streams still open when the drain timeout
// expires end with a final event (finish reason abort, then [DONE]) before their sockets close.
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "boost/asio/ip/tcp.hpp"
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

// Sends `body` as a POST to /v1/completions on a raw socket, reads until the first SSE event,
// and returns the socket with what it has read so far.
boost::asio::ip::tcp::socket StartSseStream(boost::asio::io_context& io, int port,
                                            const std::string& body, std::string* received) {
  namespace net = boost::asio;
  net::ip::tcp::socket socket(io);
  socket.connect({net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)});
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Content-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  net::write(socket, net::buffer(request));
  char chunk[4096];
  while (received->find("data: ") == std::string::npos) {
    received->append(chunk, socket.read_some(net::buffer(chunk)));
  }
  return socket;
}

TEST(DrainTest, StreamsOpenWhenTheDrainTimesOutGetAFinalAbortEventBeforeTheirSocketsClose) {
  ServeProcess server;
  ASSERT_TRUE(server.Start({"--drain-timeout-s", "1"})) << server.output();
  const std::vector<int32_t> prompt = LoadGoldenReference("gemma4-tiny-moe").inputs[0];
  // Far longer than the drain timeout.
  const int max_tokens = server.max_model_len() - static_cast<int>(prompt.size()) - 1;
  boost::asio::io_context io;
  std::string sse;
  boost::asio::ip::tcp::socket socket = StartSseStream(
      io, server.http_port(),
      Json{{"prompt", prompt}, {"max_tokens", max_tokens}, {"ignore_eos", true}, {"stream", true}}
          .dump(),
      &sse);
  auto stub = NewInferenceStub(server.grpc_port());
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, GreedyTokenRequest(prompt, max_tokens));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));

  server.Terminate();
  char chunk[4096];
  boost::system::error_code error;
  while (!error) sse.append(chunk, socket.read_some(boost::asio::buffer(chunk), error));
  const size_t abort = sse.find(R"("finish_reason":"abort")");
  const size_t done = sse.find("data: [DONE]");
  ASSERT_NE(abort, std::string::npos) << sse.substr(sse.size() > 2000 ? sse.size() - 2000 : 0);
  ASSERT_NE(done, std::string::npos);
  EXPECT_LT(abort, done);
  EXPECT_NE(sse.find("0\r\n\r\n", done), std::string::npos) << "no last chunk after [DONE]";

  v1::Final final;
  while (reader->Read(&response)) {
    if (response.has_final()) final = response.final();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(final.finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_EQ(server.WaitExit(30), 0) << server.output();
}

}  // namespace
}  // namespace gemmaserve::testing
