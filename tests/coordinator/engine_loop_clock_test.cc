// The engine loop stepped by hand: no thread (the test calls RunOnce), a ManualClock, and a
// scripted step function in place of the workers, so deadlines, latencies and stop conditions are
// checked exactly and without sleeping. The fake model answers each sampled sequence with 10 plus
// the position of the new token: a 3-token prompt gives 13, 14, 15, ...
#include <memory>
#include <string>
#include <vector>

#include "coordinator/engine_loop.h"
#include "gtest/gtest.h"
#include "tests/test_util/manual_clock.h"

namespace gemmaserve::coordinator {
namespace {

namespace pb = internal::v1;

constexpr int32_t kEos = 16;

struct RecordingObserver final : public EngineObserver {
  void OnStep(const StepReport& report) override { steps.push_back(report.duration); }
  void OnFirstToken(absl::Duration ttft_in, absl::Duration queue_in) override {
    ttft.push_back(ttft_in);
    queue.push_back(queue_in);
  }
  void OnToken(absl::Duration gap) override { inter_token.push_back(gap); }
  void OnFinished(const Usage&, FinishReason reason) override { finished.push_back(reason); }
  void OnLoad(const LoadInfo&) override {}

  std::vector<absl::Duration> steps, ttft, queue, inter_token;
  std::vector<FinishReason> finished;
};

class EngineLoopClockTest : public ::testing::Test {
 protected:
  EngineLoopClockTest() {
    EngineOptions options;
    options.scheduler.block_size = 4;
    options.scheduler.kv_pages = {.num_pages = 128, .blocks_per_page = {1, 1}};
    options.scheduler.sliding_window = 16;
    options.scheduler.max_model_len = 64;
    options.eos_token_ids = {kEos};
    options.recovery_timeout = absl::Seconds(30);
    engine_ = std::make_unique<EngineLoop>(
        options, /*tokenizer=*/nullptr, [this](const pb::StepPlan& plan) { return Step(plan); },
        [this] { return workers_ready_; }, clock_, &observer_);
  }

  absl::StatusOr<pb::StepResult> Step(const pb::StepPlan& plan) {
    plans_.push_back(plan);
    if (lose_workers_) {  // as WorkerGroup::Step when a worker dies mid-step
      lose_workers_ = false;
      workers_ready_ = false;
      return absl::UnavailableError("a worker left");
    }
    clock_.Advance(step_time_);
    pb::StepResult result;
    result.set_step_id(plan.step_id());
    for (const pb::SequencePlan& seq : plan.sequences()) {
      pb::SequenceResult* out = result.add_sequences();
      out->set_sequence_id(seq.sequence_id());
      out->set_token_id(seq.sample() ? 10 + seq.num_cached() + seq.token_ids_size() : -1);
    }
    return result;
  }

  std::shared_ptr<RequestStream> Submit(const std::string& id, int64_t max_tokens,
                                        absl::Time deadline = absl::InfiniteFuture()) {
    Request request;
    request.request_id = id;
    request.prompt_ids = {2, 5, 6};
    request.max_tokens = max_tokens;
    request.deadline = deadline;
    absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine_->Submit(std::move(request));
    EXPECT_TRUE(stream.ok()) << stream.status();
    return stream.ok() ? *stream : nullptr;
  }

  // The tokens of every event queued on `stream`, and the final event if it came.
  static std::pair<std::vector<int32_t>, std::optional<Event>> Take(RequestStream& stream) {
    std::vector<int32_t> tokens;
    std::optional<Event> done;
    for (Event& event : stream.Drain()) {
      tokens.insert(tokens.end(), event.token_ids.begin(), event.token_ids.end());
      if (event.finished) done = std::move(event);
    }
    return {tokens, done};
  }

  void ExpectIdle() {
    const LoadInfo load = engine_->Load();
    EXPECT_EQ(load.running_requests + load.waiting_requests, 0);
    EXPECT_EQ(load.used_sliding_blocks + load.used_full_blocks, 0);
  }

  // A request for the 3-token prompt {2, 5, 6} that ignores EOS.
  std::shared_ptr<RequestStream> SubmitIgnoringEos(const std::string& id, int64_t max_tokens) {
    Request request;
    request.request_id = id;
    request.prompt_ids = {2, 5, 6};
    request.max_tokens = max_tokens;
    request.ignore_eos = true;
    absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine_->Submit(std::move(request));
    EXPECT_TRUE(stream.ok()) << stream.status();
    return stream.ok() ? *stream : nullptr;
  }

  testing::ManualClock clock_;
  absl::Duration step_time_ = absl::ZeroDuration();  // each step advances the clock this much
  bool workers_ready_ = true;
  bool lose_workers_ = false;  // the next step fails as if a worker died, and they turn not ready
  std::vector<pb::StepPlan> plans_;  // every plan the loop ran
  RecordingObserver observer_;
  std::unique_ptr<EngineLoop> engine_;
};

TEST_F(EngineLoopClockTest, ReportsQueueTimeTtftAndInterTokenLatencyFromTheClock) {
  std::shared_ptr<RequestStream> stream = Submit("a", /*max_tokens=*/3);
  clock_.Advance(absl::Milliseconds(100));  // queued
  step_time_ = absl::Milliseconds(30);
  engine_->RunOnce();  // prefill: first scheduled at 100 ms, first token at 130 ms
  step_time_ = absl::Milliseconds(20);
  engine_->RunOnce();  // 150 ms
  engine_->RunOnce();  // 170 ms, max_tokens

  auto [tokens, done] = Take(*stream);
  EXPECT_EQ(tokens, (std::vector<int32_t>{13, 14, 15}));
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->finish_reason, FinishReason::kLength);
  EXPECT_EQ(done->usage.completion_tokens, 3);
  EXPECT_DOUBLE_EQ(done->usage.queue_ms, 100);
  EXPECT_DOUBLE_EQ(done->usage.ttft_ms, 130);
  EXPECT_DOUBLE_EQ(done->usage.total_ms, 170);
  EXPECT_EQ(observer_.queue, std::vector<absl::Duration>{absl::Milliseconds(100)});
  EXPECT_EQ(observer_.ttft, std::vector<absl::Duration>{absl::Milliseconds(130)});
  EXPECT_EQ(observer_.inter_token,
            (std::vector<absl::Duration>{absl::Milliseconds(20), absl::Milliseconds(20)}));
  EXPECT_EQ(observer_.steps, (std::vector<absl::Duration>{absl::Milliseconds(30),
                                                          absl::Milliseconds(20),
                                                          absl::Milliseconds(20)}));
  ExpectIdle();
}

TEST_F(EngineLoopClockTest, DeadlinePassingMidGenerationAbortsOnlyThatRequest) {
  std::shared_ptr<RequestStream> late = Submit("late", 10, clock_.Now() + absl::Seconds(1));
  std::shared_ptr<RequestStream> on_time = Submit("on-time", 3);
  engine_->RunOnce();
  EXPECT_EQ(Take(*late).first, std::vector<int32_t>{13});
  clock_.Advance(absl::Seconds(2));
  engine_->RunOnce();

  auto [tokens, done] = Take(*late);
  EXPECT_TRUE(tokens.empty());
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->finish_reason, FinishReason::kAbort);
  EXPECT_EQ(done->error, "deadline exceeded");
  EXPECT_EQ(done->usage.completion_tokens, 1);
  EXPECT_DOUBLE_EQ(done->usage.total_ms, 2000);

  engine_->RunOnce();
  auto [on_time_tokens, on_time_done] = Take(*on_time);
  EXPECT_EQ(on_time_tokens, (std::vector<int32_t>{13, 14, 15}));
  ASSERT_TRUE(on_time_done.has_value());
  EXPECT_EQ(on_time_done->finish_reason, FinishReason::kLength);
  ExpectIdle();
}

TEST_F(EngineLoopClockTest, DeadlinePassedBeforeSchedulingAbortsWithoutAStep) {
  std::shared_ptr<RequestStream> stream = Submit("a", 4, clock_.Now() + absl::Seconds(1));
  clock_.Advance(absl::Seconds(1) + absl::Nanoseconds(1));
  engine_->RunOnce();
  auto [tokens, done] = Take(*stream);
  EXPECT_TRUE(tokens.empty());
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->finish_reason, FinishReason::kAbort);
  EXPECT_EQ(done->usage.completion_tokens, 0);
  EXPECT_DOUBLE_EQ(done->usage.queue_ms, 0);  // never scheduled
  EXPECT_TRUE(observer_.steps.empty());
  EXPECT_EQ(observer_.finished, std::vector<FinishReason>{FinishReason::kAbort});
  ExpectIdle();
}

TEST_F(EngineLoopClockTest, EndsOnAStopIdOnEosAndAtMaxTokens) {
  auto submit = [&](const std::string& id, int64_t max_tokens, std::vector<int32_t> stop_ids,
                    bool ignore_eos) {
    Request request;
    request.request_id = id;
    request.prompt_ids = {2, 5, 6};
    request.max_tokens = max_tokens;
    request.stop_token_ids = std::move(stop_ids);
    request.ignore_eos = ignore_eos;
    return *engine_->Submit(std::move(request));
  };
  std::shared_ptr<RequestStream> stop_id = submit("stop-id", 10, {15}, false);
  std::shared_ptr<RequestStream> eos = submit("eos", 10, {}, false);
  std::shared_ptr<RequestStream> past_eos = submit("past-eos", 5, {}, true);
  for (int i = 0; i < 5; ++i) engine_->RunOnce();

  auto [stop_tokens, stop_done] = Take(*stop_id);
  EXPECT_EQ(stop_tokens, (std::vector<int32_t>{13, 14, 15}));
  ASSERT_TRUE(stop_done.has_value());
  EXPECT_EQ(stop_done->finish_reason, FinishReason::kStop);
  EXPECT_EQ(stop_done->matched_stop, "15");
  auto [eos_tokens, eos_done] = Take(*eos);
  EXPECT_EQ(eos_tokens, (std::vector<int32_t>{13, 14, 15, kEos}));
  ASSERT_TRUE(eos_done.has_value());
  EXPECT_EQ(eos_done->finish_reason, FinishReason::kStop);
  EXPECT_EQ(eos_done->matched_stop, "");
  EXPECT_EQ(eos_done->usage.completion_tokens, 4);
  auto [past_tokens, past_done] = Take(*past_eos);
  EXPECT_EQ(past_tokens, (std::vector<int32_t>{13, 14, 15, kEos, 17}));
  ASSERT_TRUE(past_done.has_value());
  EXPECT_EQ(past_done->finish_reason, FinishReason::kLength);
  ExpectIdle();
}

TEST_F(EngineLoopClockTest, LostWorkersRecomputeRunningRequestsWhichContinueWithoutARepeat) {
  std::shared_ptr<RequestStream> stream = SubmitIgnoringEos("a", /*max_tokens=*/6);
  for (int i = 0; i < 3; ++i) engine_->RunOnce();
  EXPECT_EQ(Take(*stream).first, (std::vector<int32_t>{13, 14, 15}));

  lose_workers_ = true;
  engine_->RunOnce();  // the step fails: the request goes back to waiting, its blocks freed
  EXPECT_FALSE(engine_->Ready());
  LoadInfo load = engine_->Load();
  EXPECT_EQ(load.running_requests, 0);
  EXPECT_EQ(load.waiting_requests, 1);
  EXPECT_EQ(load.used_sliding_blocks + load.used_full_blocks, 0);
  Request fresh;
  fresh.request_id = "b";
  fresh.prompt_ids = {2, 5};
  EXPECT_EQ(engine_->Submit(std::move(fresh)).status().code(), absl::StatusCode::kUnavailable);
  const size_t num_plans = plans_.size();
  engine_->RunOnce();  // nothing is scheduled while the workers are away
  EXPECT_EQ(plans_.size(), num_plans);
  auto [during, not_done] = Take(*stream);
  EXPECT_TRUE(during.empty());
  EXPECT_FALSE(not_done.has_value());

  workers_ready_ = true;
  for (int i = 0; i < 3; ++i) engine_->RunOnce();
  // Recomputed from the prompt plus what it had generated, from position 0 (no prefix reuse of
  // the lost KV), sampling the token after them.
  ASSERT_GT(plans_.size(), num_plans);
  const pb::SequencePlan& recompute = plans_[num_plans].sequences(0);
  EXPECT_EQ(recompute.num_cached(), 0);
  EXPECT_EQ(std::vector<int32_t>(recompute.token_ids().begin(), recompute.token_ids().end()),
            (std::vector<int32_t>{2, 5, 6, 13, 14, 15}));
  EXPECT_TRUE(recompute.sample());
  auto [after, done] = Take(*stream);
  EXPECT_EQ(after, (std::vector<int32_t>{16, 17, 18}));
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->finish_reason, FinishReason::kLength);
  EXPECT_EQ(done->usage.completion_tokens, 6);
  ExpectIdle();
}

TEST_F(EngineLoopClockTest, RequestsFailUnavailableWhenTheWorkersStayAwayPastTheRecoveryTimeout) {
  std::shared_ptr<RequestStream> stream = SubmitIgnoringEos("a", /*max_tokens=*/6);
  engine_->RunOnce();
  lose_workers_ = true;
  engine_->RunOnce();
  clock_.Advance(absl::Seconds(30));
  engine_->RunOnce();
  EXPECT_FALSE(Take(*stream).second.has_value()) << "failed within the recovery timeout";
  clock_.Advance(absl::Seconds(1));
  engine_->RunOnce();
  auto [tokens, done] = Take(*stream);
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->finish_reason, FinishReason::kError);
  EXPECT_EQ(done->error_code, absl::StatusCode::kUnavailable);
  EXPECT_NE(done->error.find("did not come back"), std::string::npos) << done->error;
  ExpectIdle();
}

TEST_F(EngineLoopClockTest, StopAbortsRequestsStillInTheInbox) {
  std::shared_ptr<RequestStream> stream = Submit("a", 4);
  engine_->Stop();
  auto [tokens, done] = Take(*stream);
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->finish_reason, FinishReason::kAbort);
  EXPECT_EQ(done->error, "the server stopped");
  EXPECT_EQ(engine_->Submit(Request()).status().code(), absl::StatusCode::kUnavailable);
  ExpectIdle();
}

}  // namespace
}  // namespace gemmaserve::coordinator
