// Resource bounds of a real `gemmaserve serve`: with its open-file limit lowered, holding more
// idle connections than it has descriptors neither spins its accept loop nor blocks /health; a
// streaming client that stops reading is disconnected within the write timeout (its request
// aborted, its KV blocks freed); too many stop strings get 400 / INVALID_ARGUMENT.
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "boost/asio/ip/tcp.hpp"
#include "gtest/gtest.h"
#include "tests/integration/api_clients.h"
#include "tests/integration/serve_process.h"
#include "tests/model/golden_reference.h"

namespace gemmaserve::testing {
namespace {

using Json = nlohmann::json;
namespace net = boost::asio;

// CPU seconds (user + system) `pid` has used, from /proc/PID/stat.
double CpuSeconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Seconds a GET /health takes, or a large number when it fails.
double HealthSeconds(int port) {
  const absl::Time start = absl::Now();
  const HttpReply reply = HttpClient(port).Get("/health");
  if (reply.status != 200) return 1e9;
  return absl::ToDoubleSeconds(absl::Now() - start);
}

TEST(FdLimitTest, MoreIdleConnectionsThanDescriptorsNeitherSpinNorBlockHealth) {
  constexpr int kFdLimit = 256;
  ServeProcess server;
  ChildOptions options;
  options.max_open_files = kFdLimit;
  ASSERT_TRUE(server.Start({}, 120, options)) << server.output();

  net::io_context io;
  std::vector<net::ip::tcp::socket> idle;
  for (int i = 0; i < kFdLimit + 50; ++i) {
    idle.emplace_back(io);
    idle.back().connect(
        {net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(server.http_port())});
  }
  // Let the server take what it can of them (closing the longest-idle ones to make room).
  absl::SleepFor(absl::Seconds(3));
  constexpr double kWindowS = 5;
  const double cpu_before = CpuSeconds(server.pid());
  absl::SleepFor(absl::Seconds(kWindowS / 2));
  const double health_s = HealthSeconds(server.http_port());
  absl::SleepFor(absl::Seconds(kWindowS / 2));
  const double cores = (CpuSeconds(server.pid()) - cpu_before) / kWindowS;
  EXPECT_LT(cores, 0.1) << "the coordinator spun while out of descriptors";
  EXPECT_LT(health_s, 1.0) << "/health did not answer within 1 s";
  for (int i = 0; i < 3; ++i) EXPECT_LT(HealthSeconds(server.http_port()), 1.0);
  EXPECT_NE(server.output().find("Too many open files"), std::string::npos)
      << "the descriptor limit was never reached, so the test proved nothing";
}

TEST(WriteTimeoutTest, AStreamingClientThatStopsReadingIsDisconnectedWithinTheWriteTimeout) {
  constexpr int kWriteTimeoutS = 2;
  ServeProcess server;
  ASSERT_TRUE(server.Start({"--http-write-timeout-s", std::to_string(kWriteTimeoutS)}))
      << server.output();
  auto stub = NewInferenceStub(server.grpc_port());
  const std::vector<int32_t> prompt = LoadGoldenReference("gemma4-tiny-moe").inputs[0];
  Json body = {{"prompt", prompt},
               {"max_tokens", server.max_model_len() - static_cast<int>(prompt.size()) - 1},
               {"ignore_eos", true},
               {"temperature", 0},
               {"logprobs", 20},  // about 2 KB per token: the socket buffers fill fast
               {"stream", true}};

  net::io_context io;
  net::ip::tcp::socket socket(io);
  socket.open(net::ip::tcp::v4());
  socket.set_option(net::socket_base::receive_buffer_size(4096));
  socket.connect({net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(server.http_port())});
  const std::string text = body.dump();
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(text.size()) + "\r\n\r\n" + text;
  net::write(socket, net::buffer(request));
  char first[256];
  socket.read_some(net::buffer(first));  // the response has started; from here on, no reads
  const absl::Time stopped_reading = absl::Now();

  // The request would run for thousands of tokens; it is aborted soon after the write timeout.
  const absl::Time give_up = stopped_reading + absl::Seconds(kWriteTimeoutS + 15);
  while (GetLoad(*stub).running_requests() != 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  const absl::Duration cut_after = absl::Now() - stopped_reading;
  EXPECT_LT(cut_after, absl::Seconds(kWriteTimeoutS + 10)) << server.output();
  EXPECT_TRUE(WaitIdle(*stub)) << "the cut request's KV blocks were not freed";
  const std::string metrics = HttpClient(server.http_port()).Get("/metrics").body;
  double aborted = 0;
  for (const Sample& sample : Samples(metrics, "gemmaserve_requests_total")) {
    if (sample.labels.at("finish_reason") == "abort") aborted += sample.value;
  }
  EXPECT_EQ(aborted, 1) << "the request was not cut but finished on its own";
}

TEST(StopStringLimitTest, MoreStopStringsThanTheCapGet400AndInvalidArgument) {
  ServeProcess server;
  ASSERT_TRUE(server.Start({})) << server.output();
  const HttpClient http(server.http_port());
  auto stub = NewInferenceStub(server.grpc_port());
  auto body = [](int num_stops) {
    return Json{
        {"prompt", "Hello"}, {"max_tokens", 2}, {"stop", std::vector<std::string>(num_stops, "zz")}}
        .dump();
  };
  const HttpReply refused = http.Post("/v1/completions", body(65));
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_EQ(Json::parse(refused.body, nullptr, false)["error"]["param"], "stop") << refused.body;
  EXPECT_EQ(http.Post("/v1/completions", body(64)).status, 200);

  v1::GenerateRequest request = GreedyTokenRequest({2, 40}, 2);
  for (int i = 0; i < 65; ++i) request.add_stop("zz");
  const GrpcResult grpc_refused = GenerateAll(*stub, request);
  EXPECT_EQ(grpc_refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(grpc_refused.status.error_message().find("stop"), std::string::npos);

  // A configured cap replaces 64.
  ServeProcess capped;
  ASSERT_TRUE(capped.Start({"--max-stop-strings", "8"})) << capped.output();
  const HttpClient capped_http(capped.http_port());
  EXPECT_EQ(capped_http.Post("/v1/completions", body(9)).status, 400);
  EXPECT_EQ(capped_http.Post("/v1/completions", body(8)).status, 200);
}

}  // namespace
}  // namespace gemmaserve::testing
