// The engine loop end to end in one process: requests → scheduler → StepPlans → a real model
// shard (the tiny golden checkpoints) → tokens streamed back. Checks that continuous batching,
// chunked prefill, preemption, prefix caching and aborts never change a sequence's tokens and never
// leak a KV block.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "coordinator/engine_loop.h"
#include "gtest/gtest.h"
#include "tests/model/golden_reference.h"
#include "worker/model_shard.h"

namespace gemmaserve::coordinator {
namespace {

constexpr int64_t kBlockSize = 16;

struct Collected {
  std::vector<int32_t> tokens;
  Event final;
};

Collected Collect(RequestStream& stream) {
  Collected out;
  while (true) {
    std::optional<Event> event = stream.Next(absl::Seconds(60));
    if (!event) {
      ADD_FAILURE() << "no event within 60 s";
      return out;
    }
    out.tokens.insert(out.tokens.end(), event->token_ids.begin(), event->token_ids.end());
    if (event->finished) {
      out.final = std::move(*event);
      return out;
    }
  }
}

class EngineLoopTest : public ::testing::Test {
 protected:
  void StartEngine(const std::string& model, int64_t num_pages, int64_t max_tokens_per_step = 64,
                   int64_t max_num_seqs = 256, std::function<bool()> ready = [] { return true; }) {
    ref_ = testing::LoadGoldenReference(model);
    auto loaded = worker::LoadShard("tests/data/" + model, parallel::ShardPlan::Single());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const int64_t window = loaded->config.sliding_window;
    shard_ = std::make_unique<worker::ModelShard>(std::move(*loaded), kBlockSize, num_pages, comm_);
    EngineOptions options;
    options.scheduler.block_size = kBlockSize;
    options.scheduler.kv_pages = shard_->cache().pages();
    options.scheduler.sliding_window = window;
    options.scheduler.max_model_len = 256;
    options.scheduler.max_tokens_per_step = max_tokens_per_step;
    options.scheduler.max_num_seqs = max_num_seqs;
    options.eos_token_ids = {1};
    engine_ = std::make_unique<EngineLoop>(
        options, nullptr,
        [this](const internal::v1::StepPlan& plan) {
          if (on_step_) on_step_();
          if (step_override_) return step_override_(plan);
          return shard_->executor().Execute(plan);
        },
        std::move(ready), clock_);
    engine_->Start();
  }

  Request Greedy(size_t sequence, int64_t max_tokens = 16, const std::string& id = "") {
    Request request;
    request.request_id = id.empty() ? "req-" + std::to_string(next_id_++) : id;
    request.prompt_ids = ref_.inputs[sequence];
    request.max_tokens = max_tokens;
    request.ignore_eos = true;
    return request;  // SamplingParams default: temperature 0, greedy
  }

  void ExpectNoBlocksUsed() {
    // The load is published after each iteration; give the loop a moment to publish the last one.
    for (int i = 0; i < 100; ++i) {
      const LoadInfo load = engine_->Load();
      if (load.used_full_blocks == 0 && load.used_sliding_blocks == 0 &&
          load.running_requests == 0 && load.waiting_requests == 0) {
        return;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    const LoadInfo load = engine_->Load();
    ADD_FAILURE() << "blocks still used: sliding " << load.used_sliding_blocks << ", full "
                  << load.used_full_blocks << "; running " << load.running_requests;
  }

  testing::GoldenReference ref_;
  RealClock clock_;
  parallel::LocalCommunicator comm_;
  std::unique_ptr<worker::ModelShard> shard_;
  std::unique_ptr<EngineLoop> engine_;
  std::function<void()> on_step_;  // on the loop thread, before each step runs
  // Runs the step instead of shard_ when set (on the loop thread).
  std::function<absl::StatusOr<internal::v1::StepResult>(const internal::v1::StepPlan&)>
      step_override_;
  int next_id_ = 0;
};

TEST_F(EngineLoopTest, SixtyFourConcurrentRequestsGiveTheGoldenTokens) {
  StartEngine("gemma4-tiny-moe", /*num_pages=*/512);
  std::vector<std::pair<size_t, std::shared_ptr<RequestStream>>> streams;
  for (int i = 0; i < 64; ++i) {
    auto stream = engine_->Submit(Greedy(i % 4));
    ASSERT_TRUE(stream.ok()) << stream.status();
    streams.push_back({i % 4, *stream});
  }
  for (auto& [sequence, stream] : streams) {
    Collected out = Collect(*stream);
    EXPECT_EQ(out.tokens, ref_.greedy[sequence]);
    EXPECT_EQ(out.final.finish_reason, FinishReason::kLength);
    EXPECT_EQ(out.final.usage.completion_tokens, 16);
  }
  ExpectNoBlocksUsed();
}

TEST_F(EngineLoopTest, PreemptionUnderATinyKvBudgetKeepsTokensAndLeaksNothing) {
  // 12 pages of one sliding or two full blocks: a long sequence (40 + 16 tokens) holds 4 full
  // blocks (2 pages) and up to 4 sliding ones, so about 2 fit at once.
  StartEngine("gemma4-tiny-dense", /*num_pages=*/12, /*max_tokens_per_step=*/48);
  std::vector<std::pair<size_t, std::shared_ptr<RequestStream>>> streams;
  for (int i = 0; i < 16; ++i) {
    auto stream = engine_->Submit(Greedy(i % 4));
    ASSERT_TRUE(stream.ok()) << stream.status();
    streams.push_back({i % 4, *stream});
  }
  for (auto& [sequence, stream] : streams) EXPECT_EQ(Collect(*stream).tokens, ref_.greedy[sequence]);
  EXPECT_GT(engine_->Load().preemptions, 0);
  ExpectNoBlocksUsed();
}

TEST_F(EngineLoopTest, AbortMidStreamFreesTheBlocks) {
  StartEngine("gemma4-tiny-moe", /*num_pages=*/64);
  auto stream = engine_->Submit(Greedy(0, /*max_tokens=*/200, "long"));
  ASSERT_TRUE(stream.ok());
  std::optional<Event> first = (*stream)->Next(absl::Seconds(30));
  ASSERT_TRUE(first.has_value());
  EXPECT_FALSE(first->finished);
  engine_->Abort("long");
  Collected rest = Collect(**stream);
  EXPECT_EQ(rest.final.finish_reason, FinishReason::kAbort);
  ExpectNoBlocksUsed();
}

TEST_F(EngineLoopTest, LoadCountsARequestFromSubmitToItsFinalEvent) {
  // Clients poll Load() to see a request's blocks come back (the integration tests' WaitIdle):
  // it must never show an idle engine while a request is queued or its step is running.
  StartEngine("gemma4-tiny-moe", /*num_pages=*/64);
  std::vector<LoadInfo> during_steps;
  // The first step waits until the load after Submit was read: a request of four tiny steps can
  // otherwise be over before the test thread gets to ask.
  absl::Notification submitted_read;
  on_step_ = [this, &during_steps, &submitted_read] {
    submitted_read.WaitForNotification();
    during_steps.push_back(engine_->Load());
  };
  auto stream = engine_->Submit(Greedy(0, /*max_tokens=*/4));
  ASSERT_TRUE(stream.ok());
  const LoadInfo submitted = engine_->Load();
  submitted_read.Notify();
  EXPECT_EQ(submitted.running_requests + submitted.waiting_requests, 1);
  Collect(**stream);
  ASSERT_FALSE(during_steps.empty());
  for (size_t i = 0; i < during_steps.size(); ++i) {
    EXPECT_EQ(during_steps[i].running_requests, 1) << "step " << i;
    EXPECT_GT(during_steps[i].used_full_blocks, 0) << "step " << i;
  }
  ExpectNoBlocksUsed();
}

TEST_F(EngineLoopTest, RepeatedPromptHitsThePrefixCache) {
  StartEngine("gemma4-tiny-moe", /*num_pages=*/64);
  auto first = engine_->Submit(Greedy(0));
  ASSERT_TRUE(first.ok());
  Collected a = Collect(**first);
  auto second = engine_->Submit(Greedy(0));
  ASSERT_TRUE(second.ok());
  Collected b = Collect(**second);
  EXPECT_EQ(a.tokens, ref_.greedy[0]);
  EXPECT_EQ(b.tokens, ref_.greedy[0]);
  EXPECT_GT(b.final.usage.cached_tokens, 0);
  EXPECT_GT(engine_->Load().prefix_cache_hit_tokens, 0);
}

TEST_F(EngineLoopTest, PromptLogprobsOverChunkedPrefillMatchTheGoldenLogits) {
  // 7 tokens per step: the prompt is prefilled in several chunks, and no boundary may lose one.
  StartEngine("gemma4-tiny-moe", /*num_pages=*/64, /*max_tokens_per_step=*/7);
  Request request = Greedy(0, /*max_tokens=*/2);
  request.prompt_logprobs = true;
  request.sampling.set_top_logprobs(2);
  auto stream = engine_->Submit(request);
  ASSERT_TRUE(stream.ok()) << stream.status();
  std::optional<Event> first = (*stream)->Next(absl::Seconds(60));
  ASSERT_TRUE(first.has_value());
  const std::vector<int32_t>& prompt = ref_.inputs[0];
  ASSERT_GT(prompt.size(), 14u);
  ASSERT_EQ(first->prompt_logprobs.size(), prompt.size() - 1);
  ASSERT_EQ(first->prompt_top_logprobs.size(), prompt.size() - 1);
  for (size_t j = 1; j < prompt.size(); ++j) {
    // Token j's logprob under the golden logits of position j − 1.
    const std::vector<float>& logits = ref_.seq0_all_logits[j - 1];
    double sum = 0.0;
    for (float logit : logits) sum += std::exp(static_cast<double>(logit));
    const internal::v1::TokenLogprob& got = first->prompt_logprobs[j - 1];
    EXPECT_EQ(got.token_id(), prompt[j]);
    EXPECT_NEAR(got.logprob(), logits[prompt[j]] - std::log(sum), 2e-3) << "token " << j;
    const int32_t best = static_cast<int32_t>(
        std::max_element(logits.begin(), logits.end()) - logits.begin());
    ASSERT_EQ(first->prompt_top_logprobs[j - 1].size(), 2u);
    EXPECT_EQ(first->prompt_top_logprobs[j - 1][0].token_id(), best) << "token " << j;
  }
  Collected rest = Collect(**stream);
  EXPECT_TRUE(rest.final.finished);
  ExpectNoBlocksUsed();
}

TEST_F(EngineLoopTest, RejectsWhatCanNeverRunAndKeepsServing) {
  StartEngine("gemma4-tiny-moe", /*num_pages=*/64);
  // Steps wait until the duplicate is refused: the first "dup" must still be live then (the tiny
  // model would otherwise finish its 16 tokens first on a busy machine).
  std::atomic<bool> duplicate_refused{false};
  step_override_ = [&](const internal::v1::StepPlan& plan)
      -> absl::StatusOr<internal::v1::StepResult> {
    while (!duplicate_refused) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return shard_->executor().Execute(plan);
  };
  Request too_long = Greedy(0, /*max_tokens=*/1000);
  EXPECT_EQ(engine_->Submit(too_long).status().code(), absl::StatusCode::kInvalidArgument);
  auto live = engine_->Submit(Greedy(1, 16, "dup"));
  const absl::StatusCode duplicate = engine_->Submit(Greedy(1, 16, "dup")).status().code();
  duplicate_refused = true;
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(duplicate, absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(Collect(**live).tokens, ref_.greedy[1]);
}

TEST_F(EngineLoopTest, WorkersLostMidGenerationComeBackAndEveryStreamEndsWithTheGoldenTokens) {
  // The workers fail at the 6th step and come back 200 ms later with an empty KV cache (a fresh
  // shard): each running sequence must be recomputed from its prompt and tokens, not from KV.
  std::atomic<bool> ready{true};
  std::thread revive;
  int num_steps = 0;
  StartEngine("gemma4-tiny-moe", /*num_pages=*/128, /*max_tokens_per_step=*/64,
              /*max_num_seqs=*/256, [&ready] { return ready.load(); });
  step_override_ = [&](const internal::v1::StepPlan& plan)
      -> absl::StatusOr<internal::v1::StepResult> {
    if (++num_steps != 6) return shard_->executor().Execute(plan);
    ready = false;
    auto loaded = worker::LoadShard("tests/data/gemma4-tiny-moe", parallel::ShardPlan::Single());
    shard_ = std::make_unique<worker::ModelShard>(std::move(*loaded), kBlockSize, 128, comm_);
    revive = std::thread([&ready] {
      absl::SleepFor(absl::Milliseconds(200));
      ready = true;
    });
    return absl::UnavailableError("a worker left");
  };
  std::vector<std::pair<size_t, std::shared_ptr<RequestStream>>> streams;
  for (int i = 0; i < 8; ++i) {
    auto stream = engine_->Submit(Greedy(i % 4));
    ASSERT_TRUE(stream.ok()) << stream.status();
    streams.push_back({i % 4, *stream});
  }
  while (ready) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(engine_->Submit(Greedy(0)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(engine_->Ready());
  for (auto& [sequence, stream] : streams) {
    const Collected out = Collect(*stream);
    EXPECT_EQ(out.tokens, ref_.greedy[sequence]) << "sequence " << sequence;
    EXPECT_EQ(out.final.finish_reason, FinishReason::kLength);
  }
  revive.join();
  EXPECT_GT(num_steps, 6);
  ExpectNoBlocksUsed();
}

TEST_F(EngineLoopTest, DrainRefusesNewRequestsAndFinishesRunningOnes) {
  StartEngine("gemma4-tiny-moe", /*num_pages=*/64);
  auto running = engine_->Submit(Greedy(2));
  ASSERT_TRUE(running.ok());
  EXPECT_TRUE(engine_->Drain(absl::Seconds(60)));
  EXPECT_FALSE(engine_->Ready());
  EXPECT_EQ(engine_->Submit(Greedy(2)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Collect(**running).tokens, ref_.greedy[2]);
}

}  // namespace
}  // namespace gemmaserve::coordinator
