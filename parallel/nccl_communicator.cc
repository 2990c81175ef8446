#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"

namespace gemmaserve::parallel {
namespace {

// Rank 0's ncclUniqueId lives under this key of the store.
constexpr char kUniqueIdKey[] = "nccl/unique_id";

absl::Status CudaStatus(cudaError_t error, const std::string& what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

absl::Status CheckDevice(int rank, int device_ordinal) {
  int num_devices = 0;
  RETURN_IF_ERROR(CudaStatus(cudaGetDeviceCount(&num_devices),
                             absl::StrCat("NCCL rank ", rank, ": no CUDA device")));
  if (device_ordinal < 0 || device_ordinal >= num_devices) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank, ": device cuda:",
                                                   device_ordinal, " of ", num_devices));
  }
  return CudaStatus(cudaSetDevice(device_ordinal),
                    absl::StrCat("NCCL rank ", rank, ": cudaSetDevice(", device_ordinal, ")"));
}

// Rank 0 creates the group's id and publishes it; every other rank waits for it.
absl::StatusOr<ncclUniqueId> ExchangeUniqueId(int rank, KeyValueStore& store,
                                              absl::Duration timeout) {
  ncclUniqueId id;
  if (rank == 0) {
    const ncclResult_t result = ncclGetUniqueId(&id);
    if (result != ncclSuccess) {
      return absl::UnavailableError(
          absl::StrCat("NCCL rank 0: ncclGetUniqueId: ", ncclGetErrorString(result)));
    }
    RETURN_IF_ERROR(store.Set(kUniqueIdKey, std::string(id.internal, sizeof(id.internal))));
    return id;
  }
  ASSIGN_OR_RETURN(std::vector<std::string> values, store.Get({kUniqueIdKey}, timeout));
  if (values[0].size() != sizeof(id.internal)) {
    return absl::DataLossError(absl::StrCat("NCCL rank ", rank, ": key ", kUniqueIdKey, " holds ",
                                            values[0].size(), " bytes, expected ",
                                            sizeof(id.internal)));
  }
  std::memcpy(id.internal, values[0].data(), sizeof(id.internal));
  return id;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    int rank, int world_size, int device_ordinal, KeyValueStore& store, absl::Duration timeout) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL: rank ", rank, " out of range for world size ", world_size));
  }
  RETURN_IF_ERROR(CheckDevice(rank, device_ordinal));
  ASSIGN_OR_RETURN(const ncclUniqueId id, ExchangeUniqueId(rank, store, timeout));
  ncclComm_t comm = nullptr;
  const ncclResult_t result = ncclCommInitRank(&comm, world_size, id, rank);
  if (result != ncclSuccess) {
    return absl::UnavailableError(absl::StrCat("NCCL rank ", rank, " of ", world_size,
                                               ": ncclCommInitRank: ", ncclGetErrorString(result)));
  }
  cudaStream_t stream = nullptr;
  const absl::Status stream_status = CudaStatus(
      cudaStreamCreate(&stream), absl::StrCat("NCCL rank ", rank, ": cudaStreamCreate"));
  if (!stream_status.ok()) {
    ncclCommDestroy(comm);
    return stream_status;
  }
  return std::unique_ptr<NcclCommunicator>(
      new NcclCommunicator(rank, world_size, device_ordinal, comm, stream));
}

NcclCommunicator::NcclCommunicator(int rank, int world_size, int device_ordinal, ncclComm* comm,
                                   CUstream_st* stream)
    : rank_(rank),
      world_size_(world_size),
      device_ordinal_(device_ordinal),
      comm_(comm),
      stream_(stream),
      barrier_scratch_(Tensor::Zeros(DType::kF32, {1}, Device::Cuda(device_ordinal))) {}

NcclCommunicator::~NcclCommunicator() {
  cudaSetDevice(device_ordinal_);
  ncclCommDestroy(comm_);
  cudaStreamDestroy(stream_);
}

template <typename Fn>
void NcclCommunicator::Run(const char* name, Fn&& enqueue) {
  const auto start = std::chrono::steady_clock::now();
  CHECK_EQ(cudaSetDevice(device_ordinal_), cudaSuccess) << name;
  const ncclResult_t result = enqueue();
  CHECK(result == ncclSuccess) << "NCCL " << name << " failed on rank " << rank_ << " of "
                               << world_size_ << ": " << ncclGetErrorString(result) << " ("
                               << ncclGetLastError(comm_) << ")";
  const cudaError_t error = cudaStreamSynchronize(stream_);
  CHECK(error == cudaSuccess) << "NCCL " << name << " on rank " << rank_ << " of " << world_size_
                              << ": " << cudaGetErrorString(error);
  communication_ms_ +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

void NcclCommunicator::CheckOnDevice(const Tensor& t, const char* op) const {
  CHECK(t.device() == Device::Cuda(device_ordinal_))
      << op << ": NcclCommunicator of rank " << rank_ << " takes tensors on cuda:"
      << device_ordinal_ << ", got " << t.DebugString();
}

void NcclCommunicator::AllReduceSum(Tensor& x) {
  CheckOnDevice(x, "AllReduceSum");
  CHECK(x.dtype() == DType::kF32) << "AllReduceSum: f32 only, got " << x.DebugString();
  Run("AllReduceSum", [&] {
    return ncclAllReduce(x.raw_data(), x.raw_data(), static_cast<size_t>(x.numel()), ncclFloat32,
                         ncclSum, comm_, stream_);
  });
}

void NcclCommunicator::AllGather(const Tensor& x, Tensor& out) {
  CheckOnDevice(x, "AllGather");
  CheckOnDevice(out, "AllGather");
  CHECK(x.dtype() == out.dtype() && x.rank() >= 1 && out.rank() == x.rank() &&
        out.dim(0) == world_size_ * x.dim(0) && out.numel() == world_size_ * x.numel())
      << "AllGather: " << x.DebugString() << " -> " << out.DebugString() << " over "
      << world_size_ << " ranks";
  Run("AllGather", [&] {
    return ncclAllGather(x.raw_data(), out.raw_data(), x.nbytes(), ncclUint8, comm_, stream_);
  });
}

void NcclCommunicator::ReduceScatter(const Tensor& x, Tensor& out) {
  CheckOnDevice(x, "ReduceScatter");
  CheckOnDevice(out, "ReduceScatter");
  CHECK(x.dtype() == DType::kF32 && out.dtype() == DType::kF32 && x.rank() >= 1 &&
        out.rank() == x.rank() && out.dim(0) * world_size_ == x.dim(0) &&
        out.numel() * world_size_ == x.numel())
      << "ReduceScatter: " << x.DebugString() << " -> " << out.DebugString() << " over "
      << world_size_ << " ranks";
  Run("ReduceScatter", [&] {
    return ncclReduceScatter(x.raw_data(), out.raw_data(), static_cast<size_t>(out.numel()),
                             ncclFloat32, ncclSum, comm_, stream_);
  });
}

void NcclCommunicator::AllToAllV(const Tensor& x, const std::vector<int64_t>& send_counts,
                                 Tensor& out, const std::vector<int64_t>& recv_counts) {
  CheckOnDevice(x, "AllToAllV");
  CheckOnDevice(out, "AllToAllV");
  CHECK(static_cast<int>(send_counts.size()) == world_size_ &&
        static_cast<int>(recv_counts.size()) == world_size_ && x.rank() >= 1 &&
        x.dtype() == out.dtype() && out.rank() == x.rank())
      << "AllToAllV: " << x.DebugString() << " -> " << out.DebugString() << " with "
      << send_counts.size() << " send and " << recv_counts.size() << " receive counts";
  const Shape row(x.shape().begin() + 1, x.shape().end());
  CHECK(Shape(out.shape().begin() + 1, out.shape().end()) == row)
      << "AllToAllV: rows of " << x.DebugString() << " and " << out.DebugString() << " differ";
  const size_t row_bytes = static_cast<size_t>(NumElements(row)) * DTypeSize(x.dtype());
  int64_t num_sent = 0, num_received = 0;
  for (int r = 0; r < world_size_; ++r) {
    CHECK(send_counts[r] >= 0 && recv_counts[r] >= 0) << "AllToAllV: negative count, rank " << r;
    num_sent += send_counts[r];
    num_received += recv_counts[r];
  }
  CHECK(num_sent == x.dim(0) && num_received == out.dim(0))
      << "AllToAllV: counts move " << num_sent << " -> " << num_received << " rows, tensors "
      << x.DebugString() << " -> " << out.DebugString();
  const char* send = static_cast<const char*>(x.raw_data());
  char* receive = static_cast<char*>(out.raw_data());
  Run("AllToAllV", [&] {
    ncclResult_t result = ncclGroupStart();
    size_t send_offset = 0, receive_offset = 0;
    for (int r = 0; r < world_size_ && result == ncclSuccess; ++r) {
      const size_t send_bytes = static_cast<size_t>(send_counts[r]) * row_bytes;
      const size_t receive_bytes = static_cast<size_t>(recv_counts[r]) * row_bytes;
      if (send_bytes > 0) {
        result = ncclSend(send + send_offset, send_bytes, ncclUint8, r, comm_, stream_);
      }
      if (receive_bytes > 0 && result == ncclSuccess) {
        result = ncclRecv(receive + receive_offset, receive_bytes, ncclUint8, r, comm_, stream_);
      }
      send_offset += send_bytes;
      receive_offset += receive_bytes;
    }
    const ncclResult_t end = ncclGroupEnd();  // always closes the group it opened
    return result != ncclSuccess ? result : end;
  });
}

void NcclCommunicator::Broadcast(Tensor& x, int root) {
  CheckOnDevice(x, "Broadcast");
  CHECK(root >= 0 && root < world_size_) << "Broadcast: root " << root << " of " << world_size_;
  Run("Broadcast", [&] {
    return ncclBroadcast(x.raw_data(), x.raw_data(), x.nbytes(), ncclUint8, root, comm_, stream_);
  });
}

void NcclCommunicator::Barrier() {
  Run("Barrier", [&] {
    return ncclAllReduce(barrier_scratch_.raw_data(), barrier_scratch_.raw_data(), 1, ncclFloat32,
                         ncclSum, comm_, stream_);
  });
}

}  // namespace gemmaserve::parallel
