// StagedCommunicator: two ranks (threads) over Gloo on loopback, every collective through the
// staging wrapper, give what the collectives promise. On the CPU the tensors pass straight through;
// on a GPU (skipped without one) both ranks share device 0, as the one-GPU tests of TP=2 and EP=2
// do, and every tensor makes the trip to the host and back.
#include "worker/staged_communicator.h"

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/device.h"
#include "ops/copy.h"
#include "parallel/gloo_communicator.h"
#include "parallel/key_value_store.h"

namespace gemmaserve::worker {
namespace {

constexpr int kWorld = 2;

// Runs body(comm, device) on two threads, each a rank of a StagedCommunicator over Gloo.
void RunRanks(const Device& device,
              const std::function<void(parallel::Communicator&, const Device&)>& body) {
  parallel::InMemoryKeyValueStore store;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < kWorld; ++rank) {
    threads.emplace_back([&, rank] {
      absl::StatusOr<std::unique_ptr<parallel::GlooCommunicator>> gloo =
          parallel::GlooCommunicator::Create(rank, kWorld, store, "127.0.0.1",
                                             absl::Seconds(30));
      ASSERT_TRUE(gloo.ok()) << gloo.status();
      StagedCommunicator comm(std::move(*gloo));
      EXPECT_EQ(comm.rank(), rank);
      EXPECT_EQ(comm.world_size(), kWorld);
      body(comm, device);
    });
  }
  for (std::thread& thread : threads) thread.join();
}

// A tensor on `device` holding `values` (f32).
Tensor On(const Device& device, const std::vector<float>& values, Shape shape) {
  return ops::ToDevice(Tensor::FromVector(values, std::move(shape)), device);
}

std::vector<float> Values(const Tensor& t) {
  const Tensor host = ops::ToHost(t);
  return std::vector<float>(host.data<float>(), host.data<float>() + host.numel());
}

void ExpectCollectives(const Device& device) {
  RunRanks(device, [](parallel::Communicator& comm, const Device& on) {
    const float r = static_cast<float>(comm.rank());
    Tensor sum = On(on, {r, 10 + r, 100 + r}, {3});
    comm.AllReduceSum(sum);
    EXPECT_EQ(Values(sum), (std::vector<float>{1, 21, 201}));

    Tensor gathered = Tensor::Empty(DType::kF32, {4}, on);
    comm.AllGather(On(on, {r, r + 0.5f}, {2}), gathered);
    EXPECT_EQ(Values(gathered), (std::vector<float>{0, 0.5f, 1, 1.5f}));

    Tensor slice = Tensor::Empty(DType::kF32, {2}, on);
    comm.ReduceScatter(On(on, {1 + r, 2 + r, 3 + r, 4 + r}, {4}), slice);
    EXPECT_EQ(Values(slice), comm.rank() == 0 ? (std::vector<float>{3, 5})
                                              : (std::vector<float>{7, 9}));

    // Rank 0 sends one row to itself and two to rank 1; rank 1 sends two to rank 0, none to itself.
    const std::vector<int64_t> send = comm.rank() == 0 ? std::vector<int64_t>{1, 2}
                                                       : std::vector<int64_t>{2, 0};
    const std::vector<int64_t> recv = comm.rank() == 0 ? std::vector<int64_t>{1, 2}
                                                       : std::vector<int64_t>{2, 0};
    Tensor sent = comm.rank() == 0 ? On(on, {1, 1, 2, 2, 3, 3}, {3, 2})
                                   : On(on, {4, 4, 5, 5}, {2, 2});
    Tensor received = Tensor::Empty(DType::kF32, {comm.rank() == 0 ? 3 : 2, 2}, on);
    comm.AllToAllV(sent, send, received, recv);
    EXPECT_EQ(Values(received), comm.rank() == 0 ? (std::vector<float>{1, 1, 4, 4, 5, 5})
                                                  : (std::vector<float>{2, 2, 3, 3}));

    Tensor broadcast = On(on, {r + 7}, {1});
    comm.Broadcast(broadcast, 1);
    EXPECT_EQ(Values(broadcast), (std::vector<float>{8}));
    comm.Barrier();
  });
}

TEST(StagedCommunicatorTest, HostTensorsPassThroughEveryCollective) {
  ExpectCollectives(Device::Cpu());
}

TEST(StagedCommunicatorTest, DeviceTensorsOfRanksSharingOneGpuGoThroughTheHost) {
  const absl::StatusOr<std::vector<kernels::CudaDevice>> devices = kernels::ListCudaDevices();
  if (!devices.ok() || devices->empty()) {
    GTEST_SKIP() << "no CUDA device: "
                 << (devices.ok() ? "none visible" : devices.status().ToString());
  }
  ExpectCollectives(Device::Cuda(0));
}

}  // namespace
}  // namespace gemmaserve::worker
