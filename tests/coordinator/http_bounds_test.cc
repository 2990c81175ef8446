// The HTTP server's bounds and shutdown, in process against FakeEngine: the connection limit
// (the longest-idle connection makes room; with all busy a new one is refused), the write
// timeout that disconnects a client that stops reading, the header limit, tokenization off the
// event loop (/health answers while a long prompt is prepared), and shutdown, which
// ends every open stream with a final abort event (then [DONE]) before closing it, also when the
// engine does not answer the abort. gRPC streams get their final message at shutdown too.
#include <sys/socket.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/coordinator/api_servers.h"

namespace gemmaserve::coordinator::api {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using ::testing::HasSubstr;

constexpr int kMaxConnections = 4;
constexpr absl::Duration kWriteTimeout = absl::Seconds(1);

// Sends a streaming completion on `socket` and reads the response header.
void StartStream(net::ip::tcp::socket& socket, beast::flat_buffer& buffer) {
  http::request<http::string_body> request(http::verb::post, "/v1/completions", 11);
  request.set(http::field::host, "localhost");
  request.body() = R"({"prompt": "x", "stream": true})";
  request.prepare_payload();
  http::write(socket, request);
  http::response_parser<http::empty_body> header;
  http::read_header(socket, buffer, header);
  EXPECT_EQ(header.get().result_int(), 200u);
}

// Everything left on `socket` until the server closes it (raw, chunked framing included).
std::string ReadToEnd(net::ip::tcp::socket& socket, beast::flat_buffer& buffer) {
  std::string received = beast::buffers_to_string(buffer.data());
  char chunk[4096];
  beast::error_code error;
  while (!error) {
    const size_t n = socket.read_some(net::buffer(chunk), error);
    received.append(chunk, n);
  }
  return received;
}

// True once the server has closed `socket`.
bool ClosedByServer(net::ip::tcp::socket& socket) {
  socket.non_blocking(true);
  char byte;
  beast::error_code error;
  socket.read_some(net::buffer(&byte, 1), error);
  socket.non_blocking(false);
  return error == net::error::eof || error == net::error::connection_reset;
}

class HttpBoundsTest : public ApiServersTest {
 protected:
  void SetUp() override {
    HttpServerOptions options;
    options.max_connections = kMaxConnections;
    options.write_timeout = kWriteTimeout;
    options.max_header_bytes = 1024;
    StartServers(std::move(options), GrpcApiServerOptions());
  }
};

TEST_F(HttpBoundsTest, TheLongestIdleConnectionMakesRoomPastTheLimit) {
  std::vector<net::ip::tcp::socket> idle;
  for (int i = 0; i < kMaxConnections; ++i) {
    idle.push_back(Connect());
    // Accepted in order, so "longest idle" is well defined.
    ASSERT_TRUE(WaitFor([&] { return http_->num_connections() == i + 1; }));
  }
  EXPECT_EQ(Get("/health").status, 200);
  ASSERT_TRUE(WaitFor([&] { return ClosedByServer(idle[0]); }));
  EXPECT_FALSE(ClosedByServer(idle[kMaxConnections - 1]));
  EXPECT_LE(http_->num_connections(), kMaxConnections);
}

TEST_F(HttpBoundsTest, WithEveryConnectionBusyANewOneIsRefused) {
  engine_->set_hold(true);
  std::vector<net::ip::tcp::socket> streams;
  beast::flat_buffer buffer;
  for (int i = 0; i < kMaxConnections; ++i) {
    streams.push_back(Connect());
    StartStream(streams.back(), buffer);
    buffer.clear();
  }
  net::ip::tcp::socket extra = Connect();
  ASSERT_TRUE(WaitFor([&] { return ClosedByServer(extra); }));
  EXPECT_EQ(engine_->num_live(), static_cast<size_t>(kMaxConnections));
}

TEST_F(HttpBoundsTest, AClientThatStopsReadingIsDisconnectedWithinTheWriteTimeout) {
  // 20 MB of output at 10 MB/s, far more than the socket buffers hold.
  engine_->set_script(std::vector<std::string>(2000, std::string(10000, 'a')));
  net::ip::tcp::socket socket(io_);
  socket.open(net::ip::tcp::v4());
  socket.set_option(net::socket_base::receive_buffer_size(4096));
  socket.connect({net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(http_->port())});
  beast::flat_buffer buffer;
  StartStream(socket, buffer);
  const absl::Time start = absl::Now();
  // The client reads nothing more. Once the buffers are full the server's write waits; after
  // the write timeout the server closes the connection and aborts the request.
  ASSERT_TRUE(WaitFor([&] { return engine_->aborted().size() == 1; }, absl::Seconds(20)))
      << "the stalled stream was never cut";
  EXPECT_LT(absl::Now() - start, kWriteTimeout + absl::Seconds(5));
  EXPECT_TRUE(WaitFor([&] { return http_->num_connections() == 0; }));
}

TEST_F(HttpBoundsTest, HeadersOverTheLimitGet431) {
  const Reply reply = Get("/health", {{"X-Padding", std::string(2000, 'p')}});
  ExpectError(reply, 431, "");
  EXPECT_EQ(Get("/health").status, 200);
}

class TokenizerPoolTest : public ApiServersTest {
 protected:
  void SetUp() override {
    HttpServerOptions options;
    options.num_threads = 1;  // one event-loop thread: a tokenization on it would stall /health
    options.num_tokenizer_threads = 1;
    options.max_body_bytes = int64_t{64} << 20;
    StartServers(std::move(options), GrpcApiServerOptions());
  }
};

TEST_F(TokenizerPoolTest, HealthAnswersWhileALongPromptIsParsedAndTokenized) {
  // About 8 MB of prompt: parsing and tokenizing it take a good part of a second.
  std::string prompt;
  for (int i = 0; prompt.size() < (8 << 20); ++i) prompt += "word" + std::to_string(i) + " ";
  const std::string body = R"({"prompt": ")" + prompt + R"(", "max_tokens": 1})";
  absl::Time big_done;
  std::thread big([&] {
    const Reply reply = Post("/v1/completions", body);
    big_done = absl::Now();
    EXPECT_EQ(reply.status, 400) << "the prompt should exceed the context";
  });
  // Wait until the request has been read (the server is parsing it), then probe.
  ASSERT_TRUE(WaitFor([&] { return http_->num_connections() == 1; }));
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Time probe = absl::Now();
  EXPECT_EQ(Get("/health").status, 200);
  const absl::Time probe_done = absl::Now();
  big.join();
  EXPECT_LT(probe_done, big_done) << "the probe did not finish while the big request was "
                                     "being prepared";
  EXPECT_LT(probe_done - probe, absl::Milliseconds(100)) << "/health waited for the tokenizer";
}

class ShutdownTest : public ApiServersTest, public ::testing::WithParamInterface<bool> {};

TEST_P(ShutdownTest, EveryOpenStreamGetsAFinalAbortEventThenDone) {
  const bool engine_answers_abort = GetParam();
  engine_->set_hold(true);
  engine_->set_ignore_abort(!engine_answers_abort);
  std::vector<net::ip::tcp::socket> streams;
  std::vector<beast::flat_buffer> buffers(2);
  for (const char* body :
       {R"({"prompt": "x", "stream": true})",
        R"({"messages": [{"role": "user", "content": "Hi"}], "stream": true})"}) {
    streams.push_back(Connect());
    http::request<http::string_body> request(
        http::verb::post, streams.size() == 1 ? "/v1/completions" : "/v1/chat/completions", 11);
    request.body() = body;
    request.prepare_payload();
    http::write(streams.back(), request);
    http::response_parser<http::empty_body> header;
    http::read_header(streams.back(), buffers[streams.size() - 1], header);
    ASSERT_EQ(header.get().result_int(), 200u);
  }
  grpc::ClientContext context;
  v1::GenerateRequest request;
  request.set_text("hello");
  auto reader = stub_->Generate(&context, request);
  ASSERT_TRUE(WaitFor([&] { return engine_->submitted().size() == 3; }));

  std::thread shutdown([this] {
    http_->Shutdown(absl::Seconds(2));
    grpc_->Shutdown(absl::Seconds(2));
  });
  for (size_t i = 0; i < streams.size(); ++i) {
    const std::string body = ReadToEnd(streams[i], buffers[i]);
    const size_t abort = body.find(R"("finish_reason":"abort")");
    const size_t done = body.find("data: [DONE]");
    EXPECT_NE(abort, std::string::npos) << body;
    EXPECT_NE(done, std::string::npos) << body;
    EXPECT_LT(abort, done) << body;
    EXPECT_NE(body.find("0\r\n\r\n", done), std::string::npos) << "no last chunk: " << body;
  }
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.final().finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_TRUE(reader->Finish().ok());
  shutdown.join();
  const std::vector<std::string> aborted = engine_->aborted();
  EXPECT_EQ(std::set<std::string>(aborted.begin(), aborted.end()).size(), 3u);
}

INSTANTIATE_TEST_SUITE_P(EngineAnswersAbort, ShutdownTest, ::testing::Bool());

}  // namespace
}  // namespace gemmaserve::coordinator::api
