// StagedCommunicator: collectives over device tensors through a host communicator (Gloo): each
// call copies its device inputs to host memory, runs the host collective and copies the results
// back. It is how ranks that share one GPU, where NCCL cannot run, still form a replica (the
// one-GPU tests of TP=2 and EP=2); GPUs of their own get NCCL. Host tensors pass straight
// through. Every call is synchronous, like the communicator it wraps; the host copies are made per
// call (this path is for tests and small setups, not for speed).
//
// Ownership: owns the host communicator. Thread-safety: none; one thread per rank.
#pragma once

#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace gemmaserve::worker {

class StagedCommunicator final : public parallel::Communicator {
 public:
  explicit StagedCommunicator(std::unique_ptr<parallel::Communicator> host);

  int rank() const override { return host_->rank(); }
  int world_size() const override { return host_->world_size(); }
  void AllReduceSum(Tensor& x) override;
  void AllGather(const Tensor& x, Tensor& out) override;
  void ReduceScatter(const Tensor& x, Tensor& out) override;
  void AllToAllV(const Tensor& x, const std::vector<int64_t>& send_counts, Tensor& out,
                 const std::vector<int64_t>& recv_counts) override;
  void Broadcast(Tensor& x, int root) override;
  void Barrier() override { host_->Barrier(); }
  double communication_ms() const override { return host_->communication_ms(); }
  void ResetCommunicationMs() override { host_->ResetCommunicationMs(); }

 private:
  std::unique_ptr<parallel::Communicator> host_;
};

}  // namespace gemmaserve::worker
