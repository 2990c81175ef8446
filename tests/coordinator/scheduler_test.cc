#include "coordinator/scheduler.h"

#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/config.h"
#include "model/forward_batch.h"
#include "tests/coordinator/block_invariants.h"

namespace gemmaserve::coordinator {
namespace {

namespace pb = internal::v1;

constexpr int kSliding = static_cast<int>(model::LayerKind::kSliding);
constexpr int kFull = static_cast<int>(model::LayerKind::kFull);

// Token ids below the tiny model's vocabulary of 512.
std::vector<int32_t> Tokens(int64_t count, int32_t first) {
  std::vector<int32_t> tokens(count);
  for (int64_t i = 0; i < count; ++i) tokens[i] = static_cast<int32_t>((first + i) % 500) + 1;
  return tokens;
}

// The fake worker's sample: a function of the sequence and position only, like a seeded sampler,
// so a recomputed sequence continues with the tokens it would have had.
int32_t FakeToken(uint64_t sequence_id, int64_t position) {
  return static_cast<int32_t>((sequence_id * 131 + position * 7 + 3) % 500) + 1;
}

// The fake worker's logprob of prompt token `position`: recognisable, so a lost, repeated or
// misplaced one shows.
float FakePromptLogprob(uint64_t sequence_id, int64_t position) {
  return -0.001f * static_cast<float>(position) - static_cast<float>(sequence_id);
}

// Small blocks and the tiny model's window of 16, so a few tokens cross blocks and windows.
SchedulerOptions SmallOptions() {
  SchedulerOptions options;
  options.max_num_seqs = 8;
  options.max_tokens_per_step = 32;
  options.max_waiting = 16;
  options.block_size = 4;
  options.kv_pages = {.num_pages = 128, .blocks_per_page = {1, 1}};
  options.sliding_window = 16;
  options.max_model_len = 256;
  return options;
}

// Drives a Scheduler the way the engine loop does, with a fake worker, and checks the invariants
// (block_invariants.h, queue bookkeeping) after every call and every plan against the worker's
// own validation, ForwardBatch::Finalize with the tiny model's config.
class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<model::Gemma4Config> config =
        model::Gemma4Config::FromModelDir("tests/data/gemma4-tiny-moe");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *std::move(config);
    Make(SmallOptions());
  }

  void Make(const SchedulerOptions& options) {
    ASSERT_EQ(options.sliding_window, config_.sliding_window);
    scheduler_ = std::make_unique<Scheduler>(options);
  }

  absl::Status TryAdd(std::vector<int32_t> prompt, int64_t max_tokens, uint64_t id,
                      bool prompt_logprobs = false) {
    Request request;
    request.prompt_ids = std::move(prompt);
    request.max_tokens = max_tokens;
    request.prompt_logprobs = prompt_logprobs;
    const absl::Status status = scheduler_->Add(std::make_unique<Sequence>(id, std::move(request)));
    if (status.ok()) live_.insert(id);
    CheckAll();
    return status;
  }

  uint64_t Submit(std::vector<int32_t> prompt, int64_t max_tokens, bool prompt_logprobs = false) {
    const uint64_t id = next_id_++;
    const absl::Status status = TryAdd(std::move(prompt), max_tokens, id, prompt_logprobs);
    EXPECT_TRUE(status.ok()) << status;
    return id;
  }

  ScheduledStep Schedule() {
    ScheduledStep step = scheduler_->Schedule();
    CheckAll();
    CheckPlan(step);
    return step;
  }

  // Postprocesses the fake worker's result, then finishes what reached max_tokens or sampled a
  // stop token, as the engine would.
  void Complete(const ScheduledStep& step) {
    pb::StepResult result;
    result.set_step_id(step.plan.step_id());
    for (const pb::SequencePlan& plan : step.plan.sequences()) {
      pb::SequenceResult* out = result.add_sequences();
      out->set_sequence_id(plan.sequence_id());
      out->set_token_id(plan.sample() ? FakeToken(plan.sequence_id(),
                                                  plan.num_cached() + plan.token_ids_size())
                                      : -1);
      if (!plan.prompt_logprobs()) continue;
      // As the real worker: row i predicts the step's token i + 1, the last row the next prompt
      // token when the plan names it.
      const int rows = plan.token_ids_size();
      for (int i = 0; i + 1 < rows + (plan.has_next_prompt_token_id() ? 1 : 0); ++i) {
        pb::TokenLogprob* entry = out->add_prompt_logprobs();
        entry->set_token_id(i + 1 < rows ? plan.token_ids(i + 1) : plan.next_prompt_token_id());
        entry->set_logprob(FakePromptLogprob(plan.sequence_id(), plan.num_cached() + 1 + i));
      }
    }
    scheduler_->Postprocess(step, result);
    CheckAll();
    for (const ScheduledSequence& scheduled : step.sequences) {
      const Sequence* seq = scheduler_->Find(scheduled.sequence_id);
      if (seq == nullptr || !scheduled.sample) continue;
      const bool stopped = stop_token_ != 0 && seq->token_ids.back() % stop_token_ == 0;
      if (stopped || seq->num_output_tokens() >= seq->request.max_tokens) {
        std::unique_ptr<Sequence> done = scheduler_->Finish(scheduled.sequence_id);
        EXPECT_EQ(done->status, SequenceStatus::kFinished);
        live_.erase(done->id);
        finished_[done->id] = std::move(done);
        CheckAll();
      }
    }
  }

  ScheduledStep Step() {
    ScheduledStep step = Schedule();
    Complete(step);
    return step;
  }

  void Abort(uint64_t id) {
    std::unique_ptr<Sequence> seq = scheduler_->Abort(id);
    ASSERT_NE(seq, nullptr);
    EXPECT_EQ(seq->status, SequenceStatus::kFinished);
    EXPECT_TRUE(seq->block_tables[kSliding].empty() && seq->block_tables[kFull].empty());
    live_.erase(id);
    CheckAll();
  }

  // Runs steps until nothing is left, at most `max_steps`.
  void Drain(int max_steps) {
    for (int i = 0; i < max_steps && scheduler_->HasWork(); ++i) {
      const ScheduledStep step = Step();
      ASSERT_FALSE(step.empty()) << "work left but nothing scheduled";
    }
    ASSERT_FALSE(scheduler_->HasWork());
  }

  void CheckAll() {
    std::vector<const Sequence*> live;
    int64_t num_running = 0;
    for (uint64_t id : live_) {
      const Sequence* seq = scheduler_->Find(id);
      ASSERT_NE(seq, nullptr) << "sequence " << id;
      live.push_back(seq);
      if (seq->status == SequenceStatus::kRunning) {
        ++num_running;
        ASSERT_GE(seq->num_uncomputed(), 1) << "sequence " << id;
      } else {
        ASSERT_EQ(seq->status, SequenceStatus::kWaiting) << "sequence " << id;
        ASSERT_EQ(seq->num_computed, 0) << "sequence " << id;
        ASSERT_TRUE(seq->block_tables[kSliding].empty() && seq->block_tables[kFull].empty());
      }
    }
    ASSERT_EQ(scheduler_->num_running(), num_running);
    ASSERT_EQ(scheduler_->num_running() + scheduler_->num_waiting(),
              static_cast<int64_t>(live_.size()));
    ASSERT_LE(scheduler_->num_running(), scheduler_->options().max_num_seqs);
    ASSERT_TRUE(CheckBlockInvariants(scheduler_->block_manager(), live));
  }

  // The plan is what the scheduler said it is, within budget, and passes the worker's validation.
  void CheckPlan(const ScheduledStep& step) {
    ASSERT_EQ(step.plan.sequences_size(), static_cast<int>(step.sequences.size()));
    if (step.empty()) return;
    EXPECT_EQ(step.plan.step_id(), ++last_step_id_);
    int64_t num_tokens = 0;
    model::ForwardBatch batch;
    for (size_t i = 0; i < step.sequences.size(); ++i) {
      const ScheduledSequence& scheduled = step.sequences[i];
      const pb::SequencePlan& plan = step.plan.sequences(static_cast<int>(i));
      const Sequence* seq = scheduler_->Find(scheduled.sequence_id);
      ASSERT_NE(seq, nullptr);
      ASSERT_EQ(plan.sequence_id(), seq->id);
      ASSERT_EQ(plan.token_ids_size(), scheduled.num_tokens);
      ASSERT_EQ(plan.num_cached(), seq->num_computed);
      EXPECT_EQ(plan.sample(), scheduled.sample);
      EXPECT_EQ(plan.sample(), seq->num_computed + scheduled.num_tokens == seq->num_tokens());
      for (int t = 0; t < plan.token_ids_size(); ++t) {
        ASSERT_EQ(plan.token_ids(t), seq->token_ids[seq->num_computed + t]);
      }
      num_tokens += scheduled.num_tokens;
      batch.token_ids.insert(batch.token_ids.end(), plan.token_ids().begin(),
                             plan.token_ids().end());
      model::BatchSequence entry;
      entry.num_cached = plan.num_cached();
      entry.num_tokens = plan.token_ids_size();
      entry.block_tables[kSliding].assign(plan.sliding_blocks_start(), -1);
      entry.block_tables[kSliding].insert(entry.block_tables[kSliding].end(),
                                          plan.sliding_blocks().begin(), plan.sliding_blocks().end());
      entry.block_tables[kFull].assign(plan.full_blocks().begin(), plan.full_blocks().end());
      batch.sequences.push_back(std::move(entry));
    }
    const SchedulerOptions& options = scheduler_->options();
    EXPECT_LE(num_tokens, options.max_tokens_per_step);
    EXPECT_LE(step.plan.sequences_size(), options.max_num_seqs);
    const absl::Status valid =
        batch.Finalize(config_, {.block_size = options.block_size,
                                 .num_blocks = {options.kv_pages.num_blocks(model::LayerKind::kSliding),
                                                options.kv_pages.num_blocks(model::LayerKind::kFull)},
                                 .block_stride = {options.block_size, options.block_size}});
    EXPECT_TRUE(valid.ok()) << valid << "\n" << step.plan.DebugString();
  }

  const Sequence& Get(uint64_t id) const {
    const Sequence* seq = scheduler_->Find(id);
    return seq != nullptr ? *seq : *finished_.at(id);
  }

  model::Gemma4Config config_;
  std::unique_ptr<Scheduler> scheduler_;
  uint64_t next_id_ = 1;
  uint64_t last_step_id_ = 0;
  int32_t stop_token_ = 0;  // sampled ids divisible by it stop a sequence; 0 = none
  std::set<uint64_t> live_;
  std::map<uint64_t, std::unique_ptr<Sequence>> finished_;
};

TEST_F(SchedulerTest, ChunkedPrefillSplitsLongPromptAndSamplesOnlyOnLastChunk) {
  SchedulerOptions options = SmallOptions();
  options.max_tokens_per_step = 8;
  Make(options);
  const uint64_t id = Submit(Tokens(20, 1), 2);
  const std::vector<std::pair<int64_t, int64_t>> chunks = {{0, 8}, {8, 8}, {16, 4}, {20, 1}};
  for (const auto& [num_cached, num_tokens] : chunks) {
    const ScheduledStep step = Step();
    ASSERT_EQ(step.plan.sequences_size(), 1);
    EXPECT_EQ(step.plan.sequences(0).num_cached(), num_cached);
    EXPECT_EQ(step.plan.sequences(0).token_ids_size(), num_tokens);
    EXPECT_EQ(step.plan.sequences(0).sample(), num_cached + num_tokens >= 20);
  }
  EXPECT_EQ(Get(id).status, SequenceStatus::kFinished);
  EXPECT_EQ(Get(id).token_ids.size(), 22u);
  EXPECT_FALSE(scheduler_->HasWork());
}

TEST_F(SchedulerTest, DecodesComeBeforePrefills) {
  SchedulerOptions options = SmallOptions();
  options.max_tokens_per_step = 8;
  Make(options);
  const uint64_t a = Submit(Tokens(5, 1), 10);
  Step();
  const uint64_t b = Submit(Tokens(20, 50), 4);
  const uint64_t c = Submit(Tokens(3, 90), 4);
  for (int i = 0; i < 2; ++i) {
    const ScheduledStep step = Step();
    ASSERT_EQ(step.sequences.size(), 2u);
    EXPECT_EQ(step.sequences[0].sequence_id, a);  // the decode
    EXPECT_EQ(step.sequences[0].num_tokens, 1);
    EXPECT_TRUE(step.sequences[0].sample);
    EXPECT_EQ(step.sequences[1].sequence_id, b);  // the prefill gets what is left
    EXPECT_EQ(step.sequences[1].num_tokens, 7);
    EXPECT_FALSE(step.sequences[1].sample);
  }
  EXPECT_EQ(Get(c).status, SequenceStatus::kWaiting);
  // b's last 6 prompt tokens, then c's prompt fills the rest of the budget.
  const ScheduledStep step = Step();
  ASSERT_EQ(step.sequences.size(), 3u);
  EXPECT_EQ(step.sequences[1].sequence_id, b);
  EXPECT_EQ(step.sequences[1].num_tokens, 6);
  EXPECT_TRUE(step.sequences[1].sample);
  EXPECT_EQ(step.sequences[2].sequence_id, c);
  EXPECT_EQ(step.sequences[2].num_tokens, 1);
  Drain(100);
}

TEST_F(SchedulerTest, RespectsTokenBudgetAndSeqCap) {
  SchedulerOptions options = SmallOptions();
  options.max_tokens_per_step = 10;
  options.max_num_seqs = 2;
  Make(options);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(Submit(Tokens(8, 10 * i), 3));
  const ScheduledStep first = Step();
  ASSERT_EQ(first.sequences.size(), 2u);
  EXPECT_EQ(first.sequences[0].num_tokens, 8);
  EXPECT_EQ(first.sequences[1].num_tokens, 2);
  EXPECT_EQ(scheduler_->num_running(), 2);
  EXPECT_EQ(scheduler_->num_waiting(), 2);
  Drain(100);  // CheckPlan holds every step to 10 tokens and 2 sequences
  for (uint64_t id : ids) EXPECT_EQ(Get(id).num_output_tokens(), 3);
}

TEST_F(SchedulerTest, RejectsPastMaxWaiting) {
  SchedulerOptions options = SmallOptions();
  options.max_waiting = 2;
  options.kv_pages = {.num_pages = 16, .blocks_per_page = {1, 1}};
  options.max_model_len = 64;
  Make(options);
  EXPECT_TRUE(TryAdd(Tokens(4, 1), 4, 1).ok());
  EXPECT_TRUE(TryAdd(Tokens(4, 1), 4, 2).ok());
  EXPECT_EQ(TryAdd(Tokens(4, 1), 4, 3).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(TryAdd(Tokens(4, 1), 4, 1).code(), absl::StatusCode::kAlreadyExists);
  // Sequences that could never run are rejected whatever the queue holds.
  EXPECT_EQ(TryAdd({}, 4, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TryAdd(Tokens(4, 1), 0, 5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TryAdd(Tokens(60, 1), 10, 6).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TryAdd(Tokens(30, 1), 4, 7).code(), absl::StatusCode::kInvalidArgument);  // 9 blocks
  Step();  // both admitted: the queue has room again
  EXPECT_TRUE(TryAdd(Tokens(4, 1), 4, 3).ok());
  Drain(100);
}

TEST_F(SchedulerTest, AbortFreesEverything) {
  SchedulerOptions options = SmallOptions();
  options.max_num_seqs = 2;
  Make(options);
  const uint64_t a = Submit(Tokens(30, 1), 50);
  const uint64_t b = Submit(Tokens(9, 100), 50);
  const uint64_t c = Submit(Tokens(9, 200), 50);
  Step();
  Step();
  EXPECT_EQ(Get(c).status, SequenceStatus::kWaiting);
  Abort(c);
  // An abort between Schedule and Postprocess: the result for it is skipped.
  const ScheduledStep step = Schedule();
  Abort(a);
  Complete(step);
  EXPECT_GT(scheduler_->block_manager().num_used(model::LayerKind::kFull), 0);
  Abort(b);
  EXPECT_EQ(scheduler_->Abort(b), nullptr);
  const LoadInfo load = scheduler_->Load();
  EXPECT_EQ(load.running_requests + load.waiting_requests, 0);
  EXPECT_EQ(load.used_sliding_blocks, 0);
  EXPECT_EQ(load.used_full_blocks, 0);
  EXPECT_FALSE(scheduler_->HasWork());
  EXPECT_TRUE(Schedule().empty());
}

TEST_F(SchedulerTest, RepeatedPromptHitsPrefixCache) {
  const uint64_t a = Submit(Tokens(22, 1), 2);
  Drain(10);
  EXPECT_EQ(Get(a).num_cached_tokens, 0);
  const uint64_t b = Submit(Tokens(22, 1), 2);
  const ScheduledStep step = Step();
  ASSERT_EQ(step.plan.sequences_size(), 1);
  EXPECT_EQ(step.plan.sequences(0).num_cached(), 20);  // five complete blocks
  EXPECT_EQ(step.plan.sequences(0).token_ids_size(), 2);
  EXPECT_EQ(Get(b).num_cached_tokens, 20);
  EXPECT_EQ(scheduler_->Load().prefix_cache_hit_tokens, 20);
  EXPECT_EQ(scheduler_->Load().prefix_cache_queried_tokens, 44);
  Drain(10);
  EXPECT_EQ(std::vector<int32_t>(Get(a).token_ids.begin(), Get(a).token_ids.begin() + 22),
            std::vector<int32_t>(Get(b).token_ids.begin(), Get(b).token_ids.begin() + 22));
}

TEST_F(SchedulerTest, SlidingBlocksFreedOutsideWindow) {
  const uint64_t id = Submit(Tokens(4, 1), 120);
  int64_t max_used_full = 0;
  while (scheduler_->HasWork()) {
    const ScheduledStep step = Step();
    const BlockManager& blocks = scheduler_->block_manager();
    // Blocks of the window (15 positions before the next token, at most 5 blocks) and no more.
    EXPECT_LE(blocks.num_used(model::LayerKind::kSliding), 5);
    max_used_full = std::max(max_used_full, blocks.num_used(model::LayerKind::kFull));
    // The plan sends the window's blocks only, every one of them held.
    const pb::SequencePlan& plan = step.plan.sequences(0);
    EXPECT_EQ(plan.sliding_blocks_start(), blocks.FirstWindowBlock(plan.num_cached()));
    EXPECT_EQ(plan.sliding_blocks_start() + plan.sliding_blocks_size(), plan.full_blocks_size());
    for (int32_t block : plan.sliding_blocks()) EXPECT_GE(block, 0);
  }
  EXPECT_EQ(Get(id).num_output_tokens(), 120);
  EXPECT_EQ(max_used_full, 31);  // positions 0 … 122 are computed
}

TEST_F(SchedulerTest, AloneAndStuckOnItsCachedPrefixASequenceStartsOverWithoutIt) {
  // Pages of one sliding or two full blocks. A and B decode in lockstep, so each page of full
  // blocks holds block i of A and block i of B: A's 20 cached full blocks lie in 20 pages. C
  // repeats A's 84 tokens and adds 32: its hit (80 tokens) revives those 20 pages, which can hold
  // nothing of the sliding group, and the 32-token step needs 4 + 8 sliding pages besides: 32 of
  // 31. Nothing runs that could free a page, so C would wait forever; it starts over without the
  // hit instead (13 pages).
  SchedulerOptions options = SmallOptions();
  options.kv_pages = {.num_pages = 31, .blocks_per_page = {1, 2}};
  Make(options);
  const uint64_t a = Submit(Tokens(4, 1), 80);
  Submit(Tokens(4, 100), 80);
  Drain(200);
  ASSERT_EQ(scheduler_->num_preemptions(), 0);
  std::vector<int32_t> prompt = Get(a).token_ids;
  const std::vector<int32_t> more = Tokens(32, 300);
  prompt.insert(prompt.end(), more.begin(), more.end());
  const uint64_t c = Submit(prompt, 4);
  const BlockManager& blocks = scheduler_->block_manager();
  const PrefixHit hit = blocks.FindCachedPrefix(Get(c));
  ASSERT_EQ(hit.num_tokens, 80);
  ASSERT_FALSE(blocks.CanAllocate(hit, 32)) << "the hit no longer leaves C without pages";

  const ScheduledStep step = Step();
  ASSERT_EQ(step.plan.sequences_size(), 1);
  EXPECT_EQ(step.plan.sequences(0).num_cached(), 0);
  EXPECT_EQ(step.plan.sequences(0).token_ids_size(), 32);
  Drain(100);
  EXPECT_EQ(Get(c).num_cached_tokens, 0);
  EXPECT_EQ(Get(c).num_output_tokens(), 4);
}

TEST_F(SchedulerTest, PreemptsNewestWhenBlocksRunOut) {
  SchedulerOptions options = SmallOptions();
  options.kv_pages = {.num_pages = 16, .blocks_per_page = {1, 1}};
  Make(options);
  const uint64_t a = Submit(Tokens(12, 1), 20);
  const uint64_t b = Submit(Tokens(12, 100), 20);
  // Both prefill (3 blocks each) and decode positions 12 … 15 in a fourth block each; position
  // 16 needs a ninth block.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Step().sequences.size(), 2u);
  EXPECT_EQ(scheduler_->num_preemptions(), 0);
  const ScheduledStep step = Step();
  EXPECT_EQ(scheduler_->num_preemptions(), 1);
  ASSERT_EQ(step.sequences.size(), 1u);
  EXPECT_EQ(step.sequences[0].sequence_id, a);
  EXPECT_EQ(Get(a).status, SequenceStatus::kRunning);
  EXPECT_EQ(Get(b).status, SequenceStatus::kWaiting);
  EXPECT_EQ(Get(b).num_preemptions, 1);
  EXPECT_EQ(scheduler_->Load().preemptions, 1);
  Drain(100);
  EXPECT_EQ(Get(a).num_output_tokens(), 20);
  EXPECT_EQ(Get(b).num_output_tokens(), 20);
}

TEST_F(SchedulerTest, PreemptedSequenceResumesWithSameTokens) {
  SchedulerOptions options = SmallOptions();
  options.kv_pages = {.num_pages = 16, .blocks_per_page = {1, 1}};
  options.enable_prefix_caching = false;  // the recompute starts from position 0
  Make(options);
  Submit(Tokens(12, 1), 20);
  const uint64_t b = Submit(Tokens(12, 100), 20);
  while (scheduler_->num_preemptions() == 0) Step();
  const std::vector<int32_t> kept = Get(b).token_ids;  // prompt and 5 sampled tokens
  ASSERT_EQ(kept.size(), 17u);
  // Recompute: every kept token is prefilled again, and only the chunk reaching the last samples.
  std::vector<int32_t> recomputed;
  while (static_cast<int64_t>(recomputed.size()) < 17) {
    const ScheduledStep step = Step();
    for (const pb::SequencePlan& plan : step.plan.sequences()) {
      if (plan.sequence_id() != b) continue;
      EXPECT_EQ(plan.num_cached(), static_cast<int64_t>(recomputed.size()));
      recomputed.insert(recomputed.end(), plan.token_ids().begin(), plan.token_ids().end());
      EXPECT_EQ(plan.sample(), recomputed.size() == 17u);
    }
  }
  EXPECT_EQ(recomputed, kept);
  Drain(100);
  const Sequence& done = Get(b);
  ASSERT_EQ(done.token_ids.size(), 32u);
  EXPECT_EQ(std::vector<int32_t>(done.token_ids.begin(), done.token_ids.begin() + 17), kept);
  for (int64_t position = 12; position < 32; ++position) {
    EXPECT_EQ(done.token_ids[position], FakeToken(b, position)) << "position " << position;
  }
}

TEST_F(SchedulerTest, RecomputeAllRequeuesRunningInAdmissionOrderAndForgetsThePrefixCache) {
  const uint64_t a = Submit(Tokens(22, 1), 12);
  Drain(20);  // a's blocks stay cached
  ASSERT_GT(scheduler_->block_manager().pool(model::LayerKind::kFull).num_cached(), 0);
  const uint64_t b = Submit(Tokens(22, 1), 12);  // a's prompt: a prefix hit
  const uint64_t c = Submit(Tokens(9, 300), 12);
  for (int i = 0; i < 4; ++i) Step();
  const uint64_t d = Submit(Tokens(5, 400), 12);  // still waiting
  const std::vector<int32_t> b_tokens = Get(b).token_ids;
  const std::vector<int32_t> c_tokens = Get(c).token_ids;
  ASSERT_GT(b_tokens.size(), 22u);
  ASSERT_EQ(Get(d).status, SequenceStatus::kWaiting);

  EXPECT_EQ(scheduler_->RecomputeAll(), 2);
  CheckAll();
  EXPECT_EQ(scheduler_->num_running(), 0);
  EXPECT_EQ(scheduler_->num_waiting(), 3);
  EXPECT_EQ(Get(b).token_ids, b_tokens);
  EXPECT_EQ(Get(c).token_ids, c_tokens);
  EXPECT_EQ(scheduler_->block_manager().pool(model::LayerKind::kFull).num_cached(), 0);
  EXPECT_EQ(scheduler_->block_manager().pool(model::LayerKind::kSliding).num_cached(), 0);

  // Recomputed first, in admission order, from position 0: the lost KV is not reused.
  const ScheduledStep step = Step();
  ASSERT_GE(step.plan.sequences_size(), 2);
  EXPECT_EQ(step.plan.sequences(0).sequence_id(), b);
  EXPECT_EQ(step.plan.sequences(1).sequence_id(), c);
  for (const pb::SequencePlan& plan : step.plan.sequences()) EXPECT_EQ(plan.num_cached(), 0);
  Drain(100);
  for (uint64_t id : {a, b, c, d}) {
    const Sequence& seq = Get(id);
    ASSERT_EQ(seq.num_output_tokens(), 12) << "sequence " << id;
    for (int64_t position = seq.num_prompt_tokens; position < seq.num_tokens(); ++position) {
      EXPECT_EQ(seq.token_ids[position], FakeToken(id, position)) << "sequence " << id;
    }
  }
}

// Every prompt token after the first, in order, with its own logprob.
void ExpectAllPromptLogprobs(const Sequence& seq) {
  ASSERT_EQ(static_cast<int64_t>(seq.prompt_logprobs.size()), seq.num_prompt_tokens - 1)
      << "sequence " << seq.id;
  for (int64_t j = 1; j < seq.num_prompt_tokens; ++j) {
    const pb::TokenLogprob& entry = seq.prompt_logprobs[j - 1];
    EXPECT_EQ(entry.token_id(), seq.token_ids[j]) << "sequence " << seq.id << " token " << j;
    EXPECT_EQ(entry.logprob(), FakePromptLogprob(seq.id, j)) << "sequence " << seq.id;
  }
}

TEST_F(SchedulerTest, PromptLogprobsCrossChunkBoundaries) {
  SchedulerOptions options = SmallOptions();
  options.max_tokens_per_step = 8;
  Make(options);
  const std::vector<int32_t> prompt = Tokens(20, 5);
  const uint64_t id = Submit(prompt, 2, /*prompt_logprobs=*/true);
  // Chunks [0, 8) and [8, 16) name the prompt token after them; [16, 20) reaches the end.
  for (const int64_t end : {8, 16}) {
    const ScheduledStep step = Step();
    ASSERT_EQ(step.plan.sequences_size(), 1);
    const pb::SequencePlan& plan = step.plan.sequences(0);
    EXPECT_TRUE(plan.prompt_logprobs());
    ASSERT_TRUE(plan.has_next_prompt_token_id());
    EXPECT_EQ(plan.next_prompt_token_id(), prompt[end]);
  }
  const ScheduledStep last = Step();
  EXPECT_TRUE(last.plan.sequences(0).prompt_logprobs());
  EXPECT_FALSE(last.plan.sequences(0).has_next_prompt_token_id());
  // Decodes ask for none.
  EXPECT_FALSE(Step().plan.sequences(0).prompt_logprobs());
  ExpectAllPromptLogprobs(Get(id));
}

TEST_F(SchedulerTest, PromptLogprobsSurvivePreemptionInAndAfterPrefill) {
  SchedulerOptions options = SmallOptions();
  options.kv_pages = {.num_pages = 20, .blocks_per_page = {1, 1}};
  options.max_tokens_per_step = 6;
  Make(options);
  std::mt19937 rng(7);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back(Submit(Tokens(6 + rng() % 14, 50 * i), 8 + rng() % 12, /*prompt_logprobs=*/true));
  }
  // Preemptions of sequences still in their prompt, seen between steps.
  int preempted_in_prefill = 0;
  std::map<uint64_t, int64_t> preemptions;
  for (int step = 0; step < 400 && scheduler_->HasWork(); ++step) {
    std::map<uint64_t, bool> in_prefill;
    for (uint64_t id : live_) in_prefill[id] = Get(id).num_output_tokens() == 0;
    Step();
    for (const auto& [id, prefill] : in_prefill) {
      const Sequence& seq = Get(id);
      if (seq.num_preemptions > preemptions[id] && prefill) ++preempted_in_prefill;
      preemptions[id] = seq.num_preemptions;
    }
  }
  ASSERT_FALSE(scheduler_->HasWork());
  EXPECT_GT(preempted_in_prefill, 0);
  EXPECT_GT(scheduler_->num_preemptions(), preempted_in_prefill);  // some after the first token
  for (uint64_t id : ids) ExpectAllPromptLogprobs(Get(id));
}

// Many sequences with shared prefixes and random lengths under a budget of pages that forces
// preemptions; random aborts and stop tokens. Invariants hold after every call, some sequence runs
// whenever there is work, and everything drains to zero used blocks. For pages of one block of
// each group, of several full blocks (Gemma 4: ten) and of several sliding blocks, and for pools
// barely larger than the longest sequence needs (SequencePages of 64 tokens).
class SchedulerPagesTest : public SchedulerTest,
                           public ::testing::WithParamInterface<model::KvPages> {};

INSTANTIATE_TEST_SUITE_P(
    Pages, SchedulerPagesTest,
    ::testing::Values(model::KvPages{.num_pages = 40, .blocks_per_page = {1, 1}},
                      model::KvPages{.num_pages = 26, .blocks_per_page = {1, 3}},
                      model::KvPages{.num_pages = 22, .blocks_per_page = {1, 10}},
                      model::KvPages{.num_pages = 26, .blocks_per_page = {3, 1}},
                      model::KvPages{.num_pages = 17, .blocks_per_page = {1, 3}},
                      model::KvPages{.num_pages = 13, .blocks_per_page = {1, 10}},
                      model::KvPages{.num_pages = 15, .blocks_per_page = {1, 4}}),
    [](const ::testing::TestParamInfo<model::KvPages>& info) {
      return absl::StrCat(info.param.num_pages, "PagesOf", info.param.blocks_per_page[0],
                          "SlidingOr", info.param.blocks_per_page[1], "Full");
    });

TEST_P(SchedulerPagesTest, RandomWorkloadKeepsInvariantsAndDrains) {
  SchedulerOptions options = SmallOptions();
  options.kv_pages = GetParam();
  options.max_tokens_per_step = 24;
  options.max_num_seqs = 5;
  options.max_waiting = 6;
  options.max_model_len = 64;
  Make(options);
  stop_token_ = 37;
  std::mt19937 rng(1234);
  auto uniform = [&rng](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const std::vector<std::vector<int32_t>> bases = {Tokens(48, 1), Tokens(48, 200), Tokens(48, 400)};
  int64_t num_submitted = 0;
  int64_t num_aborted = 0;
  for (int i = 0; i < 600 && !HasFailure(); ++i) {
    if (uniform(0, 1) == 0) {
      const std::vector<int32_t>& base = bases[uniform(0, 2)];
      std::vector<int32_t> prompt(base.begin(), base.begin() + uniform(1, 40));
      if (uniform(0, 2) == 0) prompt.push_back(static_cast<int32_t>(uniform(1, 499)));
      const int64_t max_tokens = uniform(1, 64 - static_cast<int64_t>(prompt.size()));
      const uint64_t id = next_id_++;
      const absl::Status status = TryAdd(std::move(prompt), max_tokens, id);
      if (status.ok()) {
        ++num_submitted;
      } else {
        EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
      }
    }
    if (!live_.empty() && uniform(0, 19) == 0) {
      auto it = live_.begin();
      std::advance(it, uniform(0, static_cast<int64_t>(live_.size()) - 1));
      Abort(*it);
      ++num_aborted;
    }
    const ScheduledStep step = Step();
    if (scheduler_->HasWork()) {
      EXPECT_FALSE(step.empty()) << "work left but nothing scheduled";
    }
    if (uniform(0, 99) == 0) {  // the workers lost the KV cache
      scheduler_->RecomputeAll();
      CheckAll();
    }
  }
  Drain(2000);
  EXPECT_EQ(static_cast<int64_t>(finished_.size()) + num_aborted, num_submitted);
  const LoadInfo load = scheduler_->Load();
  EXPECT_EQ(load.used_sliding_blocks, 0);
  EXPECT_EQ(load.used_full_blocks, 0);
  EXPECT_GT(load.preemptions, 0);
  EXPECT_GT(load.prefix_cache_hit_tokens, 0);
  for (const auto& [id, seq] : finished_) {
    for (int64_t position = seq->num_prompt_tokens; position < seq->num_tokens(); ++position) {
      ASSERT_EQ(seq->token_ids[position], FakeToken(id, position)) << "sequence " << id;
    }
  }
}

}  // namespace
}  // namespace gemmaserve::coordinator
