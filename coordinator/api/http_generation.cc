// HttpSession's generation path: prepare (parse and tokenize) on the tokenizer pool, submit, then
// stream or gather the engine's events, watching the socket for a disconnect meanwhile. See
// http_session.h.
#include <utility>

#include "absl/strings/str_cat.h"
#include "boost/asio/post.hpp"
#include "coordinator/api/api_error.h"
#include "coordinator/api/generate_params.h"
#include "coordinator/api/http_session.h"
#include "coordinator/api/request_ids.h"

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

struct HttpSession::Prepared {
  absl::Status status;  // the request's error, if it has one
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  Request request;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;
  bool logprobs = false;
};

void HttpSession::StartGeneration(OpenAiEndpoint endpoint, std::string body) {
  preparing_ = true;
  // Parsing a 16 MiB body or tokenizing a long prompt takes milliseconds: not on the event loop.
  net::post(
      *context_->tokenizer_pool, [self = shared_from_this(), endpoint, body = std::move(body)] {
        std::unique_ptr<Prepared> prepared = self->Prepare(endpoint, body);
        net::post(self->Tcp().get_executor(), [self, prepared = std::move(prepared)]() mutable {
          self->Submit(std::move(prepared));
        });
      });
}

// Runs on the tokenizer pool: reads only what no strand handler changes while preparing_ holds.
std::unique_ptr<HttpSession::Prepared> HttpSession::Prepare(OpenAiEndpoint endpoint,
                                                            const std::string& body) const {
  auto prepared = std::make_unique<Prepared>();
  prepared->endpoint = endpoint;
  const ServedModel& model = *context_->model;
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, body, model.name());
  if (!parsed.ok()) {
    prepared->status = parsed.status();
    return prepared;
  }
  parsed->params.request_id = NewRequestId("http");
  prepared->stream = parsed->stream;
  prepared->include_usage = parsed->include_usage;
  prepared->echo = parsed->echo;
  prepared->logprobs = parsed->params.logprobs || parsed->params.top_logprobs > 0;
  const ClientPolicy& policy = context_->options->policy;
  absl::StatusOr<Request> request = BuildRequest(
      std::move(parsed->params), model, context_->engine->Load().max_model_len, policy.limits);
  if (!request.ok()) {
    prepared->status = request.status();
    return prepared;
  }
  request->cache_salt = policy.CacheSalt(client_);
  prepared->request = *std::move(request);
  return prepared;
}

void HttpSession::Submit(std::unique_ptr<Prepared> prepared) {
  preparing_ = false;
  if (closed_) return;
  if (!prepared->status.ok()) return SendError(prepared->status);
  if (context_->shutting_down->load()) {
    return SendError(absl::UnavailableError("the server is shutting down"));
  }
  const std::string request_id = prepared->request.request_id;
  std::vector<int32_t> echo_ids =
      prepared->echo ? prepared->request.prompt_ids : std::vector<int32_t>();
  absl::StatusOr<std::shared_ptr<RequestStream>> events =
      context_->engine->Submit(std::move(prepared->request));
  if (!events.ok()) return SendError(events.status());

  const ServedModel& model = *context_->model;
  events_ = *std::move(events);
  request_id_ = request_id;
  streaming_ = prepared->stream;
  response_context_ = ResponseContext{.request_id = request_id,
                                      .created_s = absl::ToUnixSeconds(absl::Now()),
                                      .model = model.name(),
                                      .endpoint = prepared->endpoint,
                                      .logprobs = prepared->logprobs,
                                      .include_usage = prepared->include_usage,
                                      .echo = prepared->echo,
                                      .prompt_ids = std::move(echo_ids),
                                      .tokenizer = &model.tokenizer()};
  // The notifier runs on the engine thread: it only posts, and holds the session weakly so a
  // closed connection is not kept alive by the engine.
  std::weak_ptr<HttpSession> weak = weak_from_this();
  auto on_events = [weak] {
    if (std::shared_ptr<HttpSession> self = weak.lock()) {
      net::post(self->Tcp().get_executor(), [self] { self->OnEvents(); });
    }
  };
  events_->SetNotifier([poster = context_->poster, on_events] { poster->Post(on_events); });
  // Events pushed before the notifier was set.
  net::post(Tcp().get_executor(), [self = shared_from_this()] { self->OnEvents(); });
  if (streaming_) StartStream();
  Watch();
}

void HttpSession::StartStream() {
  formatter_.emplace(response_context_);
  header_.emplace(http::status::ok, 11);
  header_->set(http::field::server, "gemmaserve");
  header_->set(http::field::content_type, "text/event-stream");
  header_->set(http::field::cache_control, "no-cache");
  header_->keep_alive(keep_alive_);
  header_->chunked(true);
  header_serializer_.emplace(*header_);
  writing_ = true;
  ArmWriteTimer();
  WithStream([&](auto& stream) {
    http::async_write_header(stream, *header_serializer_,
                             [self = shared_from_this()](beast::error_code error, size_t) {
                               self->OnStreamWritten(error);
                             });
  });
}

void HttpSession::OnEvents() {
  if (closed_ || events_ == nullptr || finished_) return;
  HandleEvents(events_->Drain());
}

void HttpSession::HandleEvents(std::vector<Event> events) {
  for (const Event& event : events) {
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
  ArmWriteTimer();
  WithStream([&](auto& stream) {
    net::async_write(stream, http::make_chunk(net::buffer(inflight_)),
                     [self = shared_from_this()](beast::error_code error, size_t) {
                       self->OnStreamWritten(error);
                     });
  });
}

void HttpSession::OnStreamWritten(beast::error_code error) {
  writing_ = false;
  // A write that timed out (the client stopped reading) or failed ends the generation.
  if (error) return AbortGeneration();
  FlushStream();
}

void HttpSession::FinishStream() {
  last_chunk_sent_ = true;
  writing_ = true;
  ArmWriteTimer();
  WithStream([&](auto& stream) {
    net::async_write(stream, http::make_chunk_last(),
                     [self = shared_from_this()](beast::error_code error, size_t) {
                       self->writing_ = false;
                       if (error) return self->Close();
                       self->ExchangeDone();
                     });
  });
}

void HttpSession::Watch() {
  if (buffer_.size() >= kMaxBufferedWhileBusy) return;
  watching_ = true;
  // No timeout on the watch: a client may wait long for its first token. (A write in flight
  // keeps its own timer; expires_never only resets the read's.)
  Tcp().expires_never();
  WithStream([&](auto& stream) {
    stream.async_read_some(buffer_.prepare(kWatchBytes),
                           [self = shared_from_this()](beast::error_code error, size_t bytes) {
                             self->OnWatch(error, bytes);
                           });
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
