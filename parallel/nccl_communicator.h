// NcclCommunicator: the Communicator of GPU workers, one CUDA device per rank, over NCCL.
// Built only with GEMMASERVE_CUDA.
//
// Bootstrap: rank 0 creates an ncclUniqueId and publishes it through the KeyValueStore (the
// coordinator's rendezvous service); the other ranks wait for it, then every rank joins with
// ncclCommInitRank, which blocks until all of them have.
//
// Semantics: every call is synchronous. The collective runs on the communicator's own stream,
// created blocking with respect to the legacy default stream (so work queued there before the call
// is ordered before it), and the call returns after that stream has drained, so its outputs are
// ready for any stream. Kernels that write inputs on other non-blocking streams must synchronize
// them first.
//
// Errors: Create returns a Status (no CUDA device, a bad ordinal, rank 0's id never published, an
// NCCL init failure). A failed collective CHECK-fails with the rank and NCCL's message: the worker
// exits and the coordinator fails the step (DESIGN.md, "Errors and failure"). NCCL has no timeout
// of its own: a peer that stalls mid-collective stalls this rank too, until the coordinator's step
// timeout gives up on the replica.
//
// Tensors: contiguous, on this communicator's device. AllReduceSum and ReduceScatter take f32;
// AllGather, AllToAllV and Broadcast move bytes and take any dtype.
//
// Ownership: owns the NCCL communicator and the stream. Thread-safety: none; one thread per rank.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"
#include "parallel/key_value_store.h"

// The handle types of nccl.h (ncclComm_t) and cuda_runtime.h (cudaStream_t), declared here so
// that users of this header need neither.
struct ncclComm;
struct CUstream_st;

namespace gemmaserve::parallel {

class NcclCommunicator final : public Communicator {
 public:
  // Joins the group of `world_size` ranks as `rank` on CUDA device `device_ordinal`. `timeout`
  // bounds the wait for rank 0's id in the store; the store must give this group incarnation keys
  // of its own (see GrpcKeyValueStore's namespace).
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(int rank, int world_size,
                                                                  int device_ordinal,
                                                                  KeyValueStore& store,
                                                                  absl::Duration timeout);

  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  void AllReduceSum(Tensor& x) override;
  void AllGather(const Tensor& x, Tensor& out) override;
  void ReduceScatter(const Tensor& x, Tensor& out) override;
  void AllToAllV(const Tensor& x, const std::vector<int64_t>& send_counts, Tensor& out,
                 const std::vector<int64_t>& recv_counts) override;
  void Broadcast(Tensor& x, int root) override;
  void Barrier() override;

  // Wall time spent inside collectives since construction or the last reset, milliseconds.
  double communication_ms() const override { return communication_ms_; }
  void ResetCommunicationMs() override { communication_ms_ = 0; }

 private:
  NcclCommunicator(int rank, int world_size, int device_ordinal, ncclComm* comm,
                   CUstream_st* stream);

  // Makes this rank's device current, runs `enqueue` (which queues NCCL work on stream_), waits
  // for the stream and adds the time to communication_ms_. CHECK-fails naming `name` on error.
  template <typename Fn>
  void Run(const char* name, Fn&& enqueue);
  void CheckOnDevice(const Tensor& t, const char* op) const;

  const int rank_;
  const int world_size_;
  const int device_ordinal_;
  ncclComm* comm_;
  CUstream_st* stream_;
  double communication_ms_ = 0;
  Tensor barrier_scratch_;  // [1] f32 on the device, all-reduced by Barrier
};

}  // namespace gemmaserve::parallel
