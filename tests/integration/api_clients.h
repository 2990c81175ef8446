// Blocking clients for the integration tests: HTTP/1.1 over Boost.Beast (one connection per
// request, or a raw streaming socket), gRPC gemmaserve.v1.Inference helpers, and a reader for the
// Prometheus text format. Test-only.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "gemmaserve/v1/inference.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::testing {

struct HttpReply {
  int status = 0;  // 0: no response (connection refused or closed)
  std::string content_type;
  std::string body;
  std::string retry_after;  // the Retry-After header, if any
};

class HttpClient {
 public:
  // `api_key`, when set, goes with every request as "Authorization: Bearer KEY".
  explicit HttpClient(int port, std::string api_key = "")
      : port_(port), api_key_(std::move(api_key)) {}

  HttpReply Call(boost::beast::http::verb verb, const std::string& target,
                 const std::string& body = "") const {
    namespace http = boost::beast::http;
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket socket(io);
    boost::beast::error_code error;
    socket.connect(Endpoint(), error);
    if (error) return {};
    http::request<http::string_body> request(verb, target, 11);
    request.set(http::field::host, "127.0.0.1");
    request.set(http::field::content_type, "application/json");
    if (!api_key_.empty()) request.set(http::field::authorization, "Bearer " + api_key_);
    request.body() = body;
    request.prepare_payload();
    http::write(socket, request, error);
    if (error) return {};
    boost::beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(socket, buffer, parser, error);
    if (error) return {};
    const auto& response = parser.get();
    return {static_cast<int>(response.result_int()),
            std::string(response[http::field::content_type]), response.body(),
            std::string(response[http::field::retry_after])};
  }
  HttpReply Get(const std::string& target) const {
    return Call(boost::beast::http::verb::get, target);
  }
  HttpReply Post(const std::string& target, const std::string& body) const {
    return Call(boost::beast::http::verb::post, target, body);
  }

  // Posts `body` and reads the raw response (headers and chunked SSE) until `done` holds for what
  // has arrived, then closes the socket: a client that disconnects mid-stream. False when the
  // response ended first.
  bool PostAndDisconnectWhen(const std::string& target, const std::string& body,
                             const std::function<bool(const std::string&)>& done) const {
    namespace http = boost::beast::http;
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket socket(io);
    socket.connect(Endpoint());
    http::request<http::string_body> request(http::verb::post, target, 11);
    request.set(http::field::host, "127.0.0.1");
    request.set(http::field::content_type, "application/json");
    if (!api_key_.empty()) request.set(http::field::authorization, "Bearer " + api_key_);
    request.body() = body;
    request.prepare_payload();
    http::write(socket, request);
    std::string received;
    char chunk[4096];
    while (!done(received)) {
      boost::beast::error_code error;
      const size_t n = socket.read_some(boost::asio::buffer(chunk), error);
      if (error) return false;
      received.append(chunk, n);
    }
    return true;  // the socket closes here
  }

 private:
  boost::asio::ip::tcp::endpoint Endpoint() const {
    return {boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port_)};
  }
  int port_;
  std::string api_key_;
};

// The `data:` payloads of an SSE body, in order ("[DONE]" included).
inline std::vector<std::string> SseEvents(const std::string& body) {
  std::vector<std::string> events;
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("data: ", 0) == 0) events.push_back(line.substr(6));
  }
  return events;
}

// One Generate call, read to the end.
struct GrpcResult {
  grpc::Status status;
  std::vector<int32_t> token_ids;
  std::vector<v1::TopLogprobs> top_logprobs;  // one per token id, with top_logprobs > 0
  std::string text;
  int num_deltas = 0;
  bool has_final = false;
  v1::Final final;
};

inline std::unique_ptr<v1::Inference::Stub> NewInferenceStub(int port) {
  return v1::Inference::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                    grpc::InsecureChannelCredentials()));
}

// `api_key`, when set, goes with the call as metadata "authorization: Bearer KEY".
inline GrpcResult GenerateAll(v1::Inference::Stub& stub, const v1::GenerateRequest& request,
                              const std::string& api_key = "",
                              std::chrono::seconds deadline = std::chrono::seconds(240)) {
  GrpcResult result;
  grpc::ClientContext context;
  if (!api_key.empty()) context.AddMetadata("authorization", "Bearer " + api_key);
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      ++result.num_deltas;
      result.text += response.delta().text();
      result.token_ids.insert(result.token_ids.end(), response.delta().token_ids().begin(),
                              response.delta().token_ids().end());
      result.top_logprobs.insert(result.top_logprobs.end(),
                                 response.delta().top_logprobs().begin(),
                                 response.delta().top_logprobs().end());
    } else if (response.has_final()) {
      result.has_final = true;
      result.final = response.final();
    }
  }
  result.status = reader->Finish();
  return result;
}

// A greedy request for `ids` that generates exactly max_tokens tokens.
inline v1::GenerateRequest GreedyTokenRequest(const std::vector<int32_t>& ids, int max_tokens) {
  v1::GenerateRequest request;
  for (int32_t id : ids) request.mutable_token_ids()->add_ids(id);
  request.set_temperature(0);
  request.set_ignore_eos(true);
  request.set_max_tokens(max_tokens);
  return request;
}

inline v1::Load GetLoad(v1::Inference::Stub& stub) {
  grpc::ClientContext context;
  v1::Load load;
  const grpc::Status status = stub.GetLoad(&context, {}, &load);
  if (!status.ok()) load.set_total_pages(-1);
  return load;
}

// Polls GetLoad until nothing runs, waits or holds a block; false after timeout_s.
inline bool WaitIdle(v1::Inference::Stub& stub, double timeout_s = 60) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < give_up) {
    const v1::Load load = GetLoad(stub);
    if (load.total_pages() > 0 && load.running_requests() == 0 &&
        load.waiting_requests() == 0 && load.used_sliding_blocks() == 0 &&
        load.used_full_blocks() == 0) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// One sample of a Prometheus text exposition.
struct Sample {
  std::map<std::string, std::string> labels;
  double value = 0;
};

// The samples of metric `name` (exactly that name; no _bucket/_sum suffix matching).
inline std::vector<Sample> Samples(const std::string& text, const std::string& name) {
  std::vector<Sample> samples;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#' || line.compare(0, name.size(), name) != 0) continue;
    size_t pos = name.size();
    if (pos >= line.size() || (line[pos] != '{' && line[pos] != ' ')) continue;
    Sample sample;
    if (line[pos] == '{') {
      const size_t end = line.find('}', pos);
      std::string labels = line.substr(pos + 1, end - pos - 1);
      size_t at = 0;
      while (at < labels.size()) {
        const size_t eq = labels.find('=', at);
        const size_t quote_end = labels.find('"', eq + 2);
        sample.labels[labels.substr(at, eq - at)] = labels.substr(eq + 2, quote_end - eq - 2);
        at = quote_end + 1;
        if (at < labels.size() && labels[at] == ',') ++at;
      }
      pos = end + 1;
    }
    sample.value = std::stod(line.substr(pos + 1));
    samples.push_back(std::move(sample));
  }
  return samples;
}

inline double SumSamples(const std::string& text, const std::string& name) {
  double sum = 0;
  for (const Sample& s : Samples(text, name)) sum += s.value;
  return sum;
}

}  // namespace gemmaserve::testing
