#include <cstring>

#include "common/check.h"
#include "parallel/communicator.h"

namespace gemmaserve::parallel {
namespace {

void CopyAll(const Tensor& x, Tensor& out) {
  CHECK_EQ(x.nbytes(), out.nbytes()) << x.DebugString() << " -> " << out.DebugString();
  CHECK(x.device().is_cpu() && out.device().is_cpu());
  if (x.raw_data() != out.raw_data()) std::memcpy(out.raw_data(), x.raw_data(), x.nbytes());
}

}  // namespace

void LocalCommunicator::AllGather(const Tensor& x, Tensor& out) { CopyAll(x, out); }

void LocalCommunicator::ReduceScatter(const Tensor& x, Tensor& out) { CopyAll(x, out); }

void LocalCommunicator::AllToAllV(const Tensor& x, const std::vector<int64_t>& send_counts,
                                  Tensor& out, const std::vector<int64_t>& recv_counts) {
  CHECK(send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0]);
  CopyAll(x, out);
}

}  // namespace gemmaserve::parallel
