#include "coordinator/request.h"

namespace gemmaserve::coordinator {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
  }
  return "error";
}

void RequestStream::Push(Event event) {
  std::function<void()> notify;
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = event.finished;
    events_.push_back(std::move(event));
    notify = notify_;
  }
  if (notify) notify();
}

std::optional<Event> RequestStream::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !events_.empty(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) return std::nullopt;
  Event event = std::move(events_.front());
  events_.pop_front();
  return event;
}

std::vector<Event> RequestStream::Drain() {
  absl::MutexLock lock(&mu_);
  std::vector<Event> events(std::make_move_iterator(events_.begin()),
                            std::make_move_iterator(events_.end()));
  events_.clear();
  return events;
}

void RequestStream::SetNotifier(std::function<void()> notify) {
  absl::MutexLock lock(&mu_);
  notify_ = std::move(notify);
}

bool RequestStream::finished() const {
  absl::MutexLock lock(&mu_);
  return finished_;
}

}  // namespace gemmaserve::coordinator
