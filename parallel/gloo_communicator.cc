#include "parallel/gloo_communicator.h"

#include <net/if.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <numeric>
#include <utility>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoallv.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"

namespace gemmaserve::parallel {
namespace {

// Gloo's own keys ("rank_0", "0", ...) live under this prefix of the store.
constexpr char kKeyPrefix[] = "gloo/";

std::chrono::milliseconds ToChrono(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

// Runs `fn`, turning whatever it throws into a Status: Gloo reports every failure by exception.
template <typename Fn>
absl::Status CallGloo(Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const gloo::IoException& e) {
    return absl::UnavailableError(e.what());
  } catch (const gloo::EnforceNotMet& e) {
    return absl::InternalError(e.what());
  } catch (const std::exception& e) {
    return absl::UnknownError(e.what());
  }
}

// gloo::rendezvous::Store over our KeyValueStore, for Create only.
class StoreAdapter final : public gloo::rendezvous::Store {
 public:
  StoreAdapter(KeyValueStore& store, absl::Duration timeout) : store_(store), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    ThrowIfError(store_.Set(kKeyPrefix + key, std::string(data.begin(), data.end())));
  }

  // Gloo calls get() on keys it has not waited for, so get() waits too.
  std::vector<char> get(const std::string& key) override {
    absl::StatusOr<std::vector<std::string>> values = store_.Get({kKeyPrefix + key}, timeout_);
    ThrowIfError(values.status());
    return std::vector<char>(values->front().begin(), values->front().end());
  }

  void wait(const std::vector<std::string>& keys) override { wait(keys, ToChrono(timeout_)); }

  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    std::vector<std::string> prefixed;
    prefixed.reserve(keys.size());
    for (const std::string& key : keys) prefixed.push_back(kKeyPrefix + key);
    ThrowIfError(store_.Get(prefixed, absl::FromChrono(timeout)).status());
  }

  // The first store failure, with its own code (DEADLINE_EXCEEDED, UNAVAILABLE, ...).
  const absl::Status& error() const { return error_; }

 private:
  // Gloo's Store interface can report failure only by throwing; the exception unwinds Gloo back
  // to Create, which returns error_.
  void ThrowIfError(const absl::Status& status) {
    if (status.ok()) return;
    if (error_.ok()) error_ = status;
    throw gloo::IoException(std::string(status.message()));
  }

  KeyValueStore& store_;
  const absl::Duration timeout_;
  absl::Status error_;
};

// A TCP device bound to a network interface (when `interface_or_host` names one) or to the
// address a hostname resolves to.
absl::StatusOr<std::shared_ptr<gloo::transport::Device>> CreateTcpDevice(
    const std::string& interface_or_host) {
  gloo::transport::tcp::attr attr;
  if (if_nametoindex(interface_or_host.c_str()) != 0) {
    attr.iface = interface_or_host;
  } else {
    attr.hostname = interface_or_host;
  }
  std::shared_ptr<gloo::transport::Device> device;
  const absl::Status status =
      CallGloo([&] { device = gloo::transport::tcp::CreateDevice(attr); });
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot bind a Gloo TCP device to '",
                                                   interface_or_host, "': ", status.message()));
  }
  return device;
}

void SumF32(void* out, const void* a, const void* b, size_t n) {
  float* o = static_cast<float*>(out);
  const float* x = static_cast<const float*>(a);
  const float* y = static_cast<const float*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = x[i] + y[i];
}

void CheckCpu(const Tensor& t, const char* op) {
  CHECK(t.device().is_cpu()) << op << ": GlooCommunicator takes CPU tensors, got "
                             << t.DebugString();
}

void CheckF32(const Tensor& t, const char* op) {
  CheckCpu(t, op);
  CHECK(t.dtype() == DType::kF32) << op << ": f32 only, got " << t.DebugString();
}

// Bytes of one row: the product of the trailing dimensions times the element size.
size_t RowBytes(const Tensor& t) {
  CHECK_GE(t.rank(), 1) << t.DebugString();
  const Shape trailing(t.shape().begin() + 1, t.shape().end());
  return static_cast<size_t>(NumElements(trailing)) * DTypeSize(t.dtype());
}

}  // namespace

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    int rank, int world_size, KeyValueStore& store, const std::string& interface_or_host,
    absl::Duration timeout) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("Gloo: rank ", rank, " out of range for world size ", world_size));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<gloo::transport::Device> device,
                   CreateTcpDevice(interface_or_host));
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, world_size);
  context->setTimeout(ToChrono(timeout));
  StoreAdapter adapter(store, timeout);
  const absl::Status status = CallGloo([&] { context->connectFullMesh(adapter, device); });
  const std::string where = absl::StrCat("Gloo rank ", rank, " of ", world_size, " on ",
                                         interface_or_host, " (", device->str(), ")");
  if (!adapter.error().ok()) {
    return absl::Status(adapter.error().code(),
                        absl::StrCat(where, ": rendezvous: ", adapter.error().message()));
  }
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat(where, ": connecting to its peers: ", status.message()));
  }
  return std::unique_ptr<GlooCommunicator>(
      new GlooCommunicator(rank, world_size, std::move(context)));
}

GlooCommunicator::GlooCommunicator(int rank, int world_size,
                                   std::shared_ptr<gloo::Context> context)
    : rank_(rank), world_size_(world_size), context_(std::move(context)) {}

GlooCommunicator::~GlooCommunicator() = default;

template <typename Fn>
void GlooCommunicator::Run(const char* name, Fn&& fn) {
  const uint32_t tag = next_tag_++;
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = CallGloo([&] { fn(tag); });
  CHECK(status.ok()) << "Gloo " << name << " failed on rank " << rank_ << " of " << world_size_
                     << " (a peer died or stalled past the timeout): " << status;
  communication_ms_ +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

void GlooCommunicator::AllReduceSum(Tensor& x) {
  CheckF32(x, "AllReduceSum");
  if (x.numel() == 0) return;
  Run("AllReduceSum", [&](uint32_t tag) {
    gloo::AllreduceOptions options(context_);
    options.setOutput(x.data<float>(), static_cast<size_t>(x.numel()));
    options.setReduceFunction(&SumF32);
    options.setTag(tag);
    gloo::allreduce(options);
  });
}

void GlooCommunicator::AllGather(const Tensor& x, Tensor& out) {
  CheckCpu(x, "AllGather");
  CheckCpu(out, "AllGather");
  CHECK(x.dtype() == out.dtype() && x.rank() >= 1 && out.rank() == x.rank() &&
        out.dim(0) == world_size_ * x.dim(0) && out.numel() == world_size_ * x.numel())
      << "AllGather: " << x.DebugString() << " -> " << out.DebugString() << " over "
      << world_size_ << " ranks";
  if (x.nbytes() == 0) return;
  Run("AllGather", [&](uint32_t tag) {
    gloo::AllgatherOptions options(context_);
    options.setInput(x.data<uint8_t>(), x.nbytes());
    options.setOutput(out.data<uint8_t>(), out.nbytes());
    options.setTag(tag);
    gloo::allgather(options);
  });
}

void GlooCommunicator::ReduceScatter(const Tensor& x, Tensor& out) {
  CheckF32(x, "ReduceScatter");
  CheckF32(out, "ReduceScatter");
  CHECK(x.rank() >= 1 && out.rank() == x.rank() && out.dim(0) * world_size_ == x.dim(0) &&
        out.numel() * world_size_ == x.numel())
      << "ReduceScatter: " << x.DebugString() << " -> " << out.DebugString() << " over "
      << world_size_ << " ranks";
  if (x.numel() == 0) return;
  const size_t n = static_cast<size_t>(x.numel());
  const size_t slice = static_cast<size_t>(out.numel());
  if (reduce_scatter_workspace_.size() < n) reduce_scatter_workspace_.resize(n);
  float* sum = reduce_scatter_workspace_.data();
  std::memcpy(sum, x.raw_data(), x.nbytes());
  Run("ReduceScatter", [&](uint32_t tag) {
    gloo::AllreduceOptions options(context_);
    options.setOutput(sum, n);
    options.setReduceFunction(&SumF32);
    options.setTag(tag);
    gloo::allreduce(options);
  });
  std::memcpy(out.raw_data(), sum + rank_ * slice, slice * sizeof(float));
}

void GlooCommunicator::AllToAllV(const Tensor& x, const std::vector<int64_t>& send_counts,
                                 Tensor& out, const std::vector<int64_t>& recv_counts) {
  CheckCpu(x, "AllToAllV");
  CheckCpu(out, "AllToAllV");
  CHECK(static_cast<int>(send_counts.size()) == world_size_ &&
        static_cast<int>(recv_counts.size()) == world_size_)
      << "AllToAllV: " << send_counts.size() << " send and " << recv_counts.size()
      << " receive counts for " << world_size_ << " ranks";
  const size_t row_bytes = RowBytes(x);
  CHECK(x.dtype() == out.dtype() && out.rank() == x.rank() && RowBytes(out) == row_bytes)
      << "AllToAllV: rows of " << x.DebugString() << " and " << out.DebugString() << " differ";
  std::vector<int64_t> send_bytes(world_size_), recv_bytes(world_size_);
  for (int r = 0; r < world_size_; ++r) {
    CHECK(send_counts[r] >= 0 && recv_counts[r] >= 0)
        << "AllToAllV: negative count for rank " << r;
    send_bytes[r] = send_counts[r] * static_cast<int64_t>(row_bytes);
    recv_bytes[r] = recv_counts[r] * static_cast<int64_t>(row_bytes);
  }
  CHECK_EQ(std::accumulate(send_counts.begin(), send_counts.end(), int64_t{0}), x.dim(0))
      << "AllToAllV: send counts do not add up to the rows of " << x.DebugString();
  CHECK_EQ(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}), out.dim(0))
      << "AllToAllV: receive counts do not add up to the rows of " << out.DebugString();
  // Gloo wants a buffer pointer even when this rank sends or receives nothing.
  uint8_t empty = 0;
  uint8_t* in_ptr = x.nbytes() == 0 ? &empty : x.data<uint8_t>();
  uint8_t* out_ptr = out.nbytes() == 0 ? &empty : out.data<uint8_t>();
  Run("AllToAllV", [&](uint32_t tag) {
    gloo::AlltoallvOptions options(context_);
    options.setInput(in_ptr, send_bytes);
    options.setOutput(out_ptr, recv_bytes);
    options.setTag(tag);
    gloo::alltoallv(options);
  });
}

void GlooCommunicator::Broadcast(Tensor& x, int root) {
  CheckCpu(x, "Broadcast");
  CHECK(root >= 0 && root < world_size_) << "Broadcast: root " << root << " of " << world_size_;
  if (x.nbytes() == 0) return;
  Run("Broadcast", [&](uint32_t tag) {
    gloo::BroadcastOptions options(context_);
    options.setOutput(x.data<uint8_t>(), x.nbytes());
    options.setRoot(root);
    options.setTag(tag);
    gloo::broadcast(options);
  });
}

void GlooCommunicator::Barrier() {
  Run("Barrier", [&](uint32_t tag) {
    gloo::BarrierOptions options(context_);
    options.setTag(tag);
    gloo::barrier(options);
  });
}

}  // namespace gemmaserve::parallel
