#include "coordinator/engine_loop.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "text/detokenizer.h"
#include "text/stop_conditions.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::coordinator {

namespace pb = internal::v1;

namespace {

bool Contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Milliseconds from `from` to `to`; 0 when `to` never happened.
double MillisecondsBetween(absl::Time from, absl::Time to) {
  return to == absl::InfinitePast() ? 0 : absl::ToDoubleMilliseconds(to - from);
}

}  // namespace

// The loop's record of one request beside the scheduler's Sequence (which owns the request, its
// tokens and their counts): where its events go, what turns its tokens into text, and the times
// its latencies are measured from.
struct EngineLoop::RequestOutput {
  RequestOutput(std::shared_ptr<RequestStream> out, const text::Tokenizer* tokenizer,
                text::StopStringMatcher matcher, absl::Time arrived)
      : stream(std::move(out)), stop(std::move(matcher)), arrival(arrived) {
    // Special tokens keep their text: the API layer parses reasoning and tool calls out of it.
    if (tokenizer != nullptr) detokenizer.emplace(tokenizer, /*skip_special_tokens=*/false);
  }

  // The text still held back by the detokenizer and the stop-string matcher, at the end.
  std::string FlushText() {
    if (!detokenizer) return "";
    return stop.Add(detokenizer->Finish()).text + stop.Finish();
  }

  std::shared_ptr<RequestStream> stream;
  std::optional<text::StreamingDetokenizer> detokenizer;  // none without a tokenizer: ids only
  text::StopStringMatcher stop;
  absl::Time arrival;                               // Submit
  absl::Time first_scheduled = absl::InfinitePast();
  absl::Time first_token = absl::InfinitePast();
  absl::Time last_token = absl::InfinitePast();
};

struct EngineLoop::Output {
  uint64_t sequence_id = 0;
  Event event;
  std::optional<FinishReason> finish;  // set when this step ended the sequence
};

EngineLoop::EngineLoop(EngineOptions options, const text::Tokenizer* tokenizer,
                       StepFunction step, std::function<bool()> ready, const Clock& clock,
                       EngineObserver* observer)
    : options_(std::move(options)),
      tokenizer_(tokenizer),
      step_(std::move(step)),
      ready_(std::move(ready)),
      clock_(clock),
      observer_(observer),
      eos_(options_.eos_token_ids.begin(), options_.eos_token_ids.end()),
      scheduler_(options_.scheduler) {
  load_ = scheduler_.Load();
}

EngineLoop::~EngineLoop() { Stop(); }

void EngineLoop::Start() {
  thread_ = std::thread([this] {
    while (AwaitWork()) RunOnce();
  });
}

void EngineLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (stopped_) return;
  stopped_ = true;
  // The loop thread has ended; its state is this thread's now. Nothing may wait forever on a
  // stopped engine, including requests still in the inbox.
  DrainInbox();
  std::vector<uint64_t> ids;
  for (const auto& [id, out] : outputs_) ids.push_back(id);
  for (uint64_t id : ids) AbortSequence(id, FinishReason::kAbort, "the server stopped");
  PublishLoad();
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
  const absl::Time arrival = clock_.Now();
  if (!ready_()) {
    return absl::UnavailableError(
        "the workers are not ready (a worker was lost and is being replaced); retry shortly");
  }
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
  inbox_.push_back({std::move(request), stream, arrival});
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

bool EngineLoop::AwaitWork() {
  // While the workers are away the loop polls for their return (and watches the deadlines).
  constexpr absl::Duration kReadyPoll = absl::Milliseconds(20);
  const bool idle = !scheduler_.HasWork();
  const bool blocked = !idle && !ready_();
  absl::MutexLock lock(&mu_);
  auto has_input = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !inbox_.empty() || !aborts_.empty();
  };
  // With no live sequence there is no step to run and no deadline to watch, so only the inbox
  // (or Stop) can give the loop something to do: no timeout is needed.
  if (idle) mu_.Await(absl::Condition(&has_input));
  if (blocked) mu_.AwaitWithTimeout(absl::Condition(&has_input), kReadyPoll);
  return !stopping_;
}

void EngineLoop::RunOnce() {
  DrainInbox();
  AbortExpired();
  if (AwaitingWorkers()) return PublishLoad();
  const ScheduledStep step = scheduler_.Schedule();
  if (!step.empty()) {
    // The step's tokens reach clients before it ends: the load they then ask for must already
    // count its sequences and blocks, not the state before they were admitted.
    PublishLoad();
    const absl::Time start = clock_.Now();
    MarkScheduled(step, start);
    const absl::StatusOr<pb::StepResult> result = step_(step.plan);
    const absl::Time end = clock_.Now();
    Publish(result.ok() ? Postprocess(step, *result, end) : FailStep(step, result.status()));
    RecordStep(step, result, end - start);
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
  for (Pending& pending : arrivals) Admit(std::move(pending));
  for (const std::string& request_id : aborts) {
    auto it = sequence_of_request_.find(request_id);
    if (it != sequence_of_request_.end()) AbortSequence(it->second, FinishReason::kAbort, "");
  }
}

void EngineLoop::Admit(Pending pending) {
  const std::string request_id = pending.request.request_id;
  absl::StatusOr<text::StopStringMatcher> matcher =
      text::StopStringMatcher::Create(pending.request.stop_strings);
  absl::Status status = matcher.status();
  const uint64_t id = next_sequence_id_++;
  if (status.ok()) {
    status = scheduler_.Add(std::make_unique<Sequence>(id, std::move(pending.request)));
  }
  if (!status.ok()) {
    Event event;
    event.finished = true;
    event.finish_reason = FinishReason::kError;
    event.error = std::string(status.message());
    pending.stream->Push(std::move(event));
    absl::MutexLock lock(&mu_);
    request_ids_.erase(request_id);
    return;
  }
  outputs_[id] = std::make_unique<RequestOutput>(std::move(pending.stream), tokenizer_,
                                                 std::move(*matcher), pending.arrival);
  sequence_of_request_[request_id] = id;
}

void EngineLoop::AbortExpired() {
  const absl::Time now = clock_.Now();
  std::vector<uint64_t> expired;
  for (const auto& [id, out] : outputs_) {
    if (scheduler_.Find(id)->request.deadline < now) expired.push_back(id);
  }
  for (uint64_t id : expired) AbortSequence(id, FinishReason::kAbort, "deadline exceeded");
}

bool EngineLoop::AwaitingWorkers() {
  if (ready_()) {
    unready_since_ = absl::InfiniteFuture();
    return false;
  }
  const absl::Time now = clock_.Now();
  unready_since_ = std::min(unready_since_, now);
  if (now - unready_since_ > options_.recovery_timeout && !outputs_.empty()) {
    const std::string error = absl::StrCat("the workers did not come back within ",
                                           absl::FormatDuration(options_.recovery_timeout));
    spdlog::error("{}; failing {} request(s)", error, outputs_.size());
    std::vector<uint64_t> ids;
    for (const auto& [id, out] : outputs_) ids.push_back(id);
    for (uint64_t id : ids) {
      Event event;
      event.error = error;
      event.error_code = absl::StatusCode::kUnavailable;
      Finish(id, FinishReason::kError, std::move(event));
    }
  }
  return true;
}

void EngineLoop::MarkScheduled(const ScheduledStep& step, absl::Time now) {
  for (const ScheduledSequence& s : step.sequences) {
    RequestOutput& out = *outputs_.at(s.sequence_id);
    if (out.first_scheduled == absl::InfinitePast()) out.first_scheduled = now;
  }
}

std::vector<EngineLoop::Output> EngineLoop::Postprocess(const ScheduledStep& step,
                                                        const pb::StepResult& result,
                                                        absl::Time now) {
  if (result.sequences_size() != static_cast<int>(step.sequences.size())) {
    return FailStep(step, absl::InternalError(absl::StrCat(
                              "step ", step.plan.step_id(), " returned ", result.sequences_size(),
                              " sequences for ", step.sequences.size())));
  }
  scheduler_.Postprocess(step, result);
  std::vector<Output> outputs;
  for (size_t i = 0; i < step.sequences.size(); ++i) {
    if (!step.sequences[i].sample) continue;  // mid-prefill: nothing for the client yet
    const uint64_t id = step.sequences[i].sequence_id;
    const pb::SequenceResult& sampled = result.sequences(static_cast<int>(i));
    outputs.push_back(AddToken(*scheduler_.Find(id), *outputs_.at(id), sampled, now));
  }
  return outputs;
}

EngineLoop::Output EngineLoop::AddToken(const Sequence& seq, RequestOutput& out,
                                        const pb::SequenceResult& result, absl::Time now) {
  ObserveToken(out, now);
  const Request& request = seq.request;
  Output output;
  output.sequence_id = seq.id;
  Event& event = output.event;
  if (seq.num_output_tokens() == 1 && request.prompt_logprobs) {
    // The scheduler gathered them over the prefill chunks; sent once, with the first token.
    event.prompt_logprobs = seq.prompt_logprobs;
    for (const pb::TopLogprobs& top : seq.prompt_top_logprobs) {
      event.prompt_top_logprobs.emplace_back(top.alternatives().begin(), top.alternatives().end());
    }
  }
  event.token_ids.push_back(result.token_id());
  if (request.sampling.logprobs()) {
    pb::TokenLogprob chosen;
    chosen.set_token_id(result.token_id());
    chosen.set_logprob(result.logprob());
    event.logprobs.push_back(chosen);
  }
  if (request.sampling.top_logprobs() > 0) {
    event.top_logprobs.emplace_back(result.top_logprobs().begin(), result.top_logprobs().end());
  }
  output.finish = AddText(seq, out, event);
  return output;
}

std::optional<FinishReason> EngineLoop::AddText(const Sequence& seq, RequestOutput& out,
                                                Event& event) {
  const Request& request = seq.request;
  const int32_t token = seq.token_ids.back();
  const bool eos = !request.ignore_eos && eos_.contains(token);
  const bool stop_id = Contains(request.stop_token_ids, token);
  if (eos || stop_id) {
    // The stop token's id is reported; its text is not part of the answer.
    event.matched_stop = stop_id ? absl::StrCat(token) : "";
    event.text = out.FlushText();
    return FinishReason::kStop;
  }
  if (out.detokenizer) {
    absl::StatusOr<std::string> delta = out.detokenizer->Add(token);
    text::StopStringMatcher::Output checked = out.stop.Add(delta.ok() ? *delta : std::string());
    event.text = std::move(checked.text);
    if (checked.stopped) {
      event.matched_stop = std::move(checked.matched);
      return FinishReason::kStop;
    }
  }
  if (seq.num_output_tokens() >= request.max_tokens) {
    event.text += out.FlushText();
    return FinishReason::kLength;
  }
  return std::nullopt;
}

void EngineLoop::ObserveToken(RequestOutput& out, absl::Time now) {
  const bool first = out.first_token == absl::InfinitePast();
  if (observer_ != nullptr) {
    if (first) {
      observer_->OnFirstToken(now - out.arrival, out.first_scheduled - out.arrival);
    } else {
      observer_->OnToken(now - out.last_token);
    }
  }
  if (first) out.first_token = now;
  out.last_token = now;
}

std::vector<EngineLoop::Output> EngineLoop::FailStep(const ScheduledStep& step,
                                                     const absl::Status& status) {
  if (absl::IsUnavailable(status)) {
    unready_since_ = std::min(unready_since_, clock_.Now());
    const int64_t num_recomputed = scheduler_.RecomputeAll();
    spdlog::warn("step {} failed: {}; its {} running request(s) will be recomputed once the "
                 "workers are back",
                 step.plan.step_id(), std::string(status.message()), num_recomputed);
    return {};
  }
  spdlog::error("step {} failed: {}", step.plan.step_id(), std::string(status.message()));
  std::vector<Output> outputs(step.sequences.size());
  for (size_t i = 0; i < step.sequences.size(); ++i) {
    outputs[i].sequence_id = step.sequences[i].sequence_id;
    outputs[i].event.error = std::string(status.message());
    outputs[i].finish = FinishReason::kError;
  }
  return outputs;
}

void EngineLoop::Publish(std::vector<Output> outputs) {
  for (Output& output : outputs) {
    if (output.finish) {
      Finish(output.sequence_id, *output.finish, std::move(output.event));
    } else {
      outputs_.at(output.sequence_id)->stream->Push(std::move(output.event));
    }
  }
}

void EngineLoop::RecordStep(const ScheduledStep& step,
                            const absl::StatusOr<pb::StepResult>& result, absl::Duration duration) {
  if (observer_ == nullptr) return;
  StepReport report;
  report.duration = duration;
  report.num_sequences = static_cast<int64_t>(step.sequences.size());
  const int64_t num_prefill = std::count_if(
      step.sequences.begin(), step.sequences.end(),
      [](const ScheduledSequence& s) { return s.num_tokens > 1 || !s.sample; });
  report.kind = StepKindOf(num_prefill, report.num_sequences - num_prefill);
  report.result = result.ok() ? &*result : nullptr;
  observer_->OnStep(report);
}

void EngineLoop::AbortSequence(uint64_t sequence_id, FinishReason reason,
                               const std::string& error) {
  if (!outputs_.contains(sequence_id)) return;
  Event event;
  event.error = error;
  Finish(sequence_id, reason, std::move(event));
}

void EngineLoop::Finish(uint64_t sequence_id, FinishReason reason, Event event) {
  const absl::Time now = clock_.Now();
  std::unique_ptr<RequestOutput> out = std::move(outputs_.extract(sequence_id).mapped());
  const Sequence& seq = *scheduler_.Find(sequence_id);
  Usage& usage = event.usage;
  usage.prompt_tokens = seq.num_prompt_tokens;
  usage.completion_tokens = seq.num_output_tokens();
  // After a preemption the latest admission may also have reused generated tokens.
  usage.cached_tokens = std::min(seq.num_cached_tokens, seq.num_prompt_tokens);
  usage.queue_ms = MillisecondsBetween(out->arrival, out->first_scheduled);
  usage.ttft_ms = MillisecondsBetween(out->arrival, out->first_token);
  usage.total_ms = absl::ToDoubleMilliseconds(now - out->arrival);
  const std::string request_id = seq.request.request_id;
  if (reason == FinishReason::kStop || reason == FinishReason::kLength) {
    scheduler_.Finish(sequence_id);
  } else {
    scheduler_.Abort(sequence_id);
  }
  event.finished = true;
  event.finish_reason = reason;
  if (observer_ != nullptr) observer_->OnFinished(usage, reason);
  out->stream->Push(std::move(event));
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
