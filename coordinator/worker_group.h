// WorkerGroup: the registered workers of one model replica, seen from the coordinator. It is the
// coordinator's internal gRPC service (gemmaserve.internal.v1.Coordinator): it tells workers the
// cluster layout, collects their registrations and KV capacities, serves the collective
// rendezvous, and holds one Attach stream per rank. Step() sends a plan to every rank and gathers
// the results; rank 0's (sampled tokens) is returned.
//
// Generations (worker.proto): the ranks that registered and attached together are generation G.
// A broken stream, a step that passes its deadline (step_timeout plus step_timeout_per_token per
// token it computes: a stalled worker is found in seconds) or Fail() ends generation G: every
// stream of it is cancelled, its ranks are forgotten, and the replica is not ready until every
// rank has registered and attached for generation G + 1. Workers of G can do neither any more,
// and their rendezvous keys are erased. The KV cache goes with the workers, so the first Step of
// G + 1 whose plan relies on KV computed earlier (num_cached > 0) is refused with UNAVAILABLE: the
// caller recomputes. The failure callback (LocalCluster: relaunch the workers) runs on the thread
// that noticed the failure. healthy() turns false once the replica has not been ready for
// recovery_timeout after a failure, so an orchestrator restarts the coordinator.
//
// Thread-safety: the RPC handlers run on gRPC threads; Step is called from one thread at a time
// (the engine loop); every other method may be called from any thread. A watchdog thread enforces
// the step deadline and the shutdown grace, cancelling streams whose writes or answers hang.
// Everything shared is guarded by mu_.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/step_message_size.h"
#include "gemmaserve/internal/v1/worker.grpc.pb.h"
#include "model/kv_pages.h"
#include "parallel/parallel_layout.h"
#include "parallel/rendezvous_service.h"

namespace gemmaserve::coordinator {

struct ClusterSpec {
  std::string model_dir;
  parallel::ParallelLayout layout;  // ranks, and how the experts are split over them
  int block_size = 16;              // KV slots per block
  int max_tokens_per_step = 8192;
  std::string kv_cache_dtype = "auto";  // --kv-cache-dtype, resolved by each worker
  absl::Duration join_timeout = absl::Seconds(120);  // registration waits this long for all ranks
  // A step's deadline is step_timeout plus step_timeout_per_token for each token it computes; a
  // rank that has not answered by then is taken for stalled and its generation ends.
  absl::Duration step_timeout = absl::Seconds(10);
  absl::Duration step_timeout_per_token = absl::Milliseconds(50);
  // How long the replica may stay not ready after a failure before healthy() turns false.
  absl::Duration recovery_timeout = absl::Seconds(300);
  // Largest StepPlan or StepResult, serialized bytes: the gRPC limit of the step stream on both
  // sides (step_message_size.h). The internal server must be built with it (LocalCluster does).
  int64_t max_message_bytes = kDefaultMaxStepMessageBytes;
};

class WorkerGroup final : public internal::v1::Coordinator::Service {
 public:
  // (the generation that starts now, why the previous one ended)
  using FailureCallback = std::function<void(uint64_t generation, const std::string& reason)>;

  explicit WorkerGroup(ClusterSpec spec);
  ~WorkerGroup() override;

  // Called after each failure that ends a generation (not during Shutdown). Set it before the
  // workers start; it must not call back into the group's RPC handlers' paths synchronously
  // (Fail, ready() and the accessors are fine).
  void SetFailureCallback(FailureCallback on_failure);

  // Waits until every rank has registered and attached. DEADLINE_EXCEEDED naming the missing ranks.
  absl::Status WaitReady(absl::Duration timeout);
  bool ready() const;
  // False once the replica has been not ready for longer than spec.recovery_timeout after a
  // failure (never during start-up or shutdown).
  bool healthy() const;
  uint64_t generation() const;
  // KV pages every rank holds (the minimum of the first generation's capacities, kept for later
  // ones) and their layout; no pages before the first generation has registered.
  model::KvPages kv_pages() const;
  const ClusterSpec& spec() const { return spec_; }

  // Runs one step on every rank. UNAVAILABLE when the replica is not ready, a stream breaks, a
  // rank misses the deadline or the plan relies on KV of an ended generation (the caller must
  // recompute it); INVALID_ARGUMENT when the plan is larger than the message limit or the workers
  // reject it (the replica stays ready).
  absl::StatusOr<internal::v1::StepResult> Step(const internal::v1::StepPlan& plan);
  // Ends the current generation (see the file comment) for `reason`, if `generation` is still the
  // current one (0: whichever is).
  void Fail(const std::string& reason, uint64_t generation = 0);
  // Sends Shutdown to every attached rank and waits up to `grace` for their streams to end, then
  // cancels those left. A Step in flight returns UNAVAILABLE at once. Later calls do nothing.
  void Shutdown(const std::string& reason, absl::Duration grace = absl::Seconds(5));

  // gemmaserve.internal.v1.Coordinator
  grpc::Status GetClusterConfig(grpc::ServerContext* context,
                                const internal::v1::GetClusterConfigRequest* request,
                                internal::v1::ClusterConfig* response) override;
  grpc::Status Register(grpc::ServerContext* context, const internal::v1::RegisterRequest* request,
                        internal::v1::RegisterResponse* response) override;
  grpc::Status Attach(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<internal::v1::CoordinatorMessage, internal::v1::StepResult>* stream)
      override;
  grpc::Status StoreSet(grpc::ServerContext* context, const internal::v1::StoreSetRequest* request,
                        internal::v1::StoreSetResponse* response) override;
  grpc::Status StoreGet(grpc::ServerContext* context, const internal::v1::StoreGetRequest* request,
                        internal::v1::StoreGetResponse* response) override;

 private:
  using Stream = grpc::ServerReaderWriter<internal::v1::CoordinatorMessage, internal::v1::StepResult>;

  struct RankState {
    bool registered = false;
    model::KvPages capacity;  // KV pages it can hold
    std::string host;
    Stream* stream = nullptr;                  // set while its Attach handler runs
    grpc::ServerContext* context = nullptr;    // of that handler, to cancel the stream
    bool has_result = false;
    internal::v1::StepResult result;
  };
  // What a failure leaves to do once mu_ is released.
  struct Failure {
    uint64_t generation = 0;  // 0: nothing failed
    std::string reason;
  };

  bool AllRegistered() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AllAttached() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string MissingRanks(bool attached) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Failure FailLocked(const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CancelStreams() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Report(const Failure& failure);
  // Writes to rank's stream under its write lock; false when the stream is gone.
  bool Send(int rank, const internal::v1::CoordinatorMessage& message);
  // The watchdog thread: ends the generation at the step deadline, cancels at the shutdown grace.
  void Watch();
  std::string Namespace(uint64_t generation) const;

  const ClusterSpec spec_;
  const std::string session_id_;
  parallel::RendezvousService rendezvous_;
  // One per rank: serialises writes against the Attach handler detaching the stream.
  std::vector<std::unique_ptr<absl::Mutex>> write_mu_;
  FailureCallback on_failure_;  // set before any RPC, then only read

  mutable absl::Mutex mu_;
  std::vector<RankState> ranks_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 1;
  model::KvPages kv_pages_ ABSL_GUARDED_BY(mu_);  // fixed by the first generation
  // The generation whose workers hold the KV cache the scheduler's blocks describe.
  uint64_t kv_generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_failure_ ABSL_GUARDED_BY(mu_);
  // When the replica last stopped being ready after a failure; InfiniteFuture while ready.
  absl::Time unready_since_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  uint64_t awaited_step_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time step_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::Time cancel_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();  // shutdown grace
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_watchdog_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watchdog_;
};

}  // namespace gemmaserve::coordinator
