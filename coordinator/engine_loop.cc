#include "coordinator/engine_loop.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::coordinator {

namespace pb = internal::v1;

namespace {

double SecondsBetween(absl::Time from, absl::Time to) { return absl::ToDoubleSeconds(to - from); }

}  // namespace

struct EngineLoop::Live {
  Live(Request req, std::shared_ptr<RequestStream> out, const text::Tokenizer* tokenizer,
       text::StopStringMatcher matcher)
      : request(std::move(req)), stream(std::move(out)), stop(std::move(matcher)) {
    // Special tokens keep their text: the API layer parses reasoning and tool calls out of it.
    if (tokenizer != nullptr) detokenizer.emplace(tokenizer, /*skip_special_tokens=*/false);
  }

  Request request;
  std::shared_ptr<RequestStream> stream;
  std::optional<text::StreamingDetokenizer> detokenizer;
  text::StopStringMatcher stop;
  int64_t num_output_tokens = 0;
  bool prompt_logprobs_sent = false;
  absl::Time first_scheduled = absl::InfinitePast();
  absl::Time first_token = absl::InfinitePast();
  absl::Time last_token = absl::InfinitePast();
};

EngineLoop::EngineLoop(EngineOptions options, const text::Tokenizer* tokenizer, StepFunction step,
                       std::function<bool()> ready, EngineObserver* observer)
    : options_(std::move(options)),
      tokenizer_(tokenizer),
      step_(std::move(step)),
      ready_(std::move(ready)),
      observer_(observer),
      eos_(options_.eos_token_ids.begin(), options_.eos_token_ids.end()),
      scheduler_(options_.scheduler) {
  load_ = scheduler_.Load();
}

EngineLoop::~EngineLoop() { Stop(); }

void EngineLoop::Start() {
  thread_ = std::thread([this] { Run(); });
}

void EngineLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool EngineLoop::Drain(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return request_ids_.empty(); };
  if (mu_.AwaitWithTimeout(absl::Condition(&idle), timeout)) return true;
  for (const std::string& id : request_ids_) aborts_.push_back(id);
  return false;
}

absl::StatusOr<std::shared_ptr<RequestStream>> EngineLoop::Submit(Request request) {
  absl::MutexLock lock(&mu_);
  if (draining_ || stopping_) return absl::UnavailableError("the server is draining");
  if (request_ids_.contains(request.request_id)) {
    return absl::AlreadyExistsError(absl::StrCat("request_id ", request.request_id, " is in use"));
  }
  // Checked here as well as in the scheduler so that a client hears of it at once.
  const SchedulerOptions& limits = options_.scheduler;
  const int64_t total = static_cast<int64_t>(request.prompt_ids.size()) + request.max_tokens;
  if (total > limits.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", request.prompt_ids.size(), " tokens) plus max_tokens (", request.max_tokens,
        ") exceeds the maximum context length of ", limits.max_model_len, " tokens"));
  }
  if (load_.waiting_requests + static_cast<int64_t>(inbox_.size()) >= limits.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat("the waiting queue is full (",
                                                     limits.max_waiting, " requests)"));
  }
  auto stream = std::make_shared<RequestStream>();
  request_ids_.insert(request.request_id);
  inbox_.push_back({std::move(request), stream});
  return stream;
}

void EngineLoop::Abort(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  aborts_.push_back(request_id);
}

LoadInfo EngineLoop::Load() const {
  absl::MutexLock lock(&mu_);
  LoadInfo load = load_;
  // Submitted but not yet in the published load: waiting all the same.
  load.waiting_requests += static_cast<int64_t>(inbox_.size()) + num_unpublished_arrivals_;
  return load;
}

bool EngineLoop::Ready() const {
  {
    absl::MutexLock lock(&mu_);
    if (draining_ || stopping_) return false;
  }
  return ready_();
}

void EngineLoop::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      // Idle: sleep until something arrives (or a short while, to notice deadlines).
      if (!scheduler_.HasWork()) {
        auto has_input = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || !inbox_.empty() || !aborts_.empty();
        };
        mu_.AwaitWithTimeout(absl::Condition(&has_input), absl::Milliseconds(50));
      }
    }
    RunOnce();
  }
  // Nothing may wait forever on a stopped engine.
  std::vector<uint64_t> ids;
  for (const auto& [id, live] : live_) ids.push_back(id);
  for (uint64_t id : ids) AbortLive(id, FinishReason::kAbort, "the server stopped");
  DrainInbox();
  PublishLoad();
}

void EngineLoop::RunOnce() {
  DrainInbox();
  AbortExpired();
  if (scheduler_.HasWork()) {
    ScheduledStep step = scheduler_.Schedule();
    if (!step.empty()) {
      // The step's outputs reach clients before it ends: the load they then ask for must already
      // count its sequences and blocks, not the state before they were admitted.
      PublishLoad();
      for (const ScheduledSequence& s : step.sequences) {
        Live& live = *live_.at(s.sequence_id);
        if (live.first_scheduled == absl::InfinitePast()) live.first_scheduled = absl::Now();
      }
      const absl::Time start = absl::Now();
      absl::StatusOr<pb::StepResult> result = step_(step.plan);
      StepReport report;
      report.duration_s = SecondsBetween(start, absl::Now());
      report.num_sequences = static_cast<int64_t>(step.sequences.size());
      int64_t num_prefill = 0;
      for (const ScheduledSequence& s : step.sequences) {
        num_prefill += s.num_tokens > 1 || !s.sample ? 1 : 0;
      }
      report.kind = StepKindOf(num_prefill, report.num_sequences - num_prefill);
      if (result.ok()) {
        report.result = &*result;
        Postprocess(step, *result);
      } else {
        FailStep(step, result.status());
      }
      if (observer_ != nullptr) observer_->OnStep(report);
    }
  }
  PublishLoad();
}

void EngineLoop::DrainInbox() {
  std::vector<Pending> arrivals;
  std::vector<std::string> aborts;
  {
    absl::MutexLock lock(&mu_);
    arrivals.swap(inbox_);
    aborts.swap(aborts_);
    num_unpublished_arrivals_ += static_cast<int64_t>(arrivals.size());
  }
  for (Pending& pending : arrivals) {
    const std::string request_id = pending.request.request_id;
    absl::StatusOr<text::StopStringMatcher> matcher =
        text::StopStringMatcher::Create(pending.request.stop_strings);
    absl::Status status = matcher.status();
    const uint64_t id = next_sequence_id_++;
    if (status.ok()) {
      status = scheduler_.Add(std::make_unique<Sequence>(id, pending.request));
    }
    if (!status.ok()) {
      Event event;
      event.finished = true;
      event.finish_reason = FinishReason::kError;
      event.error = std::string(status.message());
      pending.stream->Push(std::move(event));
      absl::MutexLock lock(&mu_);
      request_ids_.erase(request_id);
      continue;
    }
    live_[id] = std::make_unique<Live>(std::move(pending.request), pending.stream, tokenizer_,
                                       std::move(*matcher));
    sequence_of_request_[request_id] = id;
  }
  for (const std::string& request_id : aborts) {
    auto it = sequence_of_request_.find(request_id);
    if (it != sequence_of_request_.end()) AbortLive(it->second, FinishReason::kAbort, "");
  }
}

void EngineLoop::AbortExpired() {
  const absl::Time now = absl::Now();
  std::vector<uint64_t> expired;
  for (const auto& [id, live] : live_) {
    if (live->request.deadline < now) expired.push_back(id);
  }
  for (uint64_t id : expired) AbortLive(id, FinishReason::kAbort, "deadline exceeded");
}

void EngineLoop::AbortLive(uint64_t sequence_id, FinishReason reason, const std::string& error) {
  auto it = live_.find(sequence_id);
  if (it == live_.end()) return;
  Event event;
  event.error = error;
  Finish(*it->second, reason, std::move(event));
}

void EngineLoop::FailStep(const ScheduledStep& step, const absl::Status& status) {
  spdlog::error("step {} failed: {}", step.plan.step_id(), std::string(status.message()));
  for (const ScheduledSequence& s : step.sequences) {
    AbortLive(s.sequence_id, FinishReason::kError, std::string(status.message()));
  }
}

void EngineLoop::Postprocess(const ScheduledStep& step, const pb::StepResult& result) {
  if (result.sequences_size() != static_cast<int>(step.sequences.size())) {
    FailStep(step, absl::InternalError(absl::StrCat("step ", step.plan.step_id(), " returned ",
                                                    result.sequences_size(), " sequences for ",
                                                    step.sequences.size())));
    return;
  }
  scheduler_.Postprocess(step, result);
  for (size_t i = 0; i < step.sequences.size(); ++i) {
    auto it = live_.find(step.sequences[i].sequence_id);
    if (it == live_.end()) continue;  // aborted meanwhile
    Live& live = *it->second;
    if (!step.sequences[i].sample) continue;
    Event event;
    if (!live.prompt_logprobs_sent && live.request.prompt_logprobs) {
      // The scheduler gathered them over the prefill chunks; sent once, with the first token.
      const Sequence& seq = *scheduler_.Find(step.sequences[i].sequence_id);
      event.prompt_logprobs = seq.prompt_logprobs;
      for (const pb::TopLogprobs& top : seq.prompt_top_logprobs) {
        event.prompt_top_logprobs.emplace_back(top.alternatives().begin(), top.alternatives().end());
      }
    }
    live.prompt_logprobs_sent = true;
    if (ConsumeToken(live, result.sequences(static_cast<int>(i)), event)) continue;
    live.stream->Push(std::move(event));
  }
}

bool EngineLoop::ConsumeToken(Live& live, const pb::SequenceResult& result, Event& event) {
  const int32_t token = result.token_id();
  const absl::Time now = absl::Now();
  if (live.first_token == absl::InfinitePast()) {
    live.first_token = now;
    if (observer_ != nullptr) {
      observer_->OnFirstToken(SecondsBetween(live.request.arrival, now),
                              SecondsBetween(live.request.arrival, live.first_scheduled));
    }
  } else if (observer_ != nullptr) {
    observer_->OnToken(SecondsBetween(live.last_token, now));
  }
  live.last_token = now;
  ++live.num_output_tokens;
  event.token_ids.push_back(token);
  if (live.request.sampling.logprobs()) {
    pb::TokenLogprob chosen;
    chosen.set_token_id(token);
    chosen.set_logprob(result.logprob());
    event.logprobs.push_back(chosen);
  }
  if (live.request.sampling.top_logprobs() > 0) {
    event.top_logprobs.emplace_back(result.top_logprobs().begin(), result.top_logprobs().end());
  }
  const Request& request = live.request;
  const bool eos = !request.ignore_eos && eos_.contains(token);
  const bool stop_id = std::find(request.stop_token_ids.begin(), request.stop_token_ids.end(),
                                 token) != request.stop_token_ids.end();
  if (eos || stop_id) {
    // The stop token's id is reported; its text is not part of the answer.
    event.matched_stop = stop_id ? absl::StrCat(token) : "";
    if (live.detokenizer) event.text = live.stop.Add(live.detokenizer->Finish()).text + live.stop.Finish();
    Finish(live, FinishReason::kStop, std::move(event));
    return true;
  }
  if (live.detokenizer) {
    absl::StatusOr<std::string> delta = live.detokenizer->Add(token);
    text::StopStringMatcher::Output out = live.stop.Add(delta.ok() ? *delta : std::string());
    event.text = std::move(out.text);
    if (out.stopped) {
      event.matched_stop = std::move(out.matched);
      Finish(live, FinishReason::kStop, std::move(event));
      return true;
    }
  }
  if (live.num_output_tokens >= request.max_tokens) {
    if (live.detokenizer) {
      event.text += live.stop.Add(live.detokenizer->Finish()).text;
      event.text += live.stop.Finish();
    }
    Finish(live, FinishReason::kLength, std::move(event));
    return true;
  }
  return false;
}

void EngineLoop::Finish(Live& live, FinishReason reason, Event event) {
  const uint64_t id = sequence_of_request_.at(live.request.request_id);
  Usage& usage = event.usage;
  if (const Sequence* seq = scheduler_.Find(id); seq != nullptr) {
    // After a preemption the latest admission may also have reused generated tokens.
    usage.cached_tokens = std::min<int64_t>(seq->num_cached_tokens, seq->num_prompt_tokens);
  }
  if (reason == FinishReason::kStop || reason == FinishReason::kLength) {
    scheduler_.Finish(id);
  } else {
    scheduler_.Abort(id);
  }
  const absl::Time now = absl::Now();
  event.finished = true;
  event.finish_reason = reason;
  usage.prompt_tokens = static_cast<int64_t>(live.request.prompt_ids.size());
  usage.completion_tokens = live.num_output_tokens;
  usage.queue_ms = live.first_scheduled == absl::InfinitePast()
                       ? 0
                       : absl::ToDoubleMilliseconds(live.first_scheduled - live.request.arrival);
  usage.ttft_ms = live.first_token == absl::InfinitePast()
                      ? 0
                      : absl::ToDoubleMilliseconds(live.first_token - live.request.arrival);
  usage.total_ms = absl::ToDoubleMilliseconds(now - live.request.arrival);
  if (observer_ != nullptr) observer_->OnFinished(usage, reason);
  const std::string request_id = live.request.request_id;
  live.stream->Push(std::move(event));
  live_.erase(id);
  sequence_of_request_.erase(request_id);
  absl::MutexLock lock(&mu_);
  request_ids_.erase(request_id);
}

void EngineLoop::PublishLoad() {
  LoadInfo load = scheduler_.Load();
  if (observer_ != nullptr) observer_->OnLoad(load);
  absl::MutexLock lock(&mu_);
  load_ = load;
  num_unpublished_arrivals_ = 0;
}

}  // namespace gemmaserve::coordinator
