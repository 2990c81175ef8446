// ApiServersTest: a fixture with the HTTP and gRPC servers on 127.0.0.1, port 0, in this process
// against a FakeEngine on the tiny dense model's tokenizer, and blocking clients for them. A test
// fixture derived from it may pass its own options to StartServers. Test-only.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "coordinator/api/http_server.h"
#include "coordinator/api/inference_service.h"
#include "coordinator/api/served_model.h"
#include "gemmaserve/v1/inference.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/coordinator/fake_engine.h"

namespace gemmaserve::coordinator::api {

struct Reply {
  int status = 0;
  std::string content_type;
  std::string body;
  std::string www_authenticate;
  std::string retry_after;  // the Retry-After header, if any
};

using Headers = std::vector<std::pair<std::string, std::string>>;  // extra request headers

class ApiServersTest : public ::testing::Test {
 protected:
  using Json = nlohmann::json;

  // The default servers; a fixture that wants others overrides SetUp and calls StartServers.
  void SetUp() override {
    HttpServerOptions options;
    options.max_body_bytes = 4096;
    StartServers(std::move(options), GrpcApiServerOptions());
  }
  void StartServers(HttpServerOptions http_options, GrpcApiServerOptions grpc_options) {
    model_ = ServedModel::Load("tests/data/gemma4-tiny-dense", "tiny").value();
    engine_ = std::make_unique<FakeEngine>(&model_->tokenizer());
    http_options.address = "127.0.0.1";
    http_options.port = 0;
    http_options.metrics = [] { return std::string("gemmaserve_up 1\n"); };
    http_options.healthy = [this] { return healthy_.load(); };
    http_ = HttpServer::Start(std::move(http_options), engine_.get(), model_.get()).value();
    grpc_options.address = "127.0.0.1:0";
    grpc_ = GrpcApiServer::Start(grpc_options, engine_.get(), model_.get()).value();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Inference::NewStub(channel_);
  }
  void TearDown() override {
    if (http_ != nullptr) http_->Shutdown();
    if (grpc_ != nullptr) grpc_->Shutdown();
  }

  boost::asio::ip::tcp::socket Connect() {
    boost::asio::ip::tcp::socket socket(io_);
    socket.connect(
        {boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(http_->port())});
    return socket;
  }

  Reply Call(boost::beast::http::verb verb, const std::string& target, const std::string& body = "",
             const Headers& headers = {}) {
    namespace http = boost::beast::http;
    boost::asio::ip::tcp::socket socket = Connect();
    http::request<http::string_body> request(verb, target, 11);
    request.set(http::field::host, "localhost");
    request.set(http::field::content_type, "application/json");
    for (const auto& [name, value] : headers) request.set(name, value);
    request.body() = body;
    request.prepare_payload();
    http::write(socket, request);
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> response;
    boost::beast::error_code error;
    http::read(socket, buffer, response, error);
    return {static_cast<int>(response.result_int()),
            std::string(response[http::field::content_type]), response.body(),
            std::string(response[http::field::www_authenticate]),
            std::string(response[http::field::retry_after])};
  }
  Reply Post(const std::string& target, const std::string& body, const Headers& headers = {}) {
    return Call(boost::beast::http::verb::post, target, body, headers);
  }
  Reply Get(const std::string& target, const Headers& headers = {}) {
    return Call(boost::beast::http::verb::get, target, "", headers);
  }

  void ExpectError(const Reply& reply, int status, const std::string& param) {
    EXPECT_EQ(reply.status, status) << reply.body;
    const Json body = Json::parse(reply.body, nullptr, false);
    ASSERT_FALSE(body.is_discarded()) << reply.body;
    EXPECT_EQ(body["error"]["code"], status);
    if (param.empty()) {
      EXPECT_TRUE(body["error"]["param"].is_null()) << reply.body;
    } else {
      EXPECT_EQ(body["error"]["param"], param) << reply.body;
    }
  }

  static bool WaitFor(const std::function<bool()>& condition,
                      absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time give_up = absl::Now() + timeout;
    while (!condition()) {
      if (absl::Now() > give_up) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }

  boost::asio::io_context io_;
  std::unique_ptr<ServedModel> model_;
  std::unique_ptr<FakeEngine> engine_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<GrpcApiServer> grpc_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  std::atomic<bool> healthy_{true};  // what HttpServerOptions::healthy answers
};

}  // namespace gemmaserve::coordinator::api
