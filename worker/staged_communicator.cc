#include "worker/staged_communicator.h"

#include <utility>

#include "ops/copy.h"

namespace gemmaserve::worker {
namespace {

// A host tensor of `t`'s dtype and shape: `t` itself when it is in host memory.
Tensor HostBuffer(const Tensor& t) {
  return t.device().is_cpu() ? t : Tensor::Empty(t.dtype(), t.shape());
}

// `host` back into `t` when they are not the same memory.
void CopyBack(const Tensor& host, Tensor& t) {
  if (!t.device().is_cpu()) ops::Copy(host, t);
}

}  // namespace

StagedCommunicator::StagedCommunicator(std::unique_ptr<parallel::Communicator> host)
    : host_(std::move(host)) {}

void StagedCommunicator::AllReduceSum(Tensor& x) {
  Tensor host = ops::ToHost(x);
  host_->AllReduceSum(host);
  CopyBack(host, x);
}

void StagedCommunicator::AllGather(const Tensor& x, Tensor& out) {
  Tensor host_out = HostBuffer(out);
  host_->AllGather(ops::ToHost(x), host_out);
  CopyBack(host_out, out);
}

void StagedCommunicator::ReduceScatter(const Tensor& x, Tensor& out) {
  Tensor host_out = HostBuffer(out);
  host_->ReduceScatter(ops::ToHost(x), host_out);
  CopyBack(host_out, out);
}

void StagedCommunicator::AllToAllV(const Tensor& x, const std::vector<int64_t>& send_counts,
                                   Tensor& out, const std::vector<int64_t>& recv_counts) {
  Tensor host_out = HostBuffer(out);
  host_->AllToAllV(ops::ToHost(x), send_counts, host_out, recv_counts);
  CopyBack(host_out, out);
}

void StagedCommunicator::Broadcast(Tensor& x, int root) {
  Tensor host = ops::ToHost(x);
  host_->Broadcast(host, root);
  CopyBack(host, x);
}

}  // namespace gemmaserve::worker
