// Scheduler: continuous batching over the paged KV cache. It owns the live sequences and their
// queues (waiting, running) and the BlockManager, and turns them into one StepPlan per step.
//
// Each step, within a token budget and a cap on running sequences:
//   1. running sequences, oldest first: every decode (one token each), then the next chunk of
//      every partial prefill;
//   2. waiting sequences in FIFO order, a prefill chunk each, as long as blocks and budget last.
// A long prompt is prefilled in chunks over several steps and samples only on the chunk that
// reaches its last token. When a running sequence needs blocks that are not free, the newest
// running sequence is preempted by recompute: its blocks are freed and it goes back to the front
// of the waiting queue, to prefill its prompt and generated tokens again. A new sequence never
// causes a preemption.
//
// The engine loop calls Schedule(), runs the plan on the workers, hands the result to
// Postprocess(), checks stop conditions and calls Finish() for the sequences that are done.
//
// Thread-safety: none. The engine loop's thread is the only caller.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "coordinator/block_manager.h"
#include "coordinator/engine.h"
#include "coordinator/sequence.h"
#include "gemmaserve/internal/v1/worker.pb.h"

namespace gemmaserve::coordinator {

struct SchedulerOptions {
  // Sequences running at once; each running sequence holds KV blocks and a batch row.
  int64_t max_num_seqs = 256;
  // Tokens per step, decodes plus prefill chunks; bounds a step's latency and worker workspace.
  int64_t max_tokens_per_step = 2048;
  // Sequences queued before Add answers RESOURCE_EXHAUSTED; bounds memory and queueing delay.
  int64_t max_waiting = 1024;
  // KV slots per block (ClusterConfig.block_size); smaller wastes less, costs longer tables.
  int64_t block_size = 16;
  // The KV pages the workers hold (RegisterResponse) and how many blocks of each group one page
  // holds: the KV memory to schedule into.
  model::KvPages kv_pages = {.num_pages = 1024, .blocks_per_page = {1, 1}};
  // Keys a sliding-layer query sees, itself included (config.json sliding_window).
  int64_t sliding_window = 512;
  // Prompt plus new tokens of one sequence, at most max_position_embeddings.
  int64_t max_model_len = 8192;
  // Reuse the KV of earlier identical prompt prefixes; costs one hash per block.
  bool enable_prefix_caching = true;

  // INVALID_ARGUMENT naming the first field out of range.
  absl::Status Validate() const;
};

// The longest sequence, at most `limit` tokens, that fits alone in options.kv_pages
// (SequencePages): what max_model_len can be.
int64_t MaxSequenceTokens(const SchedulerOptions& options, int64_t limit);

// What one planned sequence does in a step.
struct ScheduledSequence {
  uint64_t sequence_id = 0;
  int64_t num_tokens = 0;  // tokens computed this step
  bool sample = false;     // the step reaches its last token, so it samples the next
};

struct ScheduledStep {
  internal::v1::StepPlan plan;                // step_id 0 when empty
  std::vector<ScheduledSequence> sequences;  // one per plan.sequences(), in the same order

  bool empty() const { return sequences.empty(); }
};

class Scheduler {
 public:
  // Requires options.Validate() to be OK.
  explicit Scheduler(const SchedulerOptions& options);

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a new sequence (status waiting, nothing computed). INVALID_ARGUMENT when it could never
  // run: empty prompt, max_tokens < 1, prompt plus max_tokens beyond max_model_len, or more blocks
  // than a KV group holds. ALREADY_EXISTS for a live id; RESOURCE_EXHAUSTED when max_waiting
  // sequences already wait.
  absl::Status Add(std::unique_ptr<Sequence> sequence);

  // Plans the next step and reserves its blocks; empty when nothing can run. Non-empty steps get
  // consecutive step ids from 1.
  ScheduledStep Schedule();

  // Applies the workers' result of `step`: computed tokens advance, sampled tokens are appended,
  // blocks are cached and the sliding window trimmed. Sequences aborted since `step` was scheduled
  // are skipped. `result` must answer `step` (same sequences, same order), and the caller must
  // Finish a sequence once it holds request.max_tokens new tokens.
  void Postprocess(const ScheduledStep& step, const internal::v1::StepResult& result);

  // The workers lost the KV cache (a worker failed and the replica was formed anew): every running
  // sequence goes back to the waiting queue, ahead of those already there and in admission order,
  // keeping its tokens and prompt logprobs, to be recomputed from its prompt plus the tokens it
  // generated; all blocks are freed and the prefix cache is forgotten. Returns how many sequences
  // were running.
  int64_t RecomputeAll();

  // Ends a running sequence and frees its blocks; returns it with status finished.
  std::unique_ptr<Sequence> Finish(uint64_t id);
  // Ends a sequence in any state and frees its blocks; nullptr for an unknown id.
  std::unique_ptr<Sequence> Abort(uint64_t id);

  // A live (waiting or running) sequence, or nullptr.
  const Sequence* Find(uint64_t id) const;
  bool HasWork() const { return !running_.empty() || !waiting_.empty(); }

  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }
  const BlockManager& block_manager() const { return block_manager_; }
  const SchedulerOptions& options() const { return options_; }
  // The scheduler's share of Engine::Load().
  LoadInfo Load() const;

 private:
  struct Draft;  // the step being planned

  void ScheduleRunning(bool decodes, Draft& draft);
  void ScheduleWaiting(Draft& draft);
  bool MakeRoom(Sequence& seq, int64_t num_tokens, Draft& draft);
  void Preempt(Sequence& seq, Draft& draft);
  // Frees the newest running sequence's blocks and puts it at the front of the waiting queue.
  void RequeueNewest();
  ScheduledStep BuildStep(const Draft& draft);
  internal::v1::SequencePlan PlanFor(const Sequence& seq, const ScheduledSequence& scheduled) const;
  static void GatherPromptLogprobs(const internal::v1::SequencePlan& plan,
                                   const internal::v1::SequenceResult& out, Sequence& seq);
  std::unique_ptr<Sequence> Remove(uint64_t id);

  const SchedulerOptions options_;
  BlockManager block_manager_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Sequence>> sequences_;  // every live sequence
  std::deque<Sequence*> waiting_;  // FIFO; preempted sequences re-enter at the front
  std::vector<Sequence*> running_;  // oldest admission first
  uint64_t next_step_id_ = 1;
  int64_t num_preemptions_ = 0;
};

}  // namespace gemmaserve::coordinator
