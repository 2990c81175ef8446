// WorkerGroup: the registered workers of one model replica, seen from the coordinator. It is the
// coordinator's internal gRPC service (gemmaserve.internal.v1.Coordinator): it tells workers the
// cluster layout, collects their registrations and KV capacities, serves the collective
// rendezvous, and holds one Attach stream per rank. Step() sends a plan to every rank and gathers
// the results; rank 0's (sampled tokens) is returned.
//
// Failure: a broken stream, a rank missing from a step, or a step that outlives step_timeout
// fails that step with UNAVAILABLE and marks the replica not ready.
//
// Thread-safety: the RPC handlers run on gRPC threads; Step and Shutdown must be called from one
// thread (the engine loop). Everything shared is guarded by mu_.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gemmaserve/internal/v1/worker.grpc.pb.h"
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
  absl::Duration step_timeout = absl::Seconds(600);  // a step answered later fails
};

class WorkerGroup final : public internal::v1::Coordinator::Service {
 public:
  explicit WorkerGroup(ClusterSpec spec);

  // Waits until every rank has registered and attached. DEADLINE_EXCEEDED naming the missing ranks.
  absl::Status WaitReady(absl::Duration timeout);
  bool ready() const;
  // KV blocks per group every rank holds (the minimum of their capacities); 0 before ready.
  int64_t num_blocks() const;
  const ClusterSpec& spec() const { return spec_; }

  // Runs one step on every rank. UNAVAILABLE when a rank is missing, its stream breaks or it does
  // not answer in time; INVALID_ARGUMENT when the workers reject the plan.
  absl::StatusOr<internal::v1::StepResult> Step(const internal::v1::StepPlan& plan);
  // Sends Shutdown to every attached rank and waits (up to `grace`) for their streams to end.
  void Shutdown(const std::string& reason, absl::Duration grace = absl::Seconds(10));

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
    int64_t num_blocks = 0;
    std::string host;
    Stream* stream = nullptr;  // set while the Attach handler runs
    bool has_result = false;
    internal::v1::StepResult result;
  };

  bool AllRegistered() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AllAttached() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string MissingRanks(bool attached) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes to rank's stream under its write lock; false when the stream is gone.
  bool Send(int rank, const internal::v1::CoordinatorMessage& message);

  const ClusterSpec spec_;
  const std::string session_id_;
  parallel::RendezvousService rendezvous_;
  // One per rank: serialises writes against the Attach handler detaching the stream.
  std::vector<std::unique_ptr<absl::Mutex>> write_mu_;

  mutable absl::Mutex mu_;
  std::vector<RankState> ranks_ ABSL_GUARDED_BY(mu_);
  bool broken_ ABSL_GUARDED_BY(mu_) = false;   // a stream broke: not ready until restart
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t awaited_step_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace gemmaserve::coordinator
