// One HTTP connection of the HttpServer (http_server.h): reads requests one after another
// (keep-alive), routes them, and for generation requests submits to the Engine and writes the
// response as its events arrive. Internal to api/.
//
// Thread-safety: every member function runs on the session's strand, except the notifier given
// to the RequestStream, which only posts through the EventPoster.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "boost/asio/io_context.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "coordinator/api/http_server.h"
#include "coordinator/api/openai_response.h"
#include "coordinator/api/request_ids.h"

namespace gemmaserve::coordinator::api {

// Posts work from any thread (the engine's) into the event loop while the server runs, and drops
// it after Close(), so no thread touches the io_context once the server has begun to shut down.
class EventPoster {
 public:
  explicit EventPoster(boost::asio::io_context* io_context) : io_context_(io_context) {}
  void Post(std::function<void()> work) ABSL_LOCKS_EXCLUDED(mu_);
  void Close() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  boost::asio::io_context* io_context_ ABSL_GUARDED_BY(mu_);  // null once closed
};

// What every session of one server shares; owned by the server.
struct HttpContext {
  const HttpServerOptions* options;
  Engine* engine;
  const ServedModel* model;
  RequestIdGenerator* request_ids;
  std::shared_ptr<EventPoster> poster;
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket socket, const HttpContext* context);
  ~HttpSession();  // aborts an unfinished request

  void Start();

 private:
  using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
  using Response = boost::beast::http::response<boost::beast::http::string_body>;

  void ReadRequest();
  void OnRead(boost::beast::error_code error);
  void Route(const HttpRequest& request);
  void SendJson(int status, const nlohmann::json& body);
  void SendText(int status, std::string content_type, std::string body);
  void SendError(const absl::Status& status);
  void Write(std::shared_ptr<Response> response);
  // The response is written: read the next request, or close.
  void ExchangeDone();
  void Continue();
  void Close();

  // Generation.
  void StartGeneration(OpenAiEndpoint endpoint, const std::string& body);
  void OnEvents();
  void FlushStream();
  void OnStreamWritten(boost::beast::error_code error);
  void FinishStream();
  // Watches the socket during a generation so a disconnect aborts it.
  void Watch();
  void OnWatch(boost::beast::error_code error, size_t bytes);
  void AbortGeneration();

  const HttpContext* context_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  bool keep_alive_ = false;
  bool closed_ = false;

  // The generation in flight, if any.
  std::shared_ptr<RequestStream> events_;
  std::string request_id_;
  bool finished_ = false;  // the final event has been handled
  bool streaming_ = false;
  ResponseContext response_context_;
  std::optional<OpenAiStreamFormatter> formatter_;
  GenerationResult result_;
  // Streaming output: pending_ waits while inflight_ is being written.
  std::optional<boost::beast::http::response_serializer<boost::beast::http::empty_body>>
      header_serializer_;
  std::optional<boost::beast::http::response<boost::beast::http::empty_body>> header_;
  std::string pending_;
  std::string inflight_;
  bool writing_ = false;
  bool last_chunk_sent_ = false;
  bool watching_ = false;
  bool exchange_done_ = false;
};

}  // namespace gemmaserve::coordinator::api
