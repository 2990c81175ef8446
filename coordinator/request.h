// The engine's view of a generation request and of what it streams back, independent of the API
// (gRPC or HTTP) it came through. The API layer validates and tokenizes a client request into a
// Request, submits it to the EngineLoop, and reads Events from the request's RequestStream.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gemmaserve/internal/v1/worker.pb.h"

namespace gemmaserve::coordinator {

struct Request {
  std::string request_id;              // unique among live requests
  std::vector<int32_t> prompt_ids;     // already tokenized (chat template applied)
  internal::v1::SamplingParams sampling;  // resolved: unset fields already hold the defaults
  int64_t max_tokens = 16;             // new tokens at most
  std::vector<std::string> stop_strings;
  std::vector<int32_t> stop_token_ids;  // besides the model's EOS ids (unless ignore_eos)
  bool ignore_eos = false;
  bool prompt_logprobs = false;
  absl::Time deadline = absl::InfiniteFuture();  // aborted once the engine's clock passes it
  // The prefix cache's namespace: requests with different salts share no cached blocks.
  std::string cache_salt;
};

enum class FinishReason { kStop, kLength, kAbort, kError };
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "abort", "error"

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens served from the prefix cache
  double queue_ms = 0;        // arrival (Engine::Submit) → first scheduled
  double ttft_ms = 0;         // arrival → first token
  double total_ms = 0;        // arrival → finish
};

// One step's output for one request: new tokens and the text they completed (UTF-8-safe, stop
// strings withheld), or the final event.
struct Event {
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<internal::v1::TokenLogprob> logprobs;                 // one per token, when asked
  std::vector<std::vector<internal::v1::TokenLogprob>> top_logprobs;  // per token, when asked
  // With Request.prompt_logprobs, once, in the first event: one per prompt token after the first,
  // and (with top_logprobs > 0) the alternatives at each of those positions.
  std::vector<internal::v1::TokenLogprob> prompt_logprobs;
  std::vector<std::vector<internal::v1::TokenLogprob>> prompt_top_logprobs;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kStop;
  std::string matched_stop;  // the stop string or id (as text) that ended it
  std::string error;         // finish_reason kError: what went wrong
  // finish_reason kError: its canonical code; UNAVAILABLE when the workers did not come back.
  absl::StatusCode error_code = absl::StatusCode::kInternal;
  Usage usage;               // filled on the final event
};

// The per-request outbox: the engine thread pushes, one API consumer pops. A blocking consumer
// (a gRPC handler thread) waits in Next; an asynchronous one (the HTTP server's event loop) sets a
// notifier, called on the engine thread after each push, and then Drains without blocking.
// Finished after the final event. Thread-safe.
class RequestStream {
 public:
  void Push(Event event) ABSL_LOCKS_EXCLUDED(mu_);
  // Waits up to `timeout` for the next event; nullopt on timeout.
  std::optional<Event> Next(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  // Every event queued now, without waiting.
  std::vector<Event> Drain() ABSL_LOCKS_EXCLUDED(mu_);
  // `notify` must be cheap and must not call back into this stream; it runs after every Push.
  void SetNotifier(std::function<void()> notify) ABSL_LOCKS_EXCLUDED(mu_);
  // The final event has been pushed.
  bool finished() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  std::function<void()> notify_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace gemmaserve::coordinator
