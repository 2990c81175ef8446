// HttpSession's generation path: submit, then stream or gather the engine's events, watching
// the socket for a disconnect meanwhile. See http_session.h.
#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/api/api_error.h"
#include "coordinator/api/generate_params.h"
#include "coordinator/api/http_session.h"

namespace gemmaserve::coordinator::api {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

constexpr size_t kWatchBytes = 4096;
// Bytes a pipelined next request may fill while a response is in flight before the session
// stops watching the socket (it still notices a disconnect at its next write).
constexpr size_t kMaxBufferedWhileBusy = 64 * 1024;

}  // namespace

void HttpSession::StartGeneration(OpenAiEndpoint endpoint, const std::string& body) {
  const ServedModel& model = *context_->model;
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, body, model.name());
  if (!parsed.ok()) return SendError(parsed.status());
  const std::string request_id = context_->request_ids->Next();
  parsed->params.request_id = request_id;
  const bool logprobs = parsed->params.logprobs || parsed->params.top_logprobs > 0;
  absl::StatusOr<Request> request = BuildRequest(std::move(parsed->params), model,
                                                 context_->engine->Load().max_model_len);
  if (!request.ok()) return SendError(request.status());
  std::vector<int32_t> echo_ids = parsed->echo ? request->prompt_ids : std::vector<int32_t>();
  absl::StatusOr<std::shared_ptr<RequestStream>> events =
      context_->engine->Submit(*std::move(request));
  if (!events.ok()) return SendError(events.status());

  events_ = *std::move(events);
  request_id_ = request_id;
  streaming_ = parsed->stream;
  response_context_ = ResponseContext{.request_id = request_id,
                                      .created_s = absl::ToUnixSeconds(absl::Now()),
                                      .model = model.name(),
                                      .endpoint = endpoint,
                                      .logprobs = logprobs,
                                      .include_usage = parsed->include_usage,
                                      .echo = parsed->echo,
                                      .prompt_ids = std::move(echo_ids),
                                      .tokenizer = &model.tokenizer()};
  // The notifier runs on the engine thread: it only posts, and holds the session weakly so a
  // closed connection is not kept alive by the engine.
  std::weak_ptr<HttpSession> weak = weak_from_this();
  auto on_events = [weak] {
    if (std::shared_ptr<HttpSession> self = weak.lock()) {
      net::post(self->stream_.get_executor(), [self] { self->OnEvents(); });
    }
  };
  events_->SetNotifier([poster = context_->poster, on_events] { poster->Post(on_events); });
  // Events pushed before the notifier was set.
  net::post(stream_.get_executor(), [self = shared_from_this()] { self->OnEvents(); });

  if (streaming_) {
    formatter_.emplace(response_context_);
    header_.emplace(http::status::ok, 11);
    header_->set(http::field::server, "gemmaserve");
    header_->set(http::field::content_type, "text/event-stream");
    header_->set(http::field::cache_control, "no-cache");
    header_->keep_alive(keep_alive_);
    header_->chunked(true);
    header_serializer_.emplace(*header_);
    writing_ = true;
    http::async_write_header(stream_, *header_serializer_,
                             [self = shared_from_this()](beast::error_code error, size_t) {
                               self->OnStreamWritten(error);
                             });
  }
  Watch();
}

void HttpSession::OnEvents() {
  if (closed_ || events_ == nullptr || finished_) return;
  for (const Event& event : events_->Drain()) {
    if (streaming_) {
      pending_ += formatter_->Format(event);
    } else {
      result_.Add(event);
    }
    if (event.finished) {
      finished_ = true;
      break;
    }
  }
  if (streaming_) return FlushStream();
  if (!finished_) return;
  if (result_.finish_reason == FinishReason::kError) {
    return SendError(absl::Status(result_.error_code,
                                  result_.error.empty() ? "the request failed" : result_.error));
  }
  SendJson(200, response_context_.endpoint == OpenAiEndpoint::kChatCompletions
                    ? ChatResponseJson(response_context_, result_)
                    : CompletionResponseJson(response_context_, result_));
}

void HttpSession::FlushStream() {
  if (writing_ || closed_) return;
  if (pending_.empty()) {
    if (finished_ && !last_chunk_sent_) FinishStream();
    return;
  }
  writing_ = true;
  inflight_ = std::move(pending_);
  pending_.clear();
  net::async_write(stream_, http::make_chunk(net::buffer(inflight_)),
                   [self = shared_from_this()](beast::error_code error, size_t) {
                     self->OnStreamWritten(error);
                   });
}

void HttpSession::OnStreamWritten(beast::error_code error) {
  writing_ = false;
  if (error) return AbortGeneration();
  FlushStream();
}

void HttpSession::FinishStream() {
  last_chunk_sent_ = true;
  writing_ = true;
  net::async_write(stream_, http::make_chunk_last(),
                   [self = shared_from_this()](beast::error_code error, size_t) {
                     self->writing_ = false;
                     if (error) return self->Close();
                     self->ExchangeDone();
                   });
}

void HttpSession::Watch() {
  if (buffer_.size() >= kMaxBufferedWhileBusy) return;
  watching_ = true;
  stream_.async_read_some(buffer_.prepare(kWatchBytes),
                          [self = shared_from_this()](beast::error_code error, size_t bytes) {
                            self->OnWatch(error, bytes);
                          });
}

void HttpSession::OnWatch(beast::error_code error, size_t bytes) {
  watching_ = false;
  buffer_.commit(bytes);
  if (exchange_done_) {
    // The response is complete; the cancel (or a pipelined request) ended the watch.
    if (error && error != net::error::operation_aborted) return Close();
    return Continue();
  }
  if (error) return AbortGeneration();  // the client went away mid-response
  Watch();
}

void HttpSession::AbortGeneration() {
  if (events_ != nullptr && !finished_) {
    context_->engine->Abort(request_id_);
    finished_ = true;
  }
  Close();
}

}  // namespace gemmaserve::coordinator::api
