#include "coordinator/api/http_session.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/post.hpp"
#include "coordinator/api/api_error.h"

namespace gemmaserve::coordinator::api {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using Json = nlohmann::json;

// The body of a request that failed authentication is read only this far, so that the 401 is not
// lost to a reset from unread data; a larger one gets the 401 and the connection closes.
constexpr uint64_t kUnauthenticatedBodyBytes = 64 << 10;

std::string PathOf(beast::string_view target) {
  const std::string path(target.data(), target.size());
  return path.substr(0, path.find('?'));
}

// The probes stay open when API keys are required.
bool IsOpenPath(const std::string& path) {
  return path == "/health" || path == "/ready" || path == "/metrics";
}

std::string PeerOf(const net::ip::tcp::socket& socket) {
  beast::error_code error;
  const net::ip::tcp::endpoint peer = socket.remote_endpoint(error);
  if (error) return "unknown";
  return absl::StrCat(peer.address().is_v6() ? "ipv6:[" : "ipv4:", peer.address().to_string(),
                      peer.address().is_v6() ? "]:" : ":", peer.port());
}

}  // namespace

void EventPoster::Post(std::function<void()> work) {
  absl::MutexLock lock(&mu_);
  if (io_context_ != nullptr) net::post(*io_context_, std::move(work));
}

void EventPoster::Close() {
  absl::MutexLock lock(&mu_);
  io_context_ = nullptr;
}

std::variant<HttpSession::PlainStream, HttpSession::TlsStream> HttpSession::MakeStream(
    net::ip::tcp::socket socket, net::ssl::context* tls) {
  if (tls == nullptr) return PlainStream(std::move(socket));
  return TlsStream(std::move(socket), *tls);
}

HttpSession::HttpSession(net::ip::tcp::socket socket, const HttpContext* context)
    : context_(context), stream_(MakeStream(std::move(socket), context->tls)) {
  client_.peer = PeerOf(Tcp().socket());
}

HttpSession::~HttpSession() {
  if (events_ != nullptr && !finished_) context_->engine->Abort(request_id_);
  context_->connections->Remove(connection_id_);
}

beast::tcp_stream& HttpSession::Tcp() {
  return std::visit([](auto& s) -> beast::tcp_stream& { return beast::get_lowest_layer(s); },
                    stream_);
}

void HttpSession::Start() {
  connection_id_ = context_->connections->Add(weak_from_this());
  net::dispatch(Tcp().get_executor(), [self = shared_from_this()] {
    TlsStream* tls = std::get_if<TlsStream>(&self->stream_);
    if (tls == nullptr) return self->ReadRequest();
    self->context_->connections->MarkIdle(self->connection_id_);
    self->awaiting_request_ = true;
    self->Tcp().expires_after(absl::ToChronoSeconds(self->context_->options->request_timeout));
    tls->async_handshake(net::ssl::stream_base::server, [self](beast::error_code error) {
      if (error) return self->Close();
      self->ReadRequest();
    });
  });
}

void HttpSession::Evict() {
  net::post(Tcp().get_executor(), [self = shared_from_this()] {
    if (self->awaiting_request_) self->Close();
  });
}

void HttpSession::Terminate(bool force) {
  net::post(Tcp().get_executor(), [self = shared_from_this(), force] {
    if (self->closed_) return;
    if (self->awaiting_request_) return self->Close();
    if (self->events_ == nullptr || self->finished_) {
      // Another response is being written (it closes after, as the server is shutting down),
      // or a generation is still being prepared (it will be refused); force ends them.
      if (force) self->Close();
      return;
    }
    if (!force) return self->context_->engine->Abort(self->request_id_);
    Event final;
    final.finished = true;
    final.finish_reason = FinishReason::kAbort;
    final.error = "the server is shutting down";
    self->context_->engine->Abort(self->request_id_);
    self->HandleEvents({std::move(final)});
  });
}

void HttpSession::ReadRequest() {
  const HttpServerOptions& options = *context_->options;
  context_->connections->MarkIdle(connection_id_);
  awaiting_request_ = true;
  unauthenticated_ = absl::OkStatus();
  parser_.emplace();
  parser_->header_limit(
      static_cast<uint32_t>(std::min<int64_t>(options.max_header_bytes, UINT32_MAX)));
  parser_->body_limit(static_cast<uint64_t>(options.max_body_bytes));
  Tcp().expires_after(absl::ToChronoSeconds(options.request_timeout));
  WithStream([&](auto& stream) {
    http::async_read_header(
        stream, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code error, size_t) { self->OnHeader(error); });
  });
}

void HttpSession::OnHeader(beast::error_code error) {
  if (error) return OnReadError(error);
  const std::string path = PathOf(parser_->get().target());
  if (!IsOpenPath(path)) {
    const auto authorization = parser_->get()[http::field::authorization];
    absl::StatusOr<std::string> key_id = context_->options->policy.api_keys.Authenticate(
        std::string_view(authorization.data(), authorization.size()));
    if (key_id.ok()) {
      client_.key_id = *std::move(key_id);
    } else {
      unauthenticated_ = key_id.status();
      parser_->body_limit(std::min<uint64_t>(
          kUnauthenticatedBodyBytes, static_cast<uint64_t>(context_->options->max_body_bytes)));
    }
  }
  WithStream([&](auto& stream) {
    http::async_read(
        stream, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code error, size_t) { self->OnRead(error); });
  });
}

void HttpSession::OnRead(beast::error_code error) {
  if (!unauthenticated_.ok() && (!error || error == http::error::body_limit)) {
    awaiting_request_ = false;
    context_->connections->MarkBusy(connection_id_);
    keep_alive_ = !error && parser_->get().keep_alive();
    return SendError(unauthenticated_);
  }
  if (error) return OnReadError(error);
  awaiting_request_ = false;
  context_->connections->MarkBusy(connection_id_);
  Tcp().expires_never();
  HttpRequest request = parser_->release();
  keep_alive_ = request.keep_alive();
  Route(request);
}

void HttpSession::OnReadError(beast::error_code error) {
  awaiting_request_ = false;
  context_->connections->MarkBusy(connection_id_);
  keep_alive_ = false;
  if (error == http::error::body_limit) {
    constexpr int kPayloadTooLarge = 413;
    return SendJson(kPayloadTooLarge,
                    OpenAiErrorJson(absl::InvalidArgumentError(
                                        absl::StrCat("the request body exceeds ",
                                                     context_->options->max_body_bytes, " bytes")),
                                    kPayloadTooLarge));
  }
  if (error == http::error::header_limit) {
    constexpr int kHeadersTooLarge = 431;
    return SendJson(kHeadersTooLarge,
                    OpenAiErrorJson(absl::InvalidArgumentError(absl::StrCat(
                                        "the request headers exceed ",
                                        context_->options->max_header_bytes, " bytes")),
                                    kHeadersTooLarge));
  }
  // end_of_stream, timeout, reset, or a request Beast cannot parse: nothing to answer.
  if (error != http::error::end_of_stream && error != beast::error::timeout &&
      error.category() == beast::error_code(http::error::end_of_stream).category()) {
    return SendError(
        absl::InvalidArgumentError(absl::StrCat("malformed HTTP request: ", error.message())));
  }
  Close();
}

void HttpSession::Route(HttpRequest& request) {
  const std::string path = PathOf(request.target());
  const bool get = request.method() == http::verb::get;
  const bool post = request.method() == http::verb::post;
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (!post) return SendError(absl::UnimplementedError(absl::StrCat(path, " takes POST")));
    return StartGeneration(
        path == "/v1/completions" ? OpenAiEndpoint::kCompletions : OpenAiEndpoint::kChatCompletions,
        std::move(request.body()));
  }
  const bool known = path == "/health" || path == "/ready" || path == "/v1/models" ||
                     (path == "/metrics" && context_->options->metrics);
  if (!known) return SendError(absl::NotFoundError(absl::StrCat("no route for ", path)));
  if (!get) return SendError(absl::UnimplementedError(absl::StrCat(path, " takes GET")));
  if (path == "/health") {
    if (!context_->options->healthy || context_->options->healthy()) {
      return SendJson(200, {{"status", "ok"}});
    }
    return SendError(absl::UnavailableError("unhealthy: the workers did not come back in time"));
  }
  if (path == "/ready") {
    if (context_->engine->Ready()) return SendJson(200, {{"status", "ready"}});
    return SendError(absl::UnavailableError("not ready: no workers attached, or draining"));
  }
  if (path == "/metrics") {
    return SendText(200, "text/plain; version=0.0.4", context_->options->metrics());
  }
  const ServedModel& model = *context_->model;
  SendJson(200,
           {{"object", "list"},
            {"data", Json::array({{{"id", model.name()},
                                   {"object", "model"},
                                   {"created", model.created_s()},
                                   {"owned_by", "gemmaserve"},
                                   {"max_model_len", context_->engine->Load().max_model_len}}})}});
}

void HttpSession::SendJson(int status, const Json& body) {
  SendText(status, "application/json", DumpJson(body));
}

void HttpSession::SendError(const absl::Status& status) {
  SendJson(HttpStatusOf(status), OpenAiErrorJson(status));
}

void HttpSession::SendText(int status, std::string content_type, std::string body) {
  auto response = std::make_shared<Response>(static_cast<http::status>(status), 11);
  response->set(http::field::server, "gemmaserve");
  response->set(http::field::content_type, content_type);
  if (status == 401) response->set(http::field::www_authenticate, "Bearer");
  // 503s are temporary here (workers starting or being replaced, or a drain): say when to retry.
  if (status == 503) response->set(http::field::retry_after, "5");
  keep_alive_ = keep_alive_ && !context_->shutting_down->load();
  response->keep_alive(keep_alive_);
  response->body() = std::move(body);
  response->prepare_payload();
  Write(std::move(response));
}

void HttpSession::ArmWriteTimer() {
  // Only the write's timer: a watch read pending meanwhile keeps its own (none).
  Tcp().expires_after(absl::ToChronoSeconds(context_->options->write_timeout));
}

void HttpSession::Write(std::shared_ptr<Response> response) {
  ArmWriteTimer();
  WithStream([&](auto& stream) {
    http::async_write(stream, *response,
                      [self = shared_from_this(), response](beast::error_code error, size_t) {
                        if (error) return self->Close();
                        self->ExchangeDone();
                      });
  });
}

void HttpSession::ExchangeDone() {
  exchange_done_ = true;
  if (watching_) {
    // The watch read completes with operation_aborted and calls Continue.
    beast::error_code ignored;
    Tcp().socket().cancel(ignored);
    return;
  }
  Continue();
}

void HttpSession::Continue() {
  events_.reset();
  formatter_.reset();
  header_serializer_.reset();
  header_.reset();
  result_ = GenerationResult();
  pending_.clear();
  inflight_.clear();
  finished_ = streaming_ = writing_ = last_chunk_sent_ = exchange_done_ = false;
  client_.key_id.clear();
  if (!keep_alive_ || context_->shutting_down->load()) return Close();
  ReadRequest();
}

void HttpSession::Close() {
  if (closed_) return;
  closed_ = true;
  awaiting_request_ = false;
  beast::error_code ignored;
  Tcp().socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  Tcp().socket().close(ignored);
}

}  // namespace gemmaserve::coordinator::api
