#include "parallel/gloo_communicator.h"

#include <atomic>
#include <functional>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "parallel/grpc_key_value_store.h"
#include "parallel/key_value_store.h"
#include "tests/parallel/rendezvous_test_server.h"

namespace gemmaserve::parallel {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kTimeout = absl::Seconds(30);

// Runs body(comm) on world_size threads, each rank with its own GlooCommunicator over TCP on
// 127.0.0.1, rendezvousing through `store`.
void RunRanks(int world_size, KeyValueStore& store,
              const std::function<void(GlooCommunicator&)>& body) {
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
          GlooCommunicator::Create(rank, world_size, store, "127.0.0.1", kTimeout);
      ASSERT_TRUE(comm.ok()) << comm.status();
      EXPECT_EQ((*comm)->rank(), rank);
      EXPECT_EQ((*comm)->world_size(), world_size);
      body(**comm);
    });
  }
  for (std::thread& thread : threads) thread.join();
}

// An f32 tensor whose element i is value(i): rank- and index-dependent payloads catch both a
// missing contribution and a misplaced element. All values are small integers, so sums are exact.
Tensor F32(Shape shape, const std::function<float(int64_t)>& value) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = value(i);
  return t;
}

class GlooCommunicatorTest : public ::testing::TestWithParam<int> {
 protected:
  int world_size() const { return GetParam(); }
  // 1 + 2 + ... + world_size: the sum over ranks of (rank + 1).
  float RankSum() const { return world_size() * (world_size() + 1) / 2.0f; }

  InMemoryKeyValueStore store_;
};

TEST_P(GlooCommunicatorTest, AllReduceSumAddsEveryRanksTensor) {
  const int w = world_size();
  RunRanks(w, store_, [&](GlooCommunicator& comm) {
    Tensor x = F32({37}, [&](int64_t i) { return (comm.rank() + 1) * 1000.0f + i; });
    comm.AllReduceSum(x);
    for (int64_t i = 0; i < 37; ++i) {
      ASSERT_EQ(x.data<float>()[i], 1000.0f * RankSum() + w * i) << "element " << i;
    }
  });
}

TEST_P(GlooCommunicatorTest, AllGatherConcatenatesInRankOrder) {
  const int w = world_size();
  RunRanks(w, store_, [&](GlooCommunicator& comm) {
    // i32 rows: AllGather moves bytes of any dtype.
    Tensor x = Tensor::Empty(DType::kI32, {5, 2});
    for (int64_t i = 0; i < 10; ++i) x.data<int32_t>()[i] = (comm.rank() + 1) * 100 + i;
    Tensor out = Tensor::Empty(DType::kI32, {5 * w, 2});
    comm.AllGather(x, out);
    for (int r = 0; r < w; ++r) {
      for (int64_t i = 0; i < 10; ++i) {
        ASSERT_EQ(out.data<int32_t>()[r * 10 + i], (r + 1) * 100 + i) << "rank " << r;
      }
    }
  });
}

TEST_P(GlooCommunicatorTest, ReduceScatterKeepsThisRanksSliceOfTheSum) {
  const int w = world_size();
  RunRanks(w, store_, [&](GlooCommunicator& comm) {
    Tensor x = F32({3 * w, 2}, [&](int64_t j) { return (comm.rank() + 1) * 1000.0f + j; });
    Tensor out = Tensor::Empty(DType::kF32, {3, 2});
    comm.ReduceScatter(x, out);
    for (int64_t k = 0; k < 6; ++k) {
      const int64_t j = comm.rank() * 6 + k;  // index into the full [3w, 2] sum
      ASSERT_EQ(out.data<float>()[k], 1000.0f * RankSum() + w * j) << "element " << k;
    }
  });
}

// Rows rank `from` sends to rank `to`; zero for some pairs (including a rank and itself).
int64_t NumRows(int from, int to) { return (from + 2 * to + 1) % 3; }

// Element c of row k that rank `from` sends to rank `to`.
float RowValue(int from, int to, int64_t k, int64_t c) {
  return from * 10000.0f + to * 100.0f + k * 10.0f + c;
}

TEST_P(GlooCommunicatorTest, AllToAllVDeliversUnevenSplitsInRankOrder) {
  const int w = world_size();
  constexpr int64_t kWidth = 3;
  RunRanks(w, store_, [&](GlooCommunicator& comm) {
    const int me = comm.rank();
    std::vector<int64_t> send_counts(w), recv_counts(w);
    for (int r = 0; r < w; ++r) {
      send_counts[r] = NumRows(me, r);
      recv_counts[r] = NumRows(r, me);
    }
    std::vector<float> send;
    for (int to = 0; to < w; ++to) {
      for (int64_t k = 0; k < send_counts[to]; ++k) {
        for (int64_t c = 0; c < kWidth; ++c) send.push_back(RowValue(me, to, k, c));
      }
    }
    std::vector<float> expected;
    for (int from = 0; from < w; ++from) {
      for (int64_t k = 0; k < recv_counts[from]; ++k) {
        for (int64_t c = 0; c < kWidth; ++c) expected.push_back(RowValue(from, me, k, c));
      }
    }
    const int64_t num_send = static_cast<int64_t>(send.size()) / kWidth;
    const int64_t num_recv = static_cast<int64_t>(expected.size()) / kWidth;
    Tensor x = Tensor::Empty(DType::kF32, {num_send, kWidth});
    std::copy(send.begin(), send.end(), x.data<float>());
    Tensor out = Tensor::Empty(DType::kF32, {num_recv, kWidth});
    comm.AllToAllV(x, send_counts, out, recv_counts);
    for (size_t i = 0; i < expected.size(); ++i) {
      ASSERT_EQ(out.data<float>()[i], expected[i]) << "rank " << me << " element " << i;
    }
  });
}

TEST_P(GlooCommunicatorTest, AllToAllVWithARankThatSendsNothing) {
  const int w = world_size();
  RunRanks(w, store_, [&](GlooCommunicator& comm) {
    const int me = comm.rank();
    // Rank 0 sends no rows at all; every other rank sends one row [me, r] to each rank r.
    std::vector<int64_t> send_counts(w, me == 0 ? 0 : 1);
    std::vector<int64_t> recv_counts(w, 1);
    recv_counts[0] = 0;
    Tensor x = F32({me == 0 ? 0 : w, 2},
                   [&](int64_t i) { return i % 2 == 0 ? me : static_cast<float>(i / 2); });
    Tensor out = Tensor::Empty(DType::kF32, {w - 1, 2});
    comm.AllToAllV(x, send_counts, out, recv_counts);
    for (int from = 1; from < w; ++from) {
      EXPECT_EQ(out.data<float>()[2 * (from - 1)], from);
      EXPECT_EQ(out.data<float>()[2 * (from - 1) + 1], me);
    }
  });
}

TEST_P(GlooCommunicatorTest, BroadcastCopiesTheRootsTensorFromEveryRoot) {
  const int w = world_size();
  RunRanks(w, store_, [&](GlooCommunicator& comm) {
    for (int root = 0; root < w; ++root) {
      Tensor x = F32({9}, [&](int64_t i) { return (comm.rank() + 1) * 10.0f + i; });
      comm.Broadcast(x, root);
      for (int64_t i = 0; i < 9; ++i) {
        ASSERT_EQ(x.data<float>()[i], (root + 1) * 10.0f + i) << "root " << root;
      }
    }
  });
}

TEST_P(GlooCommunicatorTest, BarrierWaitsForEveryRank) {
  const int w = world_size();
  constexpr int kPhases = 5;
  std::vector<std::atomic<int>> arrived(kPhases);
  RunRanks(w, store_, [&](GlooCommunicator& comm) {
    for (int phase = 0; phase < kPhases; ++phase) {
      if (comm.rank() == phase % w) absl::SleepFor(absl::Milliseconds(20));  // a late rank
      arrived[phase]++;
      comm.Barrier();
      EXPECT_EQ(arrived[phase].load(), w) << "phase " << phase;
    }
  });
}

TEST_P(GlooCommunicatorTest, ManyMixedCollectivesInARowStayMatched) {
  const int w = world_size();
  RunRanks(w, store_, [&](GlooCommunicator& comm) {
    for (int step = 0; step < 50; ++step) {
      Tensor x = F32({64}, [&](int64_t i) { return comm.rank() + step + i; });
      comm.AllReduceSum(x);
      ASSERT_EQ(x.data<float>()[1], RankSum() - w + w * (step + 1)) << "step " << step;
      Tensor one = F32({1}, [&](int64_t) { return comm.rank() * 1.0f + step; });
      Tensor all = Tensor::Empty(DType::kF32, {w});
      comm.AllGather(one, all);
      for (int r = 0; r < w; ++r) ASSERT_EQ(all.data<float>()[r], r + step);
    }
  });
}

TEST_P(GlooCommunicatorTest, CountsTimeInsideCollectives) {
  RunRanks(world_size(), store_, [&](GlooCommunicator& comm) {
    EXPECT_EQ(comm.communication_ms(), 0);
    comm.Barrier();
    Tensor x = F32({1024}, [](int64_t i) { return i; });
    comm.AllReduceSum(x);
    EXPECT_GT(comm.communication_ms(), 0);
    comm.ResetCommunicationMs();
    EXPECT_EQ(comm.communication_ms(), 0);
  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, GlooCommunicatorTest, ::testing::Values(2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return "WorldSize" + std::to_string(info.param);
                         });

TEST(GlooCommunicatorRendezvousTest, JoinsThroughTheCoordinatorsGrpcStore) {
  RendezvousTestServer server;
  constexpr int kWorldSize = 3;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < kWorldSize; ++rank) {
    threads.emplace_back([&, rank] {
      // Each rank has its own channel and client, as a worker process would.
      GrpcKeyValueStore store(server.NewChannel(), "replica-0/incarnation-1");
      absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
          GlooCommunicator::Create(rank, kWorldSize, store, "127.0.0.1", kTimeout);
      ASSERT_TRUE(comm.ok()) << comm.status();
      Tensor x = F32({5}, [&](int64_t i) { return (rank + 1) * 10.0f + i; });
      (*comm)->AllReduceSum(x);
      for (int64_t i = 0; i < 5; ++i) ASSERT_EQ(x.data<float>()[i], 60.0f + kWorldSize * i);
    });
  }
  for (std::thread& thread : threads) thread.join();
  // Gloo's keys sit under the group's namespace in the coordinator's store.
  EXPECT_TRUE(server.rendezvous()
                  .store()
                  .Get({"replica-0/incarnation-1/gloo/0"}, absl::Seconds(1))
                  .ok());
}

TEST(GlooCommunicatorCreateTest, MissingRankTimesOutWithDeadlineExceeded) {
  InMemoryKeyValueStore store;
  absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
      GlooCommunicator::Create(0, 2, store, "127.0.0.1", absl::Milliseconds(200));
  ASSERT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_THAT(comm.status().message(), HasSubstr("rank 0 of 2"));
  EXPECT_THAT(comm.status().message(), HasSubstr("gloo/1"));
}

TEST(GlooCommunicatorCreateTest, RejectsAnAddressNotOnThisHost) {
  InMemoryKeyValueStore store;
  // 192.0.2.1 is TEST-NET-1: never assigned to a local interface, so binding to it fails.
  absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
      GlooCommunicator::Create(0, 1, store, "192.0.2.1", kTimeout);
  ASSERT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument) << comm.status();
  EXPECT_THAT(comm.status().message(), HasSubstr("192.0.2.1"));
}

TEST(GlooCommunicatorCreateTest, RejectsARankOutsideTheWorld) {
  InMemoryKeyValueStore store;
  EXPECT_EQ(GlooCommunicator::Create(2, 2, store, "127.0.0.1", kTimeout).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GlooCommunicatorCreateTest, WorldSizeOneIsItsOwnGroup) {
  InMemoryKeyValueStore store;
  absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
      GlooCommunicator::Create(0, 1, store, "127.0.0.1", kTimeout);
  ASSERT_TRUE(comm.ok()) << comm.status();
  Tensor x = F32({4}, [](int64_t i) { return i; });
  (*comm)->AllReduceSum(x);
  (*comm)->Barrier();
  EXPECT_EQ(x.data<float>()[3], 3.0f);
}

}  // namespace
}  // namespace gemmaserve::parallel
