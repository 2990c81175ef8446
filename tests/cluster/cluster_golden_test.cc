// Parity of sharded execution: a coordinator (WorkerGroup in this process) driving real
// `gemmaserve worker` processes on 127.0.0.1 that exchange activations over Gloo. For each tiny
// model and layout (dense TP=2/4; MoE EP=2/4 and TP=2 with width-split experts) the cluster must
// give the golden logits within kGoldenTolerance, the golden greedy tokens, and the same logits as
// the single-process model within kSingleProcessTolerance. One cluster per case, reused by all of
// its checks, because starting worker processes dominates the cost of the case.
#include <algorithm>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/local_cluster.h"
#include "coordinator/sequence_driver.h"
#include "gtest/gtest.h"
#include "parallel/communicator.h"
#include "tests/model/golden_reference.h"
#include "worker/model_shard.h"

namespace gemmaserve {
namespace {

using coordinator::SequenceDriver;
using testing::kGoldenTolerance;
using testing::MaxAbsDiff;

// The cluster computes the same float32 ops as one process; only the order of the all-reduce
// sums differs.
constexpr float kSingleProcessTolerance = 1e-4f;
constexpr int64_t kBlockSize = 16;
constexpr int64_t kMaxSequences = 4;
constexpr int64_t kBlocksPerSequence = 4;  // 64 tokens: the longest prompt (40) plus 16 and more
constexpr int64_t kNewTokens = 16;

struct Layout {
  std::string model;
  int64_t tp = 1;  // --tp
  int64_t ep = 1;  // --ep
};

// "dense_tp2", "moe_ep4": the test name suffix, and how gtest prints the parameter.
std::string LayoutName(const Layout& layout) {
  const std::string split =
      layout.ep > 1 ? absl::StrCat("_ep", layout.ep) : absl::StrCat("_tp", layout.tp);
  return absl::StrCat(layout.model.substr(layout.model.rfind('-') + 1), split);
}

void PrintTo(const Layout& layout, std::ostream* out) { *out << LayoutName(layout); }

internal::v1::SamplingParams Greedy() { return internal::v1::SamplingParams(); }

class ClusterGoldenTest : public ::testing::TestWithParam<Layout> {
 protected:
  void SetUp() override {
    const Layout& layout = GetParam();
    const std::string model_dir = "tests/data/" + layout.model;
    ref_ = testing::LoadGoldenReference(layout.model);
    // The reference: the model in this process, as in tests/model/golden_test.cc.
    auto loaded = worker::LoadShard(model_dir, parallel::ShardPlan::Single());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    vocab_ = loaded->config.vocab_size;
    const model::KvPages pages = model::BlockRuns::PagesFor(
        {0, worker::KvLayout(*loaded, kBlockSize).blocks_per_page}, kBlocksPerSequence,
        kMaxSequences);
    shard_ = std::make_unique<worker::ModelShard>(std::move(*loaded), kBlockSize, pages.num_pages,
                                                  comm_);
    single_ = std::make_unique<SequenceDriver>(
        [this](const internal::v1::StepPlan& plan) { return shard_->executor().Execute(plan); },
        kBlockSize, shard_->cache().pages(), kMaxSequences, vocab_);

    coordinator::LocalClusterOptions options;
    options.spec.model_dir = model_dir;
    const absl::StatusOr<parallel::ParallelLayout> parallel_layout =
        parallel::ParallelLayout::Create(layout.tp, layout.ep);
    ASSERT_TRUE(parallel_layout.ok()) << parallel_layout.status();
    options.spec.layout = *parallel_layout;
    options.spec.block_size = kBlockSize;
    options.spec.join_timeout = absl::Seconds(60);
    options.spec.step_timeout = absl::Seconds(60);  // a hang fails the step instead of the suite
    options.worker_binary = GEMMASERVE_BINARY;
    options.worker_args = {"--threads", "1", "--log-level", "warn", "--kv-cache-mb", "8"};
    options.ready_timeout = absl::Seconds(60);
    auto cluster = coordinator::LocalCluster::Start(options);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = std::move(*cluster);
    coordinator::WorkerGroup* group = &cluster_->group();
    const model::KvPages cluster_pages =
        model::BlockRuns::PagesFor(group->kv_pages(), kBlocksPerSequence, kMaxSequences);
    ASSERT_GE(group->kv_pages().num_pages, cluster_pages.num_pages);
    driver_ = std::make_unique<SequenceDriver>(
        [group](const internal::v1::StepPlan& plan) { return group->Step(plan); }, kBlockSize,
        cluster_pages, kMaxSequences, vocab_);
  }

  // Prefills the golden sequences `indices` in one step on the cluster and on the single process.
  void ExpectLastLogitsMatch(const std::vector<size_t>& indices) {
    std::vector<std::vector<int32_t>> prompts;
    for (size_t s : indices) prompts.push_back(ref_.inputs[s]);
    auto cluster = driver_->Logits(prompts, /*all_positions=*/false);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    auto single = single_->Logits(prompts, /*all_positions=*/false);
    ASSERT_TRUE(single.ok()) << single.status();
    ASSERT_EQ(cluster->size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      const size_t s = indices[i];
      EXPECT_LE(MaxAbsDiff((*cluster)[i], ref_.last_logits[s]), kGoldenTolerance) << "sequence " << s;
      EXPECT_LE(MaxAbsDiff((*cluster)[i], (*single)[i]), kSingleProcessTolerance) << "sequence " << s;
    }
  }

  testing::GoldenReference ref_;
  int64_t vocab_ = 0;
  parallel::LocalCommunicator comm_;
  std::unique_ptr<worker::ModelShard> shard_;
  std::unique_ptr<SequenceDriver> single_;  // steps run by shard_
  std::unique_ptr<coordinator::LocalCluster> cluster_;
  std::unique_ptr<SequenceDriver> driver_;
};

TEST_P(ClusterGoldenTest, ShardedStepsMatchGoldenAndSingleProcessLogitsAndGreedyTokens) {
  {
    SCOPED_TRACE("last-position logits, each sequence alone");
    for (size_t s = 0; s < ref_.inputs.size(); ++s) ExpectLastLogitsMatch({s});
  }
  {
    SCOPED_TRACE("last-position logits, all sequences in one batch");
    ExpectLastLogitsMatch({0, 1, 2, 3});
  }
  {
    SCOPED_TRACE("all-position logits of sequence 0");
    auto cluster = driver_->Logits({ref_.inputs[0]}, /*all_positions=*/true);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    auto single = single_->Logits({ref_.inputs[0]}, /*all_positions=*/true);
    ASSERT_TRUE(single.ok()) << single.status();
    const std::vector<float>& rows = (*cluster)[0];
    ASSERT_EQ(rows.size(), ref_.seq0_all_logits.size() * vocab_);
    for (size_t p = 0; p < ref_.seq0_all_logits.size(); ++p) {
      EXPECT_LE(MaxAbsDiff(rows.data() + p * vocab_, ref_.seq0_all_logits[p].data(), vocab_),
                kGoldenTolerance)
          << "position " << p;
    }
    EXPECT_LE(MaxAbsDiff(rows, (*single)[0]), kSingleProcessTolerance);
  }
  {
    SCOPED_TRACE("greedy decode with the KV cache, each sequence alone");
    for (size_t s = 0; s < ref_.inputs.size(); ++s) {
      const std::vector<float> golden_steps = testing::LoadGreedyStepLogits(GetParam().model, s);
      ASSERT_EQ(golden_steps.size(), static_cast<size_t>(kNewTokens * vocab_));
      auto cluster = driver_->Generate({ref_.inputs[s]}, kNewTokens, Greedy(), {}, true);
      ASSERT_TRUE(cluster.ok()) << cluster.status();
      auto single = single_->Generate({ref_.inputs[s]}, kNewTokens, Greedy(), {}, true);
      ASSERT_TRUE(single.ok()) << single.status();
      const SequenceDriver::Generation& g = (*cluster)[0];
      EXPECT_EQ(g.tokens, ref_.greedy[s]) << "sequence " << s;
      EXPECT_EQ(g.tokens, (*single)[0].tokens) << "sequence " << s;
      ASSERT_EQ(g.step_logits.size(), static_cast<size_t>(kNewTokens));
      for (int64_t step = 0; step < kNewTokens; ++step) {
        EXPECT_LE(MaxAbsDiff(g.step_logits[step].data(), golden_steps.data() + step * vocab_, vocab_),
                  kGoldenTolerance)
            << "sequence " << s << " step " << step;
        EXPECT_LE(MaxAbsDiff(g.step_logits[step], (*single)[0].step_logits[step]),
                  kSingleProcessTolerance)
            << "sequence " << s << " step " << step;
      }
    }
  }
  {
    SCOPED_TRACE("greedy decode with the KV cache, all sequences in one batch");
    auto cluster = driver_->Generate(ref_.inputs, kNewTokens, Greedy(), {});
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    for (size_t s = 0; s < ref_.inputs.size(); ++s) {
      EXPECT_EQ((*cluster)[s].tokens, ref_.greedy[s]) << "sequence " << s;
    }
  }
  EXPECT_TRUE(cluster_->group().ready());
  EXPECT_FALSE(cluster_->worker_died());
}

INSTANTIATE_TEST_SUITE_P(
    TinyModels, ClusterGoldenTest,
    ::testing::Values(Layout{"gemma4-tiny-dense", /*tp=*/2}, Layout{"gemma4-tiny-dense", /*tp=*/4},
                      Layout{"gemma4-tiny-moe", /*tp=*/1, /*ep=*/2},
                      Layout{"gemma4-tiny-moe", /*tp=*/1, /*ep=*/4},
                      Layout{"gemma4-tiny-moe", /*tp=*/2}),
    [](const auto& info) { return LayoutName(info.param); });

}  // namespace
}  // namespace gemmaserve
