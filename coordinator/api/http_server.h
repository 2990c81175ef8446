// HttpServer: the OpenAI-compatible HTTP API of the coordinator, on Boost.Beast.
//
//   POST /v1/completions, /v1/chat/completions   generation; "stream": true answers with
//                                                Server-Sent Events (chunked), else one JSON body
//   GET  /v1/models                              the served model
//   GET  /health                                 200 while HttpServerOptions::healthy() (or
//                                                always, when unset), else 503
//   GET  /ready                                  200 when Engine::Ready(), else 503
//   GET  /metrics                                HttpServerOptions::metrics' text, when set
//
// Threading: one io_context run by `num_threads` threads; each connection is a session on its own
// strand, so thousands of open streams cost memory, not threads. A generating session hands its
// RequestStream a notifier that posts to the event loop, and drains the stream there; it never
// blocks. While a response is in flight the session keeps a read pending on the socket, so a
// client that disconnects is noticed at once and its request aborted (Engine::Abort).
//
// Errors use the OpenAI shape (api_error.h): 400 naming the field, 413 for a body over
// max_body_bytes, 429 when the engine's queue is full, 503 (with Retry-After) when it is not
// ready. Nothing a client sends can crash the server; a malformed request only gets its error.
//
// Lifetime: the Engine and ServedModel must outlive the server. Shutdown() (or the destructor)
// stops accepting, closes every connection, aborts their requests and joins the threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/api/served_model.h"
#include "coordinator/engine.h"

namespace gemmaserve::coordinator::api {

struct HttpServerOptions {
  std::string address = "0.0.0.0";
  int port = 8000;  // 0 = any free port; see HttpServer::port()
  // Event-loop threads. Two keep JSON formatting of one connection from delaying the others.
  int num_threads = 2;
  // Larger request bodies get 413 and the connection is closed.
  int64_t max_body_bytes = int64_t{16} << 20;
  // How long a connection may take to send a request, or idle between keep-alive requests.
  absl::Duration request_timeout = absl::Seconds(60);
  // Body of GET /metrics (Prometheus text format); null = 404.
  std::function<std::string()> metrics;
  // Whether the process should keep running (false: /health answers 503 so that an orchestrator
  // restarts it); null = always.
  std::function<bool()> healthy;
};

class HttpServer {
 public:
  // Binds and starts serving. UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           Engine* engine,
                                                           const ServedModel* model);
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the chosen one when options.port was 0).
  int port() const;
  // Idempotent; see the file comment.
  void Shutdown();

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gemmaserve::coordinator::api
