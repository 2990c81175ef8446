// EngineLoop: the coordinator's engine (DESIGN.md step 2–4). One thread owns the Scheduler (and
// through it the BlockManager); API threads only post to its inbox and read per-request
// RequestStreams. Each iteration: drain the inbox (new requests, aborts) → Schedule() → run the
// step on the workers → Postprocess: append tokens, detokenize, check stop conditions, stream
// events, finish sequences → publish load.
//
// Thread-safety: Engine methods may be called from any thread; everything else runs on the loop
// thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/engine.h"
#include "coordinator/metrics.h"
#include "coordinator/scheduler.h"
#include "text/detokenizer.h"
#include "text/stop_conditions.h"
#include "text/tokenizer.h"

namespace gemmaserve::coordinator {

// What the loop needs from a step's executor (WorkerGroup::Step in production).
using StepFunction =
    std::function<absl::StatusOr<internal::v1::StepResult>(const internal::v1::StepPlan&)>;

// Per-step observations for metrics; every field is filled after each step.
struct StepReport {
  StepKind kind = StepKind::kDecode;
  double duration_s = 0;
  int64_t num_sequences = 0;
  const internal::v1::StepResult* result = nullptr;  // null when the step failed
};

// Observes requests and steps (metrics). Called on the loop thread; must be cheap.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void OnStep(const StepReport& report) = 0;
  virtual void OnFirstToken(double ttft_s, double queue_s) = 0;
  virtual void OnToken(double inter_token_s) = 0;
  virtual void OnFinished(const Usage& usage, FinishReason reason) = 0;
  virtual void OnLoad(const LoadInfo& load) = 0;
};

struct EngineOptions {
  SchedulerOptions scheduler;
  std::vector<int32_t> eos_token_ids;  // the model's; not stops under ignore_eos
};

class EngineLoop final : public Engine {
 public:
  // `tokenizer` (may be null: then events carry ids only), `observer` (may be null) and whatever
  // `step` calls must outlive the loop. `ready` reports whether the workers can take steps.
  EngineLoop(EngineOptions options, const text::Tokenizer* tokenizer, StepFunction step,
             std::function<bool()> ready, EngineObserver* observer = nullptr);
  ~EngineLoop() override;

  void Start();
  // Stops taking requests (Submit answers UNAVAILABLE, Ready() false) and waits up to `timeout`
  // for running and waiting requests to finish; aborts what is left. Returns true when all
  // finished in time.
  bool Drain(absl::Duration timeout);
  // Aborts everything and joins the loop thread.
  void Stop();

  // Engine
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(Request request) override;
  void Abort(const std::string& request_id) override;
  LoadInfo Load() const override;
  bool Ready() const override;

 private:
  struct Live;  // the loop's per-request state

  void Run();
  void RunOnce();
  void DrainInbox();
  void AbortExpired();
  void Postprocess(const ScheduledStep& step, const internal::v1::StepResult& result);
  // Handles one sampled token of `live`; true when the sequence finished.
  bool ConsumeToken(Live& live, const internal::v1::SequenceResult& result, Event& event);
  void FailStep(const ScheduledStep& step, const absl::Status& status);
  void Finish(Live& live, FinishReason reason, Event event);
  void AbortLive(uint64_t sequence_id, FinishReason reason, const std::string& error);
  void PublishLoad();

  const EngineOptions options_;
  const text::Tokenizer* tokenizer_;
  const StepFunction step_;
  const std::function<bool()> ready_;
  EngineObserver* observer_;
  absl::flat_hash_set<int32_t> eos_;

  // Loop-thread state.
  Scheduler scheduler_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Live>> live_;
  absl::flat_hash_map<std::string, uint64_t> sequence_of_request_;
  uint64_t next_sequence_id_ = 1;

  // Shared with API threads.
  mutable absl::Mutex mu_;
  struct Pending {
    Request request;
    std::shared_ptr<RequestStream> stream;
  };
  std::vector<Pending> inbox_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> aborts_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> request_ids_ ABSL_GUARDED_BY(mu_);  // live, incl. inbox
  LoadInfo load_ ABSL_GUARDED_BY(mu_);
  // Taken from the inbox since load_ was last published: load_ does not count them yet.
  int64_t num_unpublished_arrivals_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::thread thread_;
};

}  // namespace gemmaserve::coordinator
