#include "coordinator/api/http_server.h"

#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/strand.hpp"
#include "coordinator/api/http_session.h"

namespace gemmaserve::coordinator::api {

namespace net = boost::asio;
using tcp = net::ip::tcp;

class HttpServer::Impl {
 public:
  Impl(HttpServerOptions options, Engine* engine, const ServedModel* model)
      : options_(std::move(options)),
        request_ids_("http"),
        io_context_(std::make_unique<net::io_context>()),
        work_(net::make_work_guard(*io_context_)),
        acceptor_(std::make_unique<tcp::acceptor>(net::make_strand(*io_context_))),
        context_{&options_, engine, model, &request_ids_,
                 std::make_shared<EventPoster>(io_context_.get())} {}

  absl::Status Listen() {
    boost::system::error_code error;
    const net::ip::address address = net::ip::make_address(options_.address, error);
    if (error) {
      return absl::InvalidArgumentError(absl::StrCat("HTTP address \"", options_.address,
                                                     "\": ", error.message()));
    }
    const tcp::endpoint endpoint(address, static_cast<uint16_t>(options_.port));
    acceptor_->open(endpoint.protocol(), error);
    if (!error) acceptor_->set_option(net::socket_base::reuse_address(true), error);
    if (!error) acceptor_->bind(endpoint, error);
    if (!error) acceptor_->listen(net::socket_base::max_listen_connections, error);
    if (error) {
      return absl::UnavailableError(absl::StrCat("HTTP: cannot listen on ", options_.address,
                                                 ":", options_.port, ": ", error.message()));
    }
    port_ = acceptor_->local_endpoint().port();
    Accept();
    for (int i = 0; i < std::max(1, options_.num_threads); ++i) {
      threads_.emplace_back([this] { io_context_->run(); });
    }
    return absl::OkStatus();
  }

  int port() const { return port_; }

  void Shutdown() {
    if (io_context_ == nullptr) return;
    // No engine thread may post into the loop from here on.
    context_.poster->Close();
    work_.reset();
    io_context_->stop();
    for (std::thread& thread : threads_) thread.join();
    threads_.clear();
    // Destroying the loop destroys its pending handlers, hence every session: their sockets
    // close and their unfinished requests are aborted.
    acceptor_.reset();
    io_context_.reset();
  }

  ~Impl() { Shutdown(); }

 private:
  void Accept() {
    acceptor_->async_accept(net::make_strand(*io_context_),
                           [this](boost::system::error_code error, tcp::socket socket) {
                             if (error == net::error::operation_aborted) return;
                             if (!error) {
                               socket.set_option(tcp::no_delay(true), error);
                               std::make_shared<HttpSession>(std::move(socket), &context_)
                                   ->Start();
                             }
                             Accept();
                           });
  }

  HttpServerOptions options_;
  RequestIdGenerator request_ids_;
  std::unique_ptr<net::io_context> io_context_;  // null after Shutdown
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  HttpContext context_;  // sessions point at it
  std::vector<std::thread> threads_;
  int port_ = 0;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                              Engine* engine,
                                                              const ServedModel* model) {
  auto impl = std::make_unique<Impl>(std::move(options), engine, model);
  if (absl::Status status = impl->Listen(); !status.ok()) return status;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() = default;
int HttpServer::port() const { return impl_->port(); }
void HttpServer::Shutdown() { impl_->Shutdown(); }

}  // namespace gemmaserve::coordinator::api
