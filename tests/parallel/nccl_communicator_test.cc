// NcclCommunicator on real GPUs: one rank per device (NCCL allows one rank of a communicator per
// device), as many ranks as there are devices, up to 4. Skips when there is no CUDA device.
#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>

#include <functional>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve::parallel {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(60);

int NumCudaDevices() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

Tensor ToDevice(const std::vector<float>& values, Shape shape, int ordinal) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape), Device::Cuda(ordinal));
  CHECK_EQ(cudaMemcpy(t.raw_data(), values.data(), t.nbytes(), cudaMemcpyHostToDevice),
           cudaSuccess);
  return t;
}

std::vector<float> ToHost(const Tensor& t) {
  std::vector<float> values(t.numel());
  CHECK_EQ(cudaMemcpy(values.data(), t.raw_data(), t.nbytes(), cudaMemcpyDeviceToHost),
           cudaSuccess);
  return values;
}

std::vector<float> Values(int64_t n, const std::function<float(int64_t)>& value) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = value(i);
  return v;
}

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_size_ = std::min(NumCudaDevices(), 4);
    if (world_size_ == 0) GTEST_SKIP() << "no CUDA device: cudaGetDeviceCount reports none";
  }

  // Runs body(comm) on one thread per rank, rank r on device r.
  void RunRanks(const std::function<void(NcclCommunicator&)>& body) {
    std::vector<std::thread> threads;
    for (int rank = 0; rank < world_size_; ++rank) {
      threads.emplace_back([&, rank] {
        absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm =
            NcclCommunicator::Create(rank, world_size_, rank, store_, kTimeout);
        ASSERT_TRUE(comm.ok()) << comm.status();
        body(**comm);
      });
    }
    for (std::thread& thread : threads) thread.join();
  }

  float RankSum() const { return world_size_ * (world_size_ + 1) / 2.0f; }

  int world_size_ = 0;
  InMemoryKeyValueStore store_;
};

TEST_F(NcclCommunicatorTest, AllReduceSumAddsEveryRanksTensor) {
  const int w = world_size_;
  RunRanks([&](NcclCommunicator& comm) {
    Tensor x = ToDevice(Values(37, [&](int64_t i) { return (comm.rank() + 1) * 1000.0f + i; }),
                        {37}, comm.rank());
    comm.AllReduceSum(x);
    const std::vector<float> got = ToHost(x);
    for (int64_t i = 0; i < 37; ++i) ASSERT_EQ(got[i], 1000.0f * RankSum() + w * i);
    EXPECT_GT(comm.communication_ms(), 0);
  });
}

TEST_F(NcclCommunicatorTest, AllGatherAndReduceScatterFollowRankOrder) {
  const int w = world_size_;
  RunRanks([&](NcclCommunicator& comm) {
    const int me = comm.rank();
    Tensor x = ToDevice(Values(4, [&](int64_t i) { return (me + 1) * 100.0f + i; }), {2, 2}, me);
    Tensor gathered = Tensor::Empty(DType::kF32, {2 * w, 2}, Device::Cuda(me));
    comm.AllGather(x, gathered);
    const std::vector<float> all = ToHost(gathered);
    for (int64_t i = 0; i < 4 * w; ++i) ASSERT_EQ(all[i], (i / 4 + 1) * 100.0f + i % 4);

    Tensor full = ToDevice(Values(6 * w, [&](int64_t j) { return (me + 1) * 1000.0f + j; }),
                           {3 * w, 2}, me);
    Tensor mine = Tensor::Empty(DType::kF32, {3, 2}, Device::Cuda(me));
    comm.ReduceScatter(full, mine);
    const std::vector<float> got = ToHost(mine);
    for (int64_t k = 0; k < 6; ++k) ASSERT_EQ(got[k], 1000.0f * RankSum() + w * (me * 6 + k));
  });
}

TEST_F(NcclCommunicatorTest, AllToAllVDeliversUnevenSplitsInRankOrder) {
  const int w = world_size_;
  // Rank `from` sends (from + 2·to + 1) % 3 rows of width 2 to rank `to`; zero for some pairs.
  auto num_rows = [](int from, int to) -> int64_t { return (from + 2 * to + 1) % 3; };
  auto value = [](int from, int to, int64_t k, int64_t c) {
    return from * 10000.0f + to * 100.0f + k * 10.0f + c;
  };
  RunRanks([&](NcclCommunicator& comm) {
    const int me = comm.rank();
    std::vector<int64_t> send_counts(w), recv_counts(w);
    std::vector<float> send, expected;
    for (int r = 0; r < w; ++r) {
      send_counts[r] = num_rows(me, r);
      recv_counts[r] = num_rows(r, me);
      for (int64_t k = 0; k < send_counts[r]; ++k) {
        for (int64_t c = 0; c < 2; ++c) send.push_back(value(me, r, k, c));
      }
      for (int64_t k = 0; k < recv_counts[r]; ++k) {
        for (int64_t c = 0; c < 2; ++c) expected.push_back(value(r, me, k, c));
      }
    }
    Tensor x = ToDevice(send, {static_cast<int64_t>(send.size()) / 2, 2}, me);
    Tensor out = Tensor::Empty(DType::kF32, {static_cast<int64_t>(expected.size()) / 2, 2},
                               Device::Cuda(me));
    comm.AllToAllV(x, send_counts, out, recv_counts);
    EXPECT_EQ(ToHost(out), expected);
  });
}

TEST_F(NcclCommunicatorTest, BroadcastFromEveryRootThenBarrier) {
  const int w = world_size_;
  RunRanks([&](NcclCommunicator& comm) {
    for (int root = 0; root < w; ++root) {
      Tensor x = ToDevice(Values(9, [&](int64_t i) { return (comm.rank() + 1) * 10.0f + i; }),
                          {9}, comm.rank());
      comm.Broadcast(x, root);
      EXPECT_EQ(ToHost(x), Values(9, [&](int64_t i) { return (root + 1) * 10.0f + i; }));
      comm.Barrier();
    }
  });
}

TEST_F(NcclCommunicatorTest, CreateTimesOutWhenRankZeroNeverPublishes) {
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm =
      NcclCommunicator::Create(1, 2, 0, store_, absl::Milliseconds(100));
  ASSERT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_THAT(comm.status().message(), ::testing::HasSubstr("nccl/unique_id"));
}

TEST_F(NcclCommunicatorTest, CreateRejectsADeviceThatDoesNotExist) {
  EXPECT_EQ(NcclCommunicator::Create(0, 1, NumCudaDevices(), store_, kTimeout).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gemmaserve::parallel
