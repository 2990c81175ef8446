// Communicator: the collectives the sharded model needs, over the ranks of one model replica.
// Implementations: LocalCommunicator (world size 1, every call a no-op or a copy) here;
// Gloo (CPU tensors, TCP) and NCCL (CUDA tensors) elsewhere in parallel/. The model receives one
// by reference at construction and never looks one up globally.
//
// Every rank must issue the same collectives in the same order with matching shapes. Calls are
// blocking and not thread-safe: one thread per rank drives a communicator.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"

namespace gemmaserve::parallel {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // x ← Σ over ranks of x (element-wise). f32.
  virtual void AllReduceSum(Tensor& x) = 0;
  // out [world_size · n, ...] ← the concatenation of every rank's x [n, ...] in rank order.
  virtual void AllGather(const Tensor& x, Tensor& out) = 0;
  // out [n / world_size, ...] ← this rank's slice of Σ over ranks of x [n, ...].
  virtual void ReduceScatter(const Tensor& x, Tensor& out) = 0;
  // Sends send_counts[r] rows of x (consecutively, in rank order) to rank r; receives
  // recv_counts[r] rows from rank r into out, in rank order. Rows are x's trailing dimensions.
  virtual void AllToAllV(const Tensor& x, const std::vector<int64_t>& send_counts, Tensor& out,
                         const std::vector<int64_t>& recv_counts) = 0;
  // x ← root's x on every rank.
  virtual void Broadcast(Tensor& x, int root) = 0;
  virtual void Barrier() = 0;

  // Wall time spent inside collectives since construction or the last reset, milliseconds.
  virtual double communication_ms() const { return 0; }
  virtual void ResetCommunicationMs() {}
};

// The communicator of a single-process run: world size 1.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void AllReduceSum(Tensor&) override {}
  void AllGather(const Tensor& x, Tensor& out) override;
  void ReduceScatter(const Tensor& x, Tensor& out) override;
  void AllToAllV(const Tensor& x, const std::vector<int64_t>& send_counts, Tensor& out,
                 const std::vector<int64_t>& recv_counts) override;
  void Broadcast(Tensor&, int) override {}
  void Barrier() override {}
};

}  // namespace gemmaserve::parallel
