// The HTTP and gRPC servers on 127.0.0.1, port 0, against FakeEngine: routes, SSE framing,
// errors naming the field, 413/429/503, abort on disconnect or cancel, health checking.
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "coordinator/api/http_server.h"
#include "coordinator/api/inference_service.h"
#include "coordinator/api/served_model.h"
#include "gemmaserve/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/coordinator/api_servers.h"

namespace gemmaserve::coordinator::api {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using Json = nlohmann::json;
using ::testing::HasSubstr;

using ApiServerTest = ApiServersTest;

TEST_F(ApiServerTest, HealthReadyModelsAndMetrics) {
  EXPECT_EQ(Get("/health").status, 200);
  EXPECT_EQ(Get("/ready").status, 200);
  engine_->set_ready(false);
  const Reply not_ready = Call(http::verb::get, "/ready");
  ExpectError(not_ready, 503, "");
  EXPECT_EQ(not_ready.retry_after, "5");
  EXPECT_EQ(Call(http::verb::get, "/health").status, 200) << "not ready is still alive";
  healthy_ = false;  // the workers stayed away past the recovery timeout
  ExpectError(Call(http::verb::get, "/health"), 503, "");
  healthy_ = true;
  const Reply models = Call(http::verb::get, "/v1/models");
  EXPECT_EQ(models.status, 200);
  EXPECT_EQ(Json::parse(models.body)["data"][0]["id"], "tiny");
  EXPECT_EQ(Call(http::verb::get, "/metrics").body, "gemmaserve_up 1\n");
  ExpectError(Call(http::verb::get, "/nope"), 404, "");
  ExpectError(Call(http::verb::get, "/v1/completions"), 501, "");
}

TEST_F(ApiServerTest, CompletionEchoesThroughTheEngine) {
  const Reply reply = Post("/v1/completions", R"({"prompt": [2, 40, 41], "max_tokens": 3,
                                                   "logprobs": 0})");
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.content_type, "application/json");
  const Json body = Json::parse(reply.body);
  EXPECT_EQ(body["choices"][0]["text"], *model_->tokenizer().Decode({2, 40, 41}));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["choices"][0]["logprobs"]["token_logprobs"].size(), 3u);
  EXPECT_EQ(body["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(body["usage"]["completion_tokens"], 3);
  EXPECT_THAT(body["id"].get<std::string>(), HasSubstr("cmpl-http-"));
}

TEST_F(ApiServerTest, StreamingCompletionIsServerSentEvents) {
  const Reply reply = Post("/v1/completions", R"({"prompt": [2, 40], "max_tokens": 4,
      "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.content_type, "text/event-stream");
  std::string text;
  std::vector<std::string> events;
  size_t pos = 0;
  while (pos < reply.body.size()) {
    ASSERT_EQ(reply.body.compare(pos, 6, "data: "), 0) << reply.body;
    const size_t end = reply.body.find("\n\n", pos);
    ASSERT_NE(end, std::string::npos);
    events.push_back(reply.body.substr(pos + 6, end - pos - 6));
    pos = end + 2;
  }
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  const Json usage = Json::parse(events[events.size() - 2]);
  EXPECT_EQ(usage["usage"]["completion_tokens"], 4);
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    text += Json::parse(events[i])["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, *model_->tokenizer().Decode({2, 40, 2, 40}));
}

TEST_F(ApiServerTest, ChatSplitsReasoningAndContent) {
  engine_->set_script({"<|channel>", "thought\nplan", "<channel|>", "Hello"});
  const Reply reply = Post("/v1/chat/completions",
                           R"({"messages": [{"role": "user", "content": "Hi"}]})");
  ASSERT_EQ(reply.status, 200) << reply.body;
  const Json message = Json::parse(reply.body)["choices"][0]["message"];
  EXPECT_EQ(message["content"], "Hello");
  EXPECT_EQ(message["reasoning_content"], "plan");
  ASSERT_EQ(engine_->submitted().size(), 1u);
  EXPECT_THAT(engine_->submitted()[0].stop_token_ids,
              ::testing::Contains(model_->turn_end_id()));
}

TEST_F(ApiServerTest, BadRequestsGet400NamingTheFieldAndTheServerKeepsServing) {
  ExpectError(Post("/v1/completions", "{not json"), 400, "");
  ExpectError(Post("/v1/completions", R"({"prompt": "x", "max_tokens": "3"})"), 400, "max_tokens");
  ExpectError(Post("/v1/completions", R"({"prompt": "x", "max_tokens": -1})"), 400, "max_tokens");
  ExpectError(Post("/v1/completions", R"({"prompt": "x", "top_p": 1.5})"), 400, "top_p");
  ExpectError(Post("/v1/completions", R"({"prompt": "x", "temperature": -1})"), 400,
              "temperature");
  ExpectError(Post("/v1/completions", R"({"prompt": "x", "n": 2})"), 400, "n");
  ExpectError(Post("/v1/completions", R"({"model": "other", "prompt": "x"})"), 400, "model");
  ExpectError(Post("/v1/completions", "{\"prompt\": \"\xff\"}"), 400, "prompt");
  ExpectError(Post("/v1/completions", R"({"prompt": ")" + std::string(600, 'a') + R"("})"),
              400, "prompt");
  ExpectError(Post("/v1/chat/completions", R"({"messages": []})"), 400, "messages");
  EXPECT_TRUE(engine_->submitted().empty());
  EXPECT_EQ(Post("/v1/completions", R"({"prompt": [2], "max_tokens": 1})").status, 200);
}

TEST_F(ApiServerTest, OversizedBodyGets413) {
  ExpectError(Post("/v1/completions", std::string(5000, ' ')), 413, "");
  EXPECT_EQ(Call(http::verb::get, "/health").status, 200);
}

TEST_F(ApiServerTest, FullQueueGets429) {
  engine_->set_submit_status(absl::ResourceExhaustedError("waiting queue full (64)"));
  const Reply reply = Post("/v1/completions", R"({"prompt": "x"})");
  ExpectError(reply, 429, "");
  EXPECT_EQ(Json::parse(reply.body)["error"]["type"], "rate_limit_error");
}

TEST_F(ApiServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  net::ip::tcp::socket socket = Connect();
  beast::flat_buffer buffer;
  for (int i = 0; i < 3; ++i) {
    http::request<http::string_body> request(http::verb::post, "/v1/completions", 11);
    request.body() = R"({"prompt": [2, 40], "max_tokens": 2, "stream": true})";
    request.prepare_payload();
    http::write(socket, request);
    http::response<http::string_body> response;
    http::read(socket, buffer, response);
    EXPECT_EQ(response.result_int(), 200u);
    EXPECT_THAT(response.body(), HasSubstr("data: [DONE]\n\n"));
  }
}

TEST_F(ApiServerTest, ClientDisconnectMidStreamAbortsTheRequest) {
  engine_->set_hold(true);
  {
    net::ip::tcp::socket socket = Connect();
    http::request<http::string_body> request(http::verb::post, "/v1/chat/completions", 11);
    request.body() = R"({"messages": [{"role": "user", "content": "Hi"}], "stream": true})";
    request.prepare_payload();
    http::write(socket, request);
    ASSERT_TRUE(WaitFor([&] { return engine_->submitted().size() == 1; }));
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    http::read_header(socket, buffer, parser);
    EXPECT_EQ(parser.get().result_int(), 200u);
  }  // the socket closes
  ASSERT_TRUE(WaitFor([&] { return engine_->aborted().size() == 1; }));
  EXPECT_EQ(engine_->aborted()[0], engine_->submitted()[0].request_id);
  EXPECT_EQ(engine_->num_live(), 0u);
}

TEST_F(ApiServerTest, ShutdownAbortsOpenRequests) {
  engine_->set_hold(true);
  net::ip::tcp::socket socket = Connect();
  http::request<http::string_body> request(http::verb::post, "/v1/completions", 11);
  request.body() = R"({"prompt": "x"})";
  request.prepare_payload();
  http::write(socket, request);
  ASSERT_TRUE(WaitFor([&] { return engine_->submitted().size() == 1; }));
  http_->Shutdown();
  EXPECT_EQ(engine_->aborted().size(), 1u);
}

TEST_F(ApiServerTest, GrpcGenerateStreamsDeltasThenFinal) {
  v1::GenerateRequest request;
  request.mutable_token_ids()->add_ids(2);
  request.mutable_token_ids()->add_ids(40);
  request.set_max_tokens(3);
  request.set_logprobs(true);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse response;
  std::vector<int32_t> ids;
  std::string request_id;
  bool final_seen = false;
  while (reader->Read(&response)) {
    request_id = response.request_id();
    if (response.has_delta()) {
      ids.insert(ids.end(), response.delta().token_ids().begin(), response.delta().token_ids().end());
      EXPECT_EQ(response.delta().logprobs_size(), response.delta().token_ids_size());
    } else {
      final_seen = true;
      EXPECT_EQ(response.final().finish_reason(), v1::FINISH_REASON_LENGTH);
      EXPECT_EQ(response.final().usage().completion_tokens(), 3);
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(final_seen);
  EXPECT_EQ(ids, (std::vector<int32_t>{2, 40, 2}));
  EXPECT_THAT(request_id, HasSubstr("grpc-"));
}

TEST_F(ApiServerTest, GrpcBadInputIsInvalidArgumentNamingTheField) {
  v1::GenerateRequest request;
  request.set_text("hello");
  request.set_top_p(1.5f);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse response;
  EXPECT_FALSE(reader->Read(&response));
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("top_p"));
}

TEST_F(ApiServerTest, GrpcAbortAndCancelEndTheRequest) {
  engine_->set_hold(true);
  v1::GenerateRequest request;
  request.set_request_id("mine");
  request.set_text("hello");
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, request);
  ASSERT_TRUE(WaitFor([&] { return engine_->num_live() == 1; }));
  grpc::ClientContext abort_context;
  v1::AbortRequest abort;
  abort.set_request_id("mine");
  v1::AbortResponse aborted;
  ASSERT_TRUE(stub_->Abort(&abort_context, abort, &aborted).ok());
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.final().finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_TRUE(reader->Finish().ok());

  request.set_request_id("cancelled");
  grpc::ClientContext cancel_context;
  auto cancelled = stub_->Generate(&cancel_context, request);
  ASSERT_TRUE(WaitFor([&] { return engine_->num_live() == 1; }));
  cancel_context.TryCancel();
  ASSERT_TRUE(WaitFor([&] { return engine_->aborted().size() == 2; }));
  // The engine knows the id scoped by its owner (the connection, without API keys).
  EXPECT_THAT(engine_->aborted()[1], ::testing::EndsWith("/cancelled"));
}

TEST_F(ApiServerTest, GrpcInfoLoadTokenizeAndHealth) {
  grpc::ClientContext info_context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&info_context, {}, &info).ok());
  EXPECT_EQ(info.model_name(), "tiny");
  EXPECT_EQ(info.max_model_len(), 128);
  grpc::ClientContext load_context;
  v1::Load load;
  ASSERT_TRUE(stub_->GetLoad(&load_context, {}, &load).ok());
  EXPECT_TRUE(load.ready());
  EXPECT_EQ(load.running_requests(), 3);
  grpc::ClientContext tokenize_context;
  v1::TokenizeRequest tokenize;
  tokenize.mutable_chat()->add_messages()->set_role("user");
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(stub_->Tokenize(&tokenize_context, tokenize, &tokens).ok());
  EXPECT_EQ(tokens.tokens(0), "<bos>");

  // grpc.health.v1.Health/Check with an empty request; SERVING encodes as 08 01.
  grpc::GenericStub generic(channel_);
  grpc::ClientContext health_context;
  grpc::Slice no_bytes(std::string(""));
  grpc::ByteBuffer empty(&no_bytes, 1), reply;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&health_context, "/grpc.health.v1.Health/Check", {}, &empty, &reply,
                    [&done](grpc::Status status) { done.set_value(status); });
  ASSERT_TRUE(done.get_future().get().ok());
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

}  // namespace
}  // namespace gemmaserve::coordinator::api
