// What the coordinator round trip costs per step: one decode step of one sequence (40 cached
// tokens, greedy sampling on rank 0) on a tiny model, run by a ModelShard in this process and by a
// coordinator (WorkerGroup) driving one `gemmaserve worker` process over its gRPC stream. Both
// use one BLAS thread. The cluster benchmark also reports the worker's own compute time per step
// (`worker_compute_ms`); the rest of its wall time is the round trip.
//
//   build/tests/cluster/step_latency_bench [--benchmark_repetitions=5]   (from the repo root)
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "coordinator/local_cluster.h"
#include "coordinator/sequence_driver.h"
#include "ops/linear.h"
#include "parallel/communicator.h"
#include "tests/model/golden_reference.h"
#include "worker/model_shard.h"

namespace gemmaserve {
namespace {

namespace pb = internal::v1;

constexpr int64_t kBlockSize = 16;
constexpr int64_t kNumBlocks = 4;  // one sequence of up to 64 tokens
using StepFn = coordinator::SequenceDriver::StepFn;

// Prefills golden sequence 0 (40 tokens), then times one decode step at position 40, rewriting
// the same KV slot every iteration so the context stays the same.
// The KV cache is laid out as `pages` lays it out.
void BM_DecodeStep(benchmark::State& state, const StepFn& step, const std::vector<int32_t>& prompt,
                   const model::KvPages& pages) {
  pb::StepPlan plan;
  pb::SequencePlan* seq = plan.add_sequences();
  seq->set_sequence_id(0);
  const model::BlockRuns runs(pages, kNumBlocks);
  for (int b = 0; b < kNumBlocks; ++b) {
    seq->add_sliding_blocks(runs.Block(0, model::LayerKind::kSliding, b));
    seq->add_full_blocks(runs.Block(0, model::LayerKind::kFull, b));
  }
  seq->mutable_token_ids()->Add(prompt.begin(), prompt.end());
  plan.set_step_id(1);
  if (absl::StatusOr<pb::StepResult> prefill = step(plan); !prefill.ok()) {
    state.SkipWithError(prefill.status().ToString().c_str());
    return;
  }
  seq->clear_token_ids();
  seq->add_token_ids(prompt.back());
  seq->set_num_cached(static_cast<int64_t>(prompt.size()));
  seq->set_sample(true);
  double compute_ms = 0;
  for (auto _ : state) {
    plan.set_step_id(plan.step_id() + 1);
    absl::StatusOr<pb::StepResult> result = step(plan);
    if (!result.ok()) {
      state.SkipWithError(result.status().ToString().c_str());
      return;
    }
    compute_ms += result->compute_ms();
  }
  state.counters["worker_compute_ms"] =
      benchmark::Counter(compute_ms / static_cast<double>(state.iterations()));
}

int Main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  ops::SetNumThreads(1);
  parallel::LocalCommunicator comm;
  std::vector<std::unique_ptr<worker::ModelShard>> shards;
  std::vector<std::unique_ptr<coordinator::LocalCluster>> clusters;
  for (const std::string model : {"gemma4-tiny-dense", "gemma4-tiny-moe"}) {
    const std::string dir = "tests/data/" + model;
    const std::vector<int32_t> prompt = testing::LoadGoldenReference(model).inputs[0];
    auto loaded = worker::LoadShard(dir, parallel::ShardPlan::Single());
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s (run from the repository root)\n", loaded.status().ToString().c_str());
      return 1;
    }
    const model::KvPages pages = model::BlockRuns::PagesFor(
        {0, worker::KvLayout(*loaded, kBlockSize).blocks_per_page}, kNumBlocks, /*num_runs=*/1);
    shards.push_back(std::make_unique<worker::ModelShard>(std::move(*loaded), kBlockSize,
                                                          pages.num_pages, comm));
    coordinator::LocalClusterOptions options;
    options.spec.model_dir = dir;
    options.spec.block_size = kBlockSize;
    options.worker_binary = GEMMASERVE_BINARY;
    options.worker_args = {"--threads", "1", "--log-level", "warn", "--kv-cache-mb", "8"};
    auto cluster = coordinator::LocalCluster::Start(options);
    if (!cluster.ok()) {
      std::fprintf(stderr, "%s\n", cluster.status().ToString().c_str());
      return 1;
    }
    clusters.push_back(std::move(*cluster));
    worker::ModelShard* shard = shards.back().get();
    coordinator::WorkerGroup* group = &clusters.back()->group();
    benchmark::RegisterBenchmark(
        absl::StrCat("InProcess/", model).c_str(),
        [shard, prompt](benchmark::State& state) {
          BM_DecodeStep(state, [shard](const pb::StepPlan& p) { return shard->executor().Execute(p); },
                        prompt, shard->cache().pages());
        })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(
        absl::StrCat("CoordinatorPlusOneWorker/", model).c_str(),
        [group, prompt](benchmark::State& state) {
          BM_DecodeStep(state, [group](const pb::StepPlan& p) { return group->Step(p); }, prompt,
                        group->kv_pages());
        })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace
}  // namespace gemmaserve

int main(int argc, char** argv) { return gemmaserve::Main(argc, argv); }
