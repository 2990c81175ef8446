// One HTTP connection of the HttpServer (http_server.h): reads requests one after another
// (keep-alive), authenticates them on their headers, routes them, and for generation requests
// prepares them on the tokenizer pool, submits to the Engine and writes the response as its
// events arrive. The connection is plain TCP or TLS; both go through WithStream. Internal to api/.
//
// Thread-safety: every member function runs on the session's strand, except Evict and
// Terminate (which post to it) and the notifier given to the RequestStream (which only posts
// through the EventPoster).
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ssl/context.hpp"
#include "boost/asio/thread_pool.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/ssl/ssl_stream.hpp"
#include "coordinator/api/http_connections.h"
#include "coordinator/api/http_server.h"
#include "coordinator/api/openai_response.h"

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
  std::shared_ptr<EventPoster> poster;
  ConnectionTable* connections;
  boost::asio::thread_pool* tokenizer_pool;
  boost::asio::ssl::context* tls;          // null: plain HTTP
  const std::atomic<bool>* shutting_down;  // no more keep-alive, no new generations
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket socket, const HttpContext* context);
  ~HttpSession();  // aborts an unfinished request, leaves the connection table

  // Joins the connection table and starts (with the TLS handshake, when TLS is on).
  void Start();
  // Closes the connection if it is waiting for a request when the strand gets to it.
  void Evict();
  // Shutdown. Without `force`: an idle connection closes, a generation is aborted (its final
  // event comes from the engine and is written as usual), other responses finish. With `force`:
  // a generation still open ends with a bare final abort event (then [DONE]); then it closes.
  void Terminate(bool force);

 private:
  using PlainStream = boost::beast::tcp_stream;
  using TlsStream = boost::beast::ssl_stream<boost::beast::tcp_stream>;
  using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
  using Response = boost::beast::http::response<boost::beast::http::string_body>;
  struct Prepared;  // a generation request, parsed and tokenized off the event loop

  static std::variant<PlainStream, TlsStream> MakeStream(boost::asio::ip::tcp::socket socket,
                                                         boost::asio::ssl::context* tls);
  boost::beast::tcp_stream& Tcp();
  template <class F>
  void WithStream(F&& f) {
    std::visit(std::forward<F>(f), stream_);
  }

  void ReadRequest();
  void OnHeader(boost::beast::error_code error);
  void OnRead(boost::beast::error_code error);
  // Errors of reading a request: closes, or answers 400/413/431 and closes.
  void OnReadError(boost::beast::error_code error);
  void Route(HttpRequest& request);
  void SendJson(int status, const nlohmann::json& body);
  void SendText(int status, std::string content_type, std::string body);
  void SendError(const absl::Status& status);
  void Write(std::shared_ptr<Response> response);
  // The response is written: read the next request, or close.
  void ExchangeDone();
  void Continue();
  void Close();
  void ArmWriteTimer();

  // Generation.
  void StartGeneration(OpenAiEndpoint endpoint, std::string body);
  std::unique_ptr<Prepared> Prepare(OpenAiEndpoint endpoint, const std::string& body) const;
  void Submit(std::unique_ptr<Prepared> prepared);
  void StartStream();
  void OnEvents();
  void HandleEvents(std::vector<Event> events);
  void FlushStream();
  void OnStreamWritten(boost::beast::error_code error);
  void FinishStream();
  // Watches the socket during a generation so a disconnect aborts it.
  void Watch();
  void OnWatch(boost::beast::error_code error, size_t bytes);
  void AbortGeneration();

  const HttpContext* context_;
  std::variant<PlainStream, TlsStream> stream_;
  uint64_t connection_id_ = 0;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  bool keep_alive_ = false;
  bool closed_ = false;
  bool awaiting_request_ = false;  // a request is being read (the connection is idle)
  Client client_;
  absl::Status unauthenticated_;  // the current request's authentication failure, if any

  // The generation in flight, if any.
  bool preparing_ = false;  // on the tokenizer pool
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
