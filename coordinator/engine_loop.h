// EngineLoop: the coordinator's engine (DESIGN.md step 2–4). One thread owns the Scheduler (and
// through it the BlockManager); API threads only post to its inbox and read per-request
// RequestStreams. Each iteration (RunOnce): drain the inbox (new requests, aborts) and abort what
// is past its deadline → Schedule() → run the step on the workers → Postprocess: the scheduler
// appends the tokens, the loop turns them into text and checks stop conditions → publish the
// events and finish the sequences that ended → record the step and the load.
//
// Worker failures: a step that fails with UNAVAILABLE means the workers lost the KV cache (a
// worker died or stalled and the replica is being formed anew, WorkerGroup). Every running
// sequence then goes back to waiting with its tokens (Scheduler::RecomputeAll), nothing is
// scheduled and Submit answers UNAVAILABLE until `ready` holds again, and then each is recomputed
// from its prompt plus what it generated and continues: its client sees one stream, with no token
// repeated or lost. Requests still live recovery_timeout after the workers were lost fail with
// UNAVAILABLE.
//
// State has one owner per request: the scheduler's Sequence holds the request, its tokens and
// their counts; the loop's RequestOutput holds only what the client sees (its outbox, detokenizer
// and stop-string matcher) and the times its latencies are measured from. Times come from the
// injected Clock.
//
// Thread-safety: Engine methods may be called from any thread; everything else runs on the loop
// thread (or, for a loop that was never started, on the one thread that calls RunOnce).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "coordinator/engine.h"
#include "coordinator/metrics.h"
#include "coordinator/scheduler.h"
#include "text/tokenizer.h"

namespace gemmaserve::coordinator {

// What the loop needs from a step's executor (WorkerGroup::Step in production).
using StepFunction =
    std::function<absl::StatusOr<internal::v1::StepResult>(const internal::v1::StepPlan&)>;

// Per-step observations for metrics; every field is filled after each step.
struct StepReport {
  StepKind kind = StepKind::kDecode;
  absl::Duration duration;
  int64_t num_sequences = 0;
  const internal::v1::StepResult* result = nullptr;  // null when the step failed
};

// Observes requests and steps (metrics). Called on the loop thread; must be cheap.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void OnStep(const StepReport& report) = 0;
  // A sequence's first token, `ttft` after its arrival; it waited `queue` to be first scheduled.
  virtual void OnFirstToken(absl::Duration ttft, absl::Duration queue) = 0;
  // A later token, `inter_token` after the sequence's previous one.
  virtual void OnToken(absl::Duration inter_token) = 0;
  virtual void OnFinished(const Usage& usage, FinishReason reason) = 0;
  virtual void OnLoad(const LoadInfo& load) = 0;
};

struct EngineOptions {
  SchedulerOptions scheduler;
  std::vector<int32_t> eos_token_ids;  // the model's; not stops under ignore_eos
  // How long live requests wait for lost workers to come back before they fail.
  absl::Duration recovery_timeout = absl::Seconds(300);
};

class EngineLoop final : public Engine {
 public:
  // `tokenizer` (may be null: then events carry ids only), `clock`, `observer` (may be null) and
  // whatever `step` calls must outlive the loop. `ready` reports whether the workers can take
  // steps.
  EngineLoop(EngineOptions options, const text::Tokenizer* tokenizer, StepFunction step,
             std::function<bool()> ready, const Clock& clock, EngineObserver* observer = nullptr);
  ~EngineLoop() override;

  // Runs the loop on its own thread: RunOnce while there is work, else waits for the inbox.
  void Start();
  // Stops taking requests (Submit answers UNAVAILABLE, Ready() false) and waits up to `timeout`
  // (wall time) for running and waiting requests to finish; aborts what is left. Returns true
  // when all finished in time.
  bool Drain(absl::Duration timeout);
  // Joins the loop thread, then aborts every request still live or in the inbox.
  void Stop();

  // One iteration, on the calling thread: the loop thread's body. A test that never calls Start
  // may call it instead, to step the engine deterministically (with a ManualClock, no sleeps).
  void RunOnce();

  // Engine
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(Request request) override;
  void Abort(const std::string& request_id) override;
  LoadInfo Load() const override;
  bool Ready() const override;

 private:
  struct RequestOutput;  // the loop's per-request record, beside the scheduler's Sequence
  struct Output;         // one sequence's event from one step

  // Loop thread: waits while there is nothing to do; false once stopping.
  bool AwaitWork();
  // RunOnce's stages, in order.
  void DrainInbox();
  void AbortExpired();
  // True while the workers are not ready (nothing can be scheduled); fails the live requests once
  // they have waited recovery_timeout.
  bool AwaitingWorkers();
  void MarkScheduled(const ScheduledStep& step, absl::Time now);
  std::vector<Output> Postprocess(const ScheduledStep& step, const internal::v1::StepResult& result,
                                  absl::Time now);
  std::vector<Output> FailStep(const ScheduledStep& step, const absl::Status& status);
  void Publish(std::vector<Output> outputs);
  void RecordStep(const ScheduledStep& step, const absl::StatusOr<internal::v1::StepResult>& result,
                  absl::Duration duration);
  void PublishLoad();

  // Helpers.
  struct Pending {  // a submitted request the loop has not taken yet
    Request request;
    std::shared_ptr<RequestStream> stream;
    absl::Time arrival;
  };
  void Admit(Pending pending);
  Output AddToken(const Sequence& seq, RequestOutput& out,
                  const internal::v1::SequenceResult& result, absl::Time now);
  std::optional<FinishReason> AddText(const Sequence& seq, RequestOutput& out, Event& event);
  void ObserveToken(RequestOutput& out, absl::Time now);
  // Ends a live sequence: frees it in the scheduler, pushes `event` as its final one.
  void Finish(uint64_t sequence_id, FinishReason reason, Event event);
  // Finish with an event that carries only `error`; ignores sequences no longer live.
  void AbortSequence(uint64_t sequence_id, FinishReason reason, const std::string& error);

  const EngineOptions options_;
  const text::Tokenizer* tokenizer_;
  const StepFunction step_;
  const std::function<bool()> ready_;
  const Clock& clock_;
  EngineObserver* observer_;
  const absl::flat_hash_set<int32_t> eos_;

  // Loop-thread state.
  Scheduler scheduler_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<RequestOutput>> outputs_;  // by sequence id
  absl::flat_hash_map<std::string, uint64_t> sequence_of_request_;
  uint64_t next_sequence_id_ = 1;
  bool stopped_ = false;  // Stop's clean-up ran
  absl::Time unready_since_ = absl::InfiniteFuture();  // when the workers were last found gone

  // Shared with API threads.
  mutable absl::Mutex mu_;
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
