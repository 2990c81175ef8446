// FakeEngine: a deterministic Engine for API-layer tests. Each request is answered from a
// background thread with one event per token: the prompt's ids echoed in order (or the scripted
// texts, each as token 40), max_tokens of them, then a final event with finish reason kLength;
// an Abort ends it early with kAbort.
// In hold mode nothing is sent until Abort, which finishes the stream with kAbort (unless aborts
// are ignored: a stalled engine).
// Thread-safe.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/engine.h"
#include "text/tokenizer.h"

namespace gemmaserve::coordinator {

class FakeEngine : public Engine {
 public:
  explicit FakeEngine(const text::Tokenizer* tokenizer) : tokenizer_(tokenizer) {}
  ~FakeEngine() override {
    for (std::thread& thread : threads_) thread.join();
  }

  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(Request request) override {
    absl::MutexLock lock(&mu_);
    if (!submit_status_.ok()) return submit_status_;
    auto stream = std::make_shared<RequestStream>();
    submitted_.push_back(request);
    live_[request.request_id] = stream;
    if (!hold_) {
      threads_.emplace_back([this, request = std::move(request), stream] { Answer(request, *stream); });
    }
    return stream;
  }

  void Abort(const std::string& request_id) override {
    std::shared_ptr<RequestStream> stream;
    {
      absl::MutexLock lock(&mu_);
      aborted_.push_back(request_id);
      if (ignore_abort_) return;
      auto it = live_.find(request_id);
      if (it == live_.end()) return;
      stream = it->second;
      live_.erase(it);
    }
    Event final;
    final.finished = true;
    final.finish_reason = FinishReason::kAbort;
    stream->Push(std::move(final));
  }

  LoadInfo Load() const override {
    LoadInfo load;
    load.max_model_len = 128;
    load.running_requests = 3;
    return load;
  }
  bool Ready() const override {
    absl::MutexLock lock(&mu_);
    return ready_;
  }

  void set_ready(bool ready) {
    absl::MutexLock lock(&mu_);
    ready_ = ready;
  }
  void set_submit_status(absl::Status status) {
    absl::MutexLock lock(&mu_);
    submit_status_ = std::move(status);
  }
  void set_hold(bool hold) {
    absl::MutexLock lock(&mu_);
    hold_ = hold;
  }
  void set_ignore_abort(bool ignore) {
    absl::MutexLock lock(&mu_);
    ignore_abort_ = ignore;
  }
  void set_script(std::vector<std::string> texts) {
    absl::MutexLock lock(&mu_);
    script_ = std::move(texts);
  }
  std::vector<Request> submitted() const {
    absl::MutexLock lock(&mu_);
    return submitted_;
  }
  std::vector<std::string> aborted() const {
    absl::MutexLock lock(&mu_);
    return aborted_;
  }
  size_t num_live() const {
    absl::MutexLock lock(&mu_);
    return live_.size();
  }

 private:
  void Answer(const Request& request, RequestStream& stream) {
    std::vector<std::string> script;
    {
      absl::MutexLock lock(&mu_);
      script = script_;
    }
    const int64_t count = script.empty() ? request.max_tokens : static_cast<int64_t>(script.size());
    for (int64_t i = 0; i < count; ++i) {
      {
        absl::MutexLock lock(&mu_);
        if (!live_.contains(request.request_id)) return;  // aborted
      }
      Event event;
      const int32_t id = script.empty()
                             ? request.prompt_ids[i % request.prompt_ids.size()]
                             : 40;
      event.token_ids = {id};
      event.text = script.empty() ? tokenizer_->Decode({id}).value_or("") : script[i];
      if (request.sampling.logprobs()) {
        internal::v1::TokenLogprob logprob;
        logprob.set_token_id(id);
        logprob.set_logprob(-0.25f);
        event.logprobs = {logprob};
      }
      stream.Push(std::move(event));
      absl::SleepFor(absl::Milliseconds(1));
    }
    Event final;
    final.finished = true;
    final.finish_reason = script.empty() ? FinishReason::kLength : FinishReason::kStop;
    final.usage.prompt_tokens = static_cast<int64_t>(request.prompt_ids.size());
    final.usage.completion_tokens = count;
    {
      absl::MutexLock lock(&mu_);
      live_.erase(request.request_id);
    }
    stream.Push(std::move(final));
  }

  const text::Tokenizer* tokenizer_;
  mutable absl::Mutex mu_;
  bool ready_ ABSL_GUARDED_BY(mu_) = true;
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  bool ignore_abort_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status submit_status_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> script_ ABSL_GUARDED_BY(mu_);
  std::vector<Request> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> aborted_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<RequestStream>> live_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;  // guarded by mu_ while Submit runs; joined at destruction
};

}  // namespace gemmaserve::coordinator
