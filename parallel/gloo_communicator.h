// GlooCommunicator: the Communicator of CPU workers, over Gloo's TCP transport. Works across
// hosts: every rank binds a TCP device to an address its peers can reach and publishes it through
// a KeyValueStore (the coordinator's rendezvous service), so a worker needs nothing but the
// coordinator's address to join the group.
//
// Errors: Create returns a Status for everything a deployment can get wrong (an unknown host or
// interface, a rank that never shows up, an unreachable peer). Once the group is up, a failed
// collective (a peer died or stalled past the timeout) is fatal: the call CHECK-fails with the
// rank, the collective and Gloo's message, the worker exits and the coordinator fails the step
// (DESIGN.md, "Errors and failure").
//
// Tensors: CPU, contiguous. AllReduceSum and ReduceScatter take f32; AllGather, AllToAllV and
// Broadcast move bytes and take any dtype.
//
// Ownership: owns the Gloo device and context; the store is used by Create only.
// Thread-safety: none; one thread per rank drives a communicator (see Communicator).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"
#include "parallel/key_value_store.h"

namespace gloo {
class Context;
}  // namespace gloo

namespace gemmaserve::parallel {

class GlooCommunicator final : public Communicator {
 public:
  // Joins the group of `world_size` ranks as `rank`. `interface_or_host` is what this rank's TCP
  // device binds to and advertises: a network interface name ("eth0") or a hostname or IP
  // address reachable from every other rank ("127.0.0.1" when all ranks share a host).
  // `timeout` bounds the rendezvous (every rank publishing its address and connecting) and,
  // afterwards, each collective's wait for its peers. The store must give this group incarnation
  // keys of its own (see GrpcKeyValueStore's namespace). Blocks until every rank has joined.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(
      int rank, int world_size, KeyValueStore& store, const std::string& interface_or_host,
      absl::Duration timeout);

  ~GlooCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  void AllReduceSum(Tensor& x) override;
  void AllGather(const Tensor& x, Tensor& out) override;
  // Reduces the whole of x on every rank, then keeps this rank's slice: twice the traffic of a
  // dedicated reduce-scatter, which Gloo's unbound-buffer API does not offer.
  void ReduceScatter(const Tensor& x, Tensor& out) override;
  void AllToAllV(const Tensor& x, const std::vector<int64_t>& send_counts, Tensor& out,
                 const std::vector<int64_t>& recv_counts) override;
  void Broadcast(Tensor& x, int root) override;
  void Barrier() override;

  // Wall time spent inside collectives since construction or the last reset, milliseconds.
  double communication_ms() const override { return communication_ms_; }
  void ResetCommunicationMs() override { communication_ms_ = 0; }

 private:
  GlooCommunicator(int rank, int world_size, std::shared_ptr<gloo::Context> context);

  // Runs one Gloo collective: times it, gives it a fresh tag, and turns any exception Gloo throws
  // into a CHECK failure naming `name` and this rank.
  template <typename Fn>
  void Run(const char* name, Fn&& fn);

  const int rank_;
  const int world_size_;
  std::shared_ptr<gloo::Context> context_;
  uint32_t next_tag_ = 0;  // same sequence on every rank, since every rank issues the same calls
  double communication_ms_ = 0;
  std::vector<float> reduce_scatter_workspace_;  // grows to the largest ReduceScatter input
};

}  // namespace gemmaserve::parallel
