#include "worker/metrics_http_server.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "boost/asio/ip/address.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"

namespace gemmaserve::worker {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr std::chrono::seconds kIdleTimeout(10);

// One connection: read a request, answer it, close.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(tcp::socket socket, const std::function<std::string()>& body)
      : stream_(std::move(socket)), body_(body) {}

  void Start() {
    stream_.expires_after(kIdleTimeout);
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code error, size_t) {
                       if (!error) self->Respond();
                     });
  }

 private:
  void Respond() {
    const bool known = request_.target() == "/metrics" || request_.target() == "/health";
    const bool get = request_.method() == http::verb::get;
    response_.version(request_.version());
    response_.keep_alive(false);
    response_.set(http::field::server, "gemmaserve-worker");
    if (known && get) {
      response_.result(http::status::ok);
      response_.set(http::field::content_type, "text/plain; version=0.0.4");
      response_.body() = body_();
    } else {
      response_.result(known ? http::status::method_not_allowed : http::status::not_found);
      response_.set(http::field::content_type, "text/plain");
      response_.body() = known ? "GET only\n" : "not found: GET /metrics or /health\n";
    }
    response_.prepare_payload();
    http::async_write(stream_, response_,
                      [self = shared_from_this()](beast::error_code, size_t) {
                        beast::error_code ignored;
                        self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                      });
  }

  beast::tcp_stream stream_;
  const std::function<std::string()>& body_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
};

}  // namespace

MetricsHttpServer::MetricsHttpServer(std::function<std::string()> body)
    : body_(std::move(body)), acceptor_(io_) {}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& bind_address, int port, std::function<std::string()> body) {
  const std::string where = absl::StrCat(bind_address, ":", port);
  beast::error_code error;
  const asio::ip::address address = asio::ip::make_address(bind_address, error);
  if (error) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker metrics: \"", bind_address, "\" is not an IP address"));
  }
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer(std::move(body)));
  tcp::acceptor& acceptor = server->acceptor_;
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  acceptor.open(endpoint.protocol(), error);
  if (!error) acceptor.set_option(asio::socket_base::reuse_address(true), error);
  if (!error) acceptor.bind(endpoint, error);
  if (!error) acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (!error) server->port_ = acceptor.local_endpoint(error).port();
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("worker metrics: cannot serve on ", where, ": ", error.message()));
  }
  server->Accept();
  server->thread_ = std::thread([raw = server.get()] { raw->io_.run(); });
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  io_.stop();
  if (thread_.joinable()) thread_.join();
}

void MetricsHttpServer::Accept() {
  acceptor_.async_accept([this](beast::error_code error, tcp::socket socket) {
    if (!error) std::make_shared<Exchange>(std::move(socket), body_)->Start();
    if (error != asio::error::operation_aborted) Accept();
  });
}

}  // namespace gemmaserve::worker
