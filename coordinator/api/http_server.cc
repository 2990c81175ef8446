#include "coordinator/api/http_server.h"

#include <atomic>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/strand.hpp"
#include "common/secrets.h"
#include "common/status_macros.h"
#include "coordinator/api/http_session.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::coordinator::api {

namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// accept() errors that mean "out of descriptors or memory for now": retrying at once would spin.
bool IsResourceShortage(const boost::system::error_code& error) {
  return error == net::error::no_descriptors || error == net::error::no_buffer_space ||
         error == net::error::no_memory || error.value() == ENFILE;
}

// Pause after a shortage: short when a connection was just closed to make room, else growing.
constexpr absl::Duration kRetryAfterEviction = absl::Milliseconds(5);
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(10);
constexpr absl::Duration kMaxBackoff = absl::Seconds(1);
constexpr absl::Duration kShortageLogInterval = absl::Seconds(10);

absl::StatusOr<std::unique_ptr<net::ssl::context>> MakeTlsContext(
    const HttpServerOptions& options) {
  if (options.tls_cert_file.empty() && options.tls_key_file.empty()) return nullptr;
  ASSIGN_OR_RETURN(const std::string cert, ReadCredentialFile(options.tls_cert_file, "--tls-cert"));
  ASSIGN_OR_RETURN(const std::string key, ReadCredentialFile(options.tls_key_file, "--tls-key"));
  auto context = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
  context->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                       net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                       net::ssl::context::no_tlsv1_1);
  boost::system::error_code error;
  context->use_certificate_chain(net::buffer(cert), error);
  if (error) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert ", options.tls_cert_file, ": ", error.message()));
  }
  context->use_private_key(net::buffer(key), net::ssl::context::pem, error);
  if (error) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key ", options.tls_key_file, ": ", error.message()));
  }
  return context;
}

}  // namespace

class HttpServer::Impl {
 public:
  Impl(HttpServerOptions options, Engine* engine, const ServedModel* model,
       std::unique_ptr<net::ssl::context> tls)
      : options_(std::move(options)),
        io_context_(std::make_unique<net::io_context>()),
        work_(net::make_work_guard(*io_context_)),
        acceptor_(std::make_unique<tcp::acceptor>(net::make_strand(*io_context_))),
        retry_timer_(std::make_unique<net::steady_timer>(acceptor_->get_executor())),
        tokenizer_pool_(static_cast<size_t>(std::max(1, options_.num_tokenizer_threads))),
        tls_(std::move(tls)),
        context_{&options_,     engine,
                 model,         std::make_shared<EventPoster>(io_context_.get()),
                 &connections_, &tokenizer_pool_,
                 tls_.get(),    &shutting_down_} {}

  absl::Status Listen() {
    boost::system::error_code error;
    const net::ip::address address = net::ip::make_address(options_.address, error);
    if (error) {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP address \"", options_.address, "\": ", error.message()));
    }
    const tcp::endpoint endpoint(address, static_cast<uint16_t>(options_.port));
    acceptor_->open(endpoint.protocol(), error);
    if (!error) acceptor_->set_option(net::socket_base::reuse_address(true), error);
    if (!error) acceptor_->bind(endpoint, error);
    if (!error) acceptor_->listen(net::socket_base::max_listen_connections, error);
    if (error) {
      return absl::UnavailableError(absl::StrCat("HTTP: cannot listen on ", options_.address, ":",
                                                 options_.port, ": ", error.message()));
    }
    port_ = acceptor_->local_endpoint().port();
    Accept();
    for (int i = 0; i < std::max(1, options_.num_threads); ++i) {
      threads_.emplace_back([this] { io_context_->run(); });
    }
    return absl::OkStatus();
  }

  int port() const { return port_; }
  int num_connections() const { return connections_.size(); }

  void Shutdown(absl::Duration grace) {
    if (io_context_ == nullptr) return;
    shutting_down_ = true;
    net::post(acceptor_->get_executor(), [this] {
      boost::system::error_code ignored;
      acceptor_->close(ignored);
      retry_timer_->cancel();
    });
    // First the engine's own final events (requests aborted), then bare ones for what is left.
    for (const auto& session : connections_.All()) session->Terminate(/*force=*/false);
    if (!connections_.AwaitEmpty(grace / 2)) {
      for (const auto& session : connections_.All()) session->Terminate(/*force=*/true);
      connections_.AwaitEmpty(grace / 2);
    }
    // Prepared requests post to the loop: the pool ends first.
    tokenizer_pool_.stop();
    tokenizer_pool_.join();
    // No engine thread may post into the loop from here on.
    context_.poster->Close();
    work_.reset();
    io_context_->stop();
    for (std::thread& thread : threads_) thread.join();
    threads_.clear();
    // Destroying the loop destroys its pending handlers, hence every session: their sockets
    // close and their unfinished requests are aborted. What holds its executors goes first.
    retry_timer_.reset();
    acceptor_.reset();
    io_context_.reset();
  }

  ~Impl() { Shutdown(absl::ZeroDuration()); }

 private:
  void Accept() {
    acceptor_->async_accept(net::make_strand(*io_context_),
                            [this](boost::system::error_code error, tcp::socket socket) {
                              OnAccept(error, std::move(socket));
                            });
  }

  // On the acceptor's strand.
  void OnAccept(boost::system::error_code error, tcp::socket socket) {
    if (error == net::error::operation_aborted || !acceptor_->is_open()) return;
    if (IsResourceShortage(error)) {
      // Out of descriptors: make room by closing the connection idle longest, and try again
      // after a pause, never at once (that would spin a core while the shortage lasts).
      const bool evicted = EvictOldestIdle();
      backoff_ = evicted ? kRetryAfterEviction
                         : std::min(kMaxBackoff, std::max(kFirstBackoff, backoff_ * 2));
      if (absl::Now() - last_shortage_log_ > kShortageLogInterval) {
        last_shortage_log_ = absl::Now();
        spdlog::warn("HTTP accept: {}; {}", error.message(),
                     evicted ? "closing the longest-idle connection"
                             : "no idle connection to close, retrying with backoff");
      }
      retry_timer_->expires_after(absl::ToChronoMilliseconds(backoff_));
      retry_timer_->async_wait([this](boost::system::error_code wait_error) {
        if (!wait_error) Accept();
      });
      return;
    }
    backoff_ = absl::ZeroDuration();
    if (!error) Admit(std::move(socket));
    Accept();
  }

  void Admit(tcp::socket socket) {
    if (connections_.size() >= options_.max_connections && !EvictOldestIdle()) {
      // Every connection is busy: this one cannot be served.
      boost::system::error_code ignored;
      socket.close(ignored);
      return;
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    socket.set_option(net::socket_base::send_buffer_size(options_.send_buffer_bytes), ignored);
    std::make_shared<HttpSession>(std::move(socket), &context_)->Start();
  }

  bool EvictOldestIdle() {
    std::shared_ptr<HttpSession> idle = connections_.TakeOldestIdle();
    if (idle == nullptr) return false;
    idle->Evict();
    return true;
  }

  HttpServerOptions options_;
  std::unique_ptr<net::io_context> io_context_;  // null after Shutdown
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::unique_ptr<tcp::acceptor> acceptor_;  // on its own strand
  // Accept retries after a shortage; on the acceptor's strand.
  std::unique_ptr<net::steady_timer> retry_timer_;
  absl::Duration backoff_;                               // on the acceptor's strand
  absl::Time last_shortage_log_ = absl::InfinitePast();  // on the acceptor's strand
  net::thread_pool tokenizer_pool_;
  std::unique_ptr<net::ssl::context> tls_;
  std::atomic<bool> shutting_down_{false};
  ConnectionTable connections_;
  HttpContext context_;  // sessions point at it
  std::vector<std::thread> threads_;
  int port_ = 0;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                              Engine* engine,
                                                              const ServedModel* model) {
  ASSIGN_OR_RETURN(std::unique_ptr<net::ssl::context> tls, MakeTlsContext(options));
  auto impl = std::make_unique<Impl>(std::move(options), engine, model, std::move(tls));
  if (absl::Status status = impl->Listen(); !status.ok()) return status;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() = default;
int HttpServer::port() const { return impl_->port(); }
int HttpServer::num_connections() const { return impl_->num_connections(); }
void HttpServer::Shutdown(absl::Duration grace) { impl_->Shutdown(grace); }

}  // namespace gemmaserve::coordinator::api
