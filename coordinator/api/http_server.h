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
// With API keys (ClientPolicy), every route but /health, /ready and /metrics needs
// "Authorization: Bearer KEY"; without it the answer is 401 in OpenAI's error shape, decided on
// the headers alone (an unauthenticated body is read only up to 64 KiB, to answer cleanly).
// With a certificate and key it serves HTTPS only.
//
// Threading: one io_context run by `num_threads` threads; each connection is a session on its own
// strand, so thousands of open streams cost memory, not threads. Parsing a generation request and
// tokenizing its prompt run on a separate pool of `num_tokenizer_threads`, so a long prompt never
// stalls the event loop (and /health). A generating session hands its RequestStream a notifier
// that posts to the event loop, and drains the stream there; it never blocks. While a response is
// in flight the session keeps a read pending on the socket, so a client that disconnects is
// noticed at once and its request aborted (Engine::Abort).
//
// Bounds: at most `max_connections` open connections; past it, and whenever accept() runs out of
// file descriptors, the connection idle longest (waiting for a request) is closed to make room,
// and with none idle a new connection is closed at once; accept() errors back off (up to 1 s)
// instead of spinning. A client that stops reading while a response is written is disconnected
// after `write_timeout` once its send buffer is full (its request aborted), so it holds neither a
// socket nor output for long.
//
// Errors use the OpenAI shape (api_error.h): 400 naming the field, 401 without a valid key, 413
// for a body over max_body_bytes, 431 for headers over max_header_bytes, 429 when the engine's
// queue is full, 503 (with Retry-After) when it is not ready. Nothing a client sends can crash
// the server; a malformed request only gets its error.
//
// Lifetime: the Engine and ServedModel must outlive the server. Shutdown() (or the destructor)
// stops accepting, ends every open stream with a final event (finish reason abort, then
// [DONE]) before closing its socket, and joins the threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/api/client_auth.h"
#include "coordinator/api/served_model.h"
#include "coordinator/engine.h"

namespace gemmaserve::coordinator::api {

struct HttpServerOptions {
  std::string address = "0.0.0.0";
  int port = 8000;  // 0 = any free port; see HttpServer::port()
  // Event-loop threads. Two keep JSON formatting of one connection from delaying the others.
  int num_threads = 2;
  // Threads that parse generation requests and tokenize their prompts.
  int num_tokenizer_threads = 2;
  // Open connections at most (each costs a file descriptor and a few KiB).
  int max_connections = 2048;
  // Larger request headers get 431 and the connection is closed.
  int64_t max_header_bytes = 16 << 10;
  // Larger request bodies get 413 and the connection is closed.
  int64_t max_body_bytes = int64_t{16} << 20;
  // How long a connection may take to send a request, or idle between keep-alive requests.
  absl::Duration request_timeout = absl::Seconds(60);
  // How long one write of a response may wait for the client to read.
  absl::Duration write_timeout = absl::Seconds(30);
  // The kernel's send buffer per connection (SO_SNDBUF; Linux doubles it). It bounds the output
  // a client that stops reading holds, and how long it takes to notice: without it the buffer
  // grows to tcp_wmem's 4 MiB, minutes of a token stream.
  int send_buffer_bytes = 64 << 10;
  ClientPolicy policy;
  // PEM certificate chain and private key: serve HTTPS. Both empty: plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Body of GET /metrics (Prometheus text format); null = 404.
  std::function<std::string()> metrics;
  // Whether the process should keep running (false: /health answers 503 so that an orchestrator
  // restarts it); null = always.
  std::function<bool()> healthy;
};

class HttpServer {
 public:
  // Binds and starts serving. UNAVAILABLE when the address cannot be bound; the TLS files'
  // errors (INVALID_ARGUMENT when OpenSSL refuses them).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           Engine* engine,
                                                           const ServedModel* model);
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the chosen one when options.port was 0).
  int port() const;
  // Open connections now.
  int num_connections() const;
  // Idempotent; see the file comment. Open streams get `grace` to end: half for the engine's own
  // final events (their requests are aborted), then the rest are ended with a bare abort event.
  void Shutdown(absl::Duration grace = absl::Seconds(2));

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gemmaserve::coordinator::api
