#include "coordinator/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace gemmaserve::coordinator {
namespace {

namespace pb = internal::v1;

constexpr int kSliding = static_cast<int>(model::LayerKind::kSliding);
constexpr int kFull = static_cast<int>(model::LayerKind::kFull);

// Penalties need the tokens generated so far, and the repetition penalty the prompt too; plans
// carry them only then.
bool NeedsPromptTokens(const pb::SamplingParams& sampling) {
  const float repetition = sampling.repetition_penalty();
  return repetition != 0.0f && repetition != 1.0f;
}

bool NeedsOutputTokens(const pb::SamplingParams& sampling) {
  return NeedsPromptTokens(sampling) || sampling.presence_penalty() != 0.0f ||
         sampling.frequency_penalty() != 0.0f;
}

// Prompt token j (1 ≤ j < num_prompt) gets its logprob from the row of position j − 1, so a step
// computing positions [begin, end) can give those of tokens begin + 1 … min(end, num_prompt − 1).
int64_t LastPredictedPromptToken(const Sequence& seq, int64_t end) {
  return std::min(end, seq.num_prompt_tokens - 1);
}

absl::Status RequirePositive(const char* name, int64_t value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("scheduler option ", name, " must be positive, got ",
                                                 value));
}

}  // namespace

absl::Status SchedulerOptions::Validate() const {
  for (const auto& [name, value] :
       {std::pair<const char*, int64_t>{"max_num_seqs", max_num_seqs},
        {"max_tokens_per_step", max_tokens_per_step},
        {"max_waiting", max_waiting},
        {"block_size", block_size},
        {"kv_pages.num_pages", kv_pages.num_pages},
        {"kv_pages.blocks_per_page[sliding]", kv_pages.blocks_per_page[0]},
        {"kv_pages.blocks_per_page[full]", kv_pages.blocks_per_page[1]},
        {"sliding_window", sliding_window},
        {"max_model_len", max_model_len}}) {
    if (absl::Status status = RequirePositive(name, value); !status.ok()) return status;
  }
  for (model::LayerKind group : {model::LayerKind::kSliding, model::LayerKind::kFull}) {
    if (kv_pages.num_blocks(group) > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(
          "scheduler option kv_pages: ", kv_pages.num_blocks(group), " ",
          model::LayerKindName(group), " blocks do not fit a block id (int32)"));
    }
  }
  if (kv_pages.blocks_per_page[0] != 1 && kv_pages.blocks_per_page[1] != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheduler option kv_pages: a page holds ", kv_pages.blocks_per_page[0],
        " sliding or ", kv_pages.blocks_per_page[1], " full blocks; one of them must be 1"));
  }
  return absl::OkStatus();
}

// The step being planned: who runs how many tokens, and what budget is left.
struct Scheduler::Draft {
  std::vector<ScheduledSequence> sequences;
  int64_t tokens_left = 0;
  bool preempted = false;  // a sequence lost its blocks: admit nobody new this step

  void Add(const Sequence& seq, int64_t num_tokens) {
    sequences.push_back({seq.id, num_tokens, seq.num_computed + num_tokens == seq.num_tokens()});
    tokens_left -= num_tokens;
  }
  void Remove(uint64_t id) {
    const auto it = std::find_if(sequences.begin(), sequences.end(),
                                 [id](const ScheduledSequence& s) { return s.sequence_id == id; });
    if (it == sequences.end()) return;
    tokens_left += it->num_tokens;
    sequences.erase(it);
  }
};

int64_t MaxSequenceTokens(const SchedulerOptions& options, int64_t limit) {
  auto fits = [&options](int64_t tokens) {
    return SequencePages(options.kv_pages, options.block_size, options.sliding_window, tokens,
                         options.max_tokens_per_step) <= options.kv_pages.num_pages;
  };
  if (fits(limit)) return limit;
  int64_t low = 0, high = limit;  // fits(low), !fits(high)
  while (high - low > 1) {
    const int64_t mid = low + (high - low) / 2;
    (fits(mid) ? low : high) = mid;
  }
  return low;
}

Scheduler::Scheduler(const SchedulerOptions& options)
    : options_(options),
      block_manager_(options.kv_pages, options.block_size, options.sliding_window,
                     options.enable_prefix_caching) {
  CHECK_OK(options.Validate());
}

absl::Status Scheduler::Add(std::unique_ptr<Sequence> sequence) {
  CHECK(sequence->status == SequenceStatus::kWaiting && sequence->num_computed == 0 &&
        sequence->block_tables[kFull].empty())
      << "sequence " << sequence->id << " is not new";
  const int64_t num_prompt = sequence->num_prompt_tokens;
  const int64_t max_tokens = sequence->request.max_tokens;
  const int64_t total = num_prompt + max_tokens;
  if (num_prompt == 0) return absl::InvalidArgumentError("prompt is empty");
  if (max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be at least 1, got ", max_tokens));
  }
  if (total > options_.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", num_prompt, " tokens plus max_tokens ",
                                                   max_tokens, " exceeds the context of ",
                                                   options_.max_model_len, " tokens"));
  }
  const int64_t num_pages = block_manager_.PagesFor(total, options_.max_tokens_per_step);
  if (num_pages > options_.kv_pages.num_pages) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", num_prompt, " tokens plus max_tokens ",
                                                   max_tokens, " needs ", num_pages,
                                                   " KV pages but the cache holds ",
                                                   options_.kv_pages.num_pages));
  }
  if (sequences_.contains(sequence->id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", sequence->id, " is already live"));
  }
  if (num_waiting() >= options_.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat(num_waiting(), " requests already wait (max ",
                                                     options_.max_waiting, ")"));
  }
  waiting_.push_back(sequence.get());
  sequences_.emplace(sequence->id, std::move(sequence));
  return absl::OkStatus();
}

ScheduledStep Scheduler::Schedule() {
  Draft draft;
  draft.tokens_left = options_.max_tokens_per_step;
  ScheduleRunning(/*decodes=*/true, draft);
  ScheduleRunning(/*decodes=*/false, draft);
  if (!draft.preempted) ScheduleWaiting(draft);
  return BuildStep(draft);
}

void Scheduler::ScheduleRunning(bool decodes, Draft& draft) {
  // Preemption takes sequences from the back, so running_[i] stays valid.
  for (size_t i = 0; i < running_.size() && draft.tokens_left > 0; ++i) {
    Sequence& seq = *running_[i];
    if ((seq.num_uncomputed() == 1) != decodes) continue;
    const int64_t num_tokens = std::min(seq.num_uncomputed(), draft.tokens_left);
    if (!MakeRoom(seq, num_tokens, draft)) break;
    block_manager_.Append(seq, num_tokens);
    draft.Add(seq, num_tokens);
  }
}

void Scheduler::ScheduleWaiting(Draft& draft) {
  while (!waiting_.empty() && draft.tokens_left > 0 && num_running() < options_.max_num_seqs) {
    Sequence& seq = *waiting_.front();
    // Cached tokens would get no prompt logprobs, so such sequences compute everything.
    PrefixHit hit =
        seq.request.prompt_logprobs ? PrefixHit{} : block_manager_.FindCachedPrefix(seq);
    int64_t num_tokens = std::min(seq.num_tokens() - hit.num_tokens, draft.tokens_left);
    if (!block_manager_.CanAllocate(hit, num_tokens)) {
      // Alone, a sequence always fits in fresh blocks (Add checked), but its cached blocks may
      // be spread over pages that also held others' blocks: then it starts over without them.
      if (!running_.empty() || hit.num_tokens == 0) break;
      hit = PrefixHit{};
      num_tokens = std::min(seq.num_tokens(), draft.tokens_left);
      if (!block_manager_.CanAllocate(hit, num_tokens)) break;
    }
    block_manager_.Allocate(seq, hit, num_tokens);
    waiting_.pop_front();
    seq.status = SequenceStatus::kRunning;
    running_.push_back(&seq);
    draft.Add(seq, num_tokens);
  }
}

bool Scheduler::MakeRoom(Sequence& seq, int64_t num_tokens, Draft& draft) {
  while (!block_manager_.CanAppend(seq, num_tokens)) {
    Sequence& victim = *running_.back();
    Preempt(victim, draft);
    if (&victim == &seq) return false;
  }
  return true;
}

void Scheduler::Preempt(Sequence& seq, Draft& draft) {
  CHECK(running_.back() == &seq);
  draft.Remove(seq.id);
  draft.preempted = true;
  RequeueNewest();
  ++num_preemptions_;
}

void Scheduler::RequeueNewest() {
  Sequence& seq = *running_.back();
  running_.pop_back();
  block_manager_.Free(seq);
  seq.num_computed = 0;
  seq.status = SequenceStatus::kWaiting;
  ++seq.num_preemptions;
  waiting_.push_front(&seq);
}

int64_t Scheduler::RecomputeAll() {
  const int64_t num_running = this->num_running();
  // Newest first, each to the front: the oldest ends up first.
  while (!running_.empty()) RequeueNewest();
  block_manager_.ForgetCachedPrefixes();
  return num_running;
}

ScheduledStep Scheduler::BuildStep(const Draft& draft) {
  ScheduledStep step;
  if (draft.sequences.empty()) return step;
  step.sequences = draft.sequences;
  step.plan.set_step_id(next_step_id_++);
  for (const ScheduledSequence& scheduled : step.sequences) {
    *step.plan.add_sequences() = PlanFor(*sequences_.at(scheduled.sequence_id), scheduled);
  }
  return step;
}

pb::SequencePlan Scheduler::PlanFor(const Sequence& seq, const ScheduledSequence& scheduled) const {
  pb::SequencePlan plan;
  plan.set_sequence_id(seq.id);
  const auto first = seq.token_ids.begin() + seq.num_computed;
  plan.mutable_token_ids()->Add(first, first + scheduled.num_tokens);
  plan.set_num_cached(seq.num_computed);
  const std::vector<int32_t>& sliding = seq.block_tables[kSliding];
  const std::vector<int32_t>& full = seq.block_tables[kFull];
  // Only the window's blocks: the entries before it are −1, and a long context would send
  // thousands of them every step.
  const int64_t start = std::min<int64_t>(block_manager_.FirstWindowBlock(seq.num_computed),
                                          static_cast<int64_t>(sliding.size()));
  plan.set_sliding_blocks_start(start);
  plan.mutable_sliding_blocks()->Add(sliding.begin() + start, sliding.end());
  plan.mutable_full_blocks()->Add(full.begin(), full.end());
  plan.set_sample(scheduled.sample);
  *plan.mutable_sampling() = seq.request.sampling;
  const auto prompt_end = seq.token_ids.begin() + seq.num_prompt_tokens;
  if (NeedsPromptTokens(seq.request.sampling)) {
    plan.mutable_prompt_token_ids()->Add(seq.token_ids.begin(), prompt_end);
  }
  if (NeedsOutputTokens(seq.request.sampling)) {
    plan.mutable_output_token_ids()->Add(prompt_end, seq.token_ids.end());
  }
  // Only for logprobs still missing: a recompute after a preemption does not ask again for those
  // gathered before it.
  const int64_t end = seq.num_computed + scheduled.num_tokens;
  const int64_t num_gathered = static_cast<int64_t>(seq.prompt_logprobs.size());
  if (seq.request.prompt_logprobs && LastPredictedPromptToken(seq, end) > num_gathered) {
    plan.set_prompt_logprobs(true);
    if (end < seq.num_prompt_tokens) plan.set_next_prompt_token_id(seq.token_ids[end]);
  }
  return plan;
}

void Scheduler::Postprocess(const ScheduledStep& step, const pb::StepResult& result) {
  CHECK_EQ(result.sequences_size(), static_cast<int>(step.sequences.size()))
      << "result of step " << step.plan.step_id();
  for (size_t i = 0; i < step.sequences.size(); ++i) {
    const ScheduledSequence& scheduled = step.sequences[i];
    const pb::SequenceResult& out = result.sequences(static_cast<int>(i));
    CHECK_EQ(out.sequence_id(), scheduled.sequence_id) << "result of step " << step.plan.step_id();
    const auto it = sequences_.find(scheduled.sequence_id);
    if (it == sequences_.end()) continue;
    Sequence& seq = *it->second;
    const pb::SequencePlan& plan = step.plan.sequences(static_cast<int>(i));
    if (plan.prompt_logprobs()) GatherPromptLogprobs(plan, out, seq);
    seq.num_computed += scheduled.num_tokens;
    CHECK_LE(seq.num_computed, seq.num_tokens()) << "sequence " << seq.id;
    if (scheduled.sample) {
      CHECK_GE(out.token_id(), 0) << "sequence " << seq.id << " sampled no token";
      CHECK_LT(seq.num_output_tokens(), seq.request.max_tokens)
          << "sequence " << seq.id << " was not finished at max_tokens";
      seq.token_ids.push_back(out.token_id());
    }
    block_manager_.OnTokensComputed(seq);
  }
}

void Scheduler::GatherPromptLogprobs(const pb::SequencePlan& plan, const pb::SequenceResult& out,
                                     Sequence& seq) {
  // out.prompt_logprobs(k) is prompt token num_cached + 1 + k's; keep those not yet gathered.
  const int64_t last = LastPredictedPromptToken(seq, plan.num_cached() + plan.token_ids_size());
  const bool with_top = out.prompt_top_logprobs_size() == out.prompt_logprobs_size();
  for (int k = 0; k < out.prompt_logprobs_size(); ++k) {
    const int64_t token = plan.num_cached() + 1 + k;
    if (token > last) break;
    if (token != static_cast<int64_t>(seq.prompt_logprobs.size()) + 1) continue;
    seq.prompt_logprobs.push_back(out.prompt_logprobs(k));
    if (with_top) seq.prompt_top_logprobs.push_back(out.prompt_top_logprobs(k));
  }
}

std::unique_ptr<Sequence> Scheduler::Finish(uint64_t id) {
  const Sequence* seq = Find(id);
  CHECK(seq != nullptr && seq->status == SequenceStatus::kRunning)
      << "Finish(" << id << ") of a sequence that is not running";
  return Remove(id);
}

std::unique_ptr<Sequence> Scheduler::Abort(uint64_t id) {
  if (Find(id) == nullptr) return nullptr;
  return Remove(id);
}

std::unique_ptr<Sequence> Scheduler::Remove(uint64_t id) {
  auto node = sequences_.extract(id);
  std::unique_ptr<Sequence> seq = std::move(node.mapped());
  if (seq->status == SequenceStatus::kRunning) {
    running_.erase(std::find(running_.begin(), running_.end(), seq.get()));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), seq.get()));
  }
  block_manager_.Free(*seq);
  seq->status = SequenceStatus::kFinished;
  return seq;
}

const Sequence* Scheduler::Find(uint64_t id) const {
  const auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

LoadInfo Scheduler::Load() const {
  LoadInfo load;
  load.running_requests = num_running();
  load.waiting_requests = num_waiting();
  load.total_pages = block_manager_.num_pages();
  load.used_sliding_pages = block_manager_.num_used_pages(model::LayerKind::kSliding);
  load.used_full_pages = block_manager_.num_used_pages(model::LayerKind::kFull);
  load.used_sliding_blocks = block_manager_.num_used(model::LayerKind::kSliding);
  load.used_full_blocks = block_manager_.num_used(model::LayerKind::kFull);
  load.prefix_cache_queried_tokens = block_manager_.prefix_queried_tokens();
  load.prefix_cache_hit_tokens = block_manager_.prefix_hit_tokens();
  load.preemptions = num_preemptions_;
  load.max_model_len = options_.max_model_len;
  return load;
}

}  // namespace gemmaserve::coordinator
