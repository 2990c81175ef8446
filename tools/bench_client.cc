#include "tools/bench_client.h"

#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "common/grpc_status.h"
#include "gemmaserve/v1/inference.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::tools {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using Json = nlohmann::json;

// Records output arrival times into a BenchTiming.
class Stopwatch {
 public:
  void Output() {
    const absl::Time now = absl::Now();
    if (!seen_output_) {
      timing_.ttft_ms = absl::ToDoubleMilliseconds(now - start_);
      seen_output_ = true;
    } else {
      timing_.inter_token_ms.push_back(absl::ToDoubleMilliseconds(now - last_));
    }
    last_ = now;
  }
  BenchTiming Finish(int64_t output_tokens) {
    timing_.total_ms = absl::ToDoubleMilliseconds(absl::Now() - start_);
    timing_.output_tokens = output_tokens;
    return std::move(timing_);
  }

 private:
  absl::Time start_ = absl::Now();
  absl::Time last_;
  bool seen_output_ = false;
  BenchTiming timing_;
};

class GrpcBenchClient : public BenchClient {
 public:
  explicit GrpcBenchClient(const std::string& server)
      : stub_(v1::Inference::NewStub(
            grpc::CreateChannel(server, grpc::InsecureChannelCredentials()))) {}

  absl::StatusOr<BenchTiming> Run(const std::vector<int32_t>& prompt_ids,
                                  int64_t output_len) override {
    v1::GenerateRequest request;
    request.mutable_token_ids()->mutable_ids()->Add(prompt_ids.begin(), prompt_ids.end());
    request.set_max_tokens(static_cast<int32_t>(output_len));
    request.set_ignore_eos(true);
    grpc::ClientContext context;
    Stopwatch stopwatch;
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    int64_t output_tokens = 0;
    while (reader->Read(&response)) {
      if (response.has_delta() && response.delta().token_ids_size() > 0) stopwatch.Output();
      if (response.has_final()) output_tokens = response.final().usage().completion_tokens();
    }
    const absl::Status status = FromGrpc(reader->Finish(), "Generate");
    if (!status.ok()) return status;
    return stopwatch.Finish(output_tokens);
  }

 private:
  std::unique_ptr<v1::Inference::Stub> stub_;
};

class HttpBenchClient : public BenchClient {
 public:
  explicit HttpBenchClient(const std::string& server) : socket_(io_) {
    const size_t colon = server.rfind(':');
    host_ = server.substr(0, colon);
    port_ = colon == std::string::npos ? "8000" : server.substr(colon + 1);
  }

  absl::StatusOr<BenchTiming> Run(const std::vector<int32_t>& prompt_ids,
                                  int64_t output_len) override {
    beast::error_code error;
    if (!socket_.is_open()) {
      net::ip::tcp::resolver resolver(io_);
      net::connect(socket_, resolver.resolve(host_, port_, error), error);
      if (error) {
        socket_.close();
        return absl::UnavailableError(absl::StrCat("connect ", host_, ":", port_, ": ",
                                                   error.message()));
      }
    }
    http::request<http::string_body> request(http::verb::post, "/v1/completions", 11);
    request.set(http::field::host, host_);
    request.set(http::field::content_type, "application/json");
    request.body() = Json{{"prompt", prompt_ids},
                          {"max_tokens", output_len},
                          {"ignore_eos", true},
                          {"stream", true},
                          {"stream_options", {{"include_usage", true}}}}
                         .dump();
    request.prepare_payload();
    Stopwatch stopwatch;
    http::write(socket_, request, error);
    if (error) return Failed("write", error);

    // SSE events arrive as chunks; each "data:" event with text is one output.
    int64_t output_tokens = 0;
    std::string events;
    http::response_parser<http::empty_body> parser;
    parser.body_limit(boost::none);
    auto on_body = [&](uint64_t, beast::string_view body, beast::error_code&) {
      events.append(body.data(), body.size());
      size_t end;
      while ((end = events.find("\n\n")) != std::string::npos) {
        const std::string event = events.substr(0, end);
        events.erase(0, end + 2);
        if (event.rfind("data: {", 0) != 0) continue;
        const Json json = Json::parse(event.substr(6), nullptr, /*allow_exceptions=*/false);
        if (json.is_discarded()) continue;
        if (json.contains("usage") && json["usage"].is_object()) {
          output_tokens = json["usage"].value("completion_tokens", int64_t{0});
        }
        const Json& choices = json.value("choices", Json::array());
        if (!choices.empty() && !choices[0].value("text", std::string()).empty()) {
          stopwatch.Output();
        }
      }
      return body.size();
    };
    parser.on_chunk_body(on_body);
    http::read(socket_, buffer_, parser, error);
    if (error) return Failed("read", error);
    if (parser.get().result_int() != 200) {
      return absl::InternalError(absl::StrCat("HTTP ", parser.get().result_int()));
    }
    if (!parser.get().keep_alive()) socket_.close();
    return stopwatch.Finish(output_tokens);
  }

 private:
  absl::Status Failed(const char* what, const beast::error_code& error) {
    beast::error_code ignored;
    socket_.close(ignored);
    return absl::UnavailableError(absl::StrCat("HTTP ", what, ": ", error.message()));
  }

  net::io_context io_;
  net::ip::tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::string host_;
  std::string port_;
};

}  // namespace

std::unique_ptr<BenchClient> NewGrpcBenchClient(const std::string& server) {
  return std::make_unique<GrpcBenchClient>(server);
}

std::unique_ptr<BenchClient> NewHttpBenchClient(const std::string& server) {
  return std::make_unique<HttpBenchClient>(server);
}

}  // namespace gemmaserve::tools
