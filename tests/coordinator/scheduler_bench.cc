// The coordinator's host time per decode step, apart from the model: Scheduler::Schedule (block
// bookkeeping and the StepPlan with every sequence's block tables), serialising the plan as the
// step stream does, parsing it as a worker does, and Postprocess of a result sampling one token
// per sequence. At 32 and 128 sequences over contexts of 1,024 and 32,768 tokens: the block tables
// grow with the context, so the plan does too.
//
//   build/tests/coordinator/scheduler_bench
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "coordinator/scheduler.h"
#include "gemmaserve/internal/v1/worker.pb.h"

namespace gemmaserve::coordinator {
namespace {

namespace pb = internal::v1;

constexpr int64_t kBlockSize = 16;

pb::StepResult SampleOneEach(const ScheduledStep& step) {
  pb::StepResult result;
  result.set_step_id(step.plan.step_id());
  for (const pb::SequencePlan& plan : step.plan.sequences()) {
    pb::SequenceResult* out = result.add_sequences();
    out->set_sequence_id(plan.sequence_id());
    out->set_token_id(plan.sample() ? static_cast<int32_t>(7 + plan.num_cached() % 500) : -1);
  }
  return result;
}

// state.range(0) sequences decoding at a context of state.range(1) tokens (31B's page layout:
// twenty full blocks per page, window 1,024).
void BM_DecodeStepHostTime(benchmark::State& state) {
  const int64_t num_sequences = state.range(0);
  const int64_t context = state.range(1);
  SchedulerOptions options;
  options.block_size = kBlockSize;
  options.sliding_window = 1024;
  options.max_num_seqs = num_sequences;
  options.max_tokens_per_step = 8192;
  options.max_model_len = 262144;
  options.enable_prefix_caching = false;
  // Each sequence may decode to the longest context; the benchmark stops far before.
  const int64_t max_tokens = options.max_model_len - context;
  options.kv_pages = {.num_pages = num_sequences * SequencePages({0, {1, 20}}, kBlockSize, 1024,
                                                                 options.max_model_len, 8192),
                      .blocks_per_page = {1, 20}};
  Scheduler scheduler(options);
  for (int64_t s = 0; s < num_sequences; ++s) {
    Request request;
    request.prompt_ids.resize(context);
    std::iota(request.prompt_ids.begin(), request.prompt_ids.end(), static_cast<int32_t>(s));
    for (int32_t& id : request.prompt_ids) id %= 500;
    request.max_tokens = max_tokens;
    const absl::Status added = scheduler.Add(std::make_unique<Sequence>(s + 1, std::move(request)));
    if (!added.ok()) {
      state.SkipWithError(added.ToString().c_str());
      return;
    }
  }
  // Prefill everything; then every step is a decode of all of them.
  while (true) {
    const ScheduledStep step = scheduler.Schedule();
    scheduler.Postprocess(step, SampleOneEach(step));
    bool prefilling = false;
    for (const ScheduledSequence& s : step.sequences) prefilling |= s.num_tokens > 1;
    if (!prefilling && static_cast<int64_t>(step.sequences.size()) == num_sequences) break;
  }
  std::string wire;
  int64_t plan_bytes = 0;
  for (auto _ : state) {
    const ScheduledStep step = scheduler.Schedule();
    wire.clear();
    step.plan.SerializeToString(&wire);
    pb::StepPlan received;
    received.ParseFromString(wire);
    benchmark::DoNotOptimize(received.sequences_size());
    scheduler.Postprocess(step, SampleOneEach(step));
    plan_bytes = static_cast<int64_t>(wire.size());
  }
  state.counters["plan_KiB"] = static_cast<double>(plan_bytes) / 1024.0;
}
BENCHMARK(BM_DecodeStepHostTime)
    ->ArgsProduct({{1, 32, 128}, {1024, 32768}})
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(2000);

}  // namespace
}  // namespace gemmaserve::coordinator

BENCHMARK_MAIN();
