#include "coordinator/api/http_session.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/post.hpp"
#include "coordinator/api/api_error.h"
#include "coordinator/api/generate_params.h"

namespace gemmaserve::coordinator::api {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using Json = nlohmann::json;

std::string PathOf(beast::string_view target) {
  const std::string path(target.data(), target.size());
  return path.substr(0, path.find('?'));
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

HttpSession::HttpSession(net::ip::tcp::socket socket, const HttpContext* context)
    : context_(context), stream_(std::move(socket)) {}

HttpSession::~HttpSession() {
  if (events_ != nullptr && !finished_) context_->engine->Abort(request_id_);
}

void HttpSession::Start() {
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->ReadRequest(); });
}

void HttpSession::ReadRequest() {
  parser_.emplace();
  parser_->body_limit(static_cast<uint64_t>(context_->options->max_body_bytes));
  stream_.expires_after(absl::ToChronoSeconds(context_->options->request_timeout));
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code error, size_t) {
                     self->OnRead(error);
                   });
}

void HttpSession::OnRead(beast::error_code error) {
  if (error == http::error::body_limit) {
    keep_alive_ = false;
    constexpr int kPayloadTooLarge = 413;
    SendJson(kPayloadTooLarge,
             OpenAiErrorJson(absl::InvalidArgumentError(absl::StrCat(
                                 "the request body exceeds ", context_->options->max_body_bytes,
                                 " bytes")),
                             kPayloadTooLarge));
    return;
  }
  if (error) {
    // end_of_stream, timeout, reset, or a request Beast cannot parse: nothing to answer.
    if (error != http::error::end_of_stream && error != beast::error::timeout &&
        error.category() == beast::error_code(http::error::end_of_stream).category()) {
      keep_alive_ = false;
      SendError(absl::InvalidArgumentError(absl::StrCat("malformed HTTP request: ",
                                                        error.message())));
      return;
    }
    Close();
    return;
  }
  stream_.expires_never();
  HttpRequest request = parser_->release();
  keep_alive_ = request.keep_alive();
  Route(request);
}

void HttpSession::Route(const HttpRequest& request) {
  const std::string path = PathOf(request.target());
  const bool get = request.method() == http::verb::get;
  const bool post = request.method() == http::verb::post;
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (!post) return SendError(absl::UnimplementedError(absl::StrCat(path, " takes POST")));
    return StartGeneration(path == "/v1/completions" ? OpenAiEndpoint::kCompletions
                                                     : OpenAiEndpoint::kChatCompletions,
                           request.body());
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
  SendJson(200, {{"object", "list"},
                 {"data", Json::array({{{"id", model.name()},
                                        {"object", "model"},
                                        {"created", model.created_s()},
                                        {"owned_by", "gemmaserve"},
                                        {"max_model_len",
                                         context_->engine->Load().max_model_len}}})}});
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
  // 503s are temporary here (workers starting or being replaced, or a drain): say when to retry.
  if (status == 503) response->set(http::field::retry_after, "5");
  response->keep_alive(keep_alive_);
  response->body() = std::move(body);
  response->prepare_payload();
  Write(std::move(response));
}

void HttpSession::Write(std::shared_ptr<Response> response) {
  http::async_write(stream_, *response,
                    [self = shared_from_this(), response](beast::error_code error, size_t) {
                      if (error) return self->Close();
                      self->ExchangeDone();
                    });
}

void HttpSession::ExchangeDone() {
  exchange_done_ = true;
  if (watching_) {
    // The watch read completes with operation_aborted and calls Continue.
    beast::error_code ignored;
    stream_.socket().cancel(ignored);
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
  if (!keep_alive_) return Close();
  ReadRequest();
}

void HttpSession::Close() {
  if (closed_) return;
  closed_ = true;
  beast::error_code ignored;
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  stream_.socket().close(ignored);
}

}  // namespace gemmaserve::coordinator::api
