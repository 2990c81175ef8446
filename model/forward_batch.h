// ForwardBatch: everything one step's forward needs to know about its sequences: the flattened
// tokens, their positions, each sequence's span and KV block tables per group, the KV slot of each
// token, and which rows produce logits. Built once per step and validated once, so the forward
// itself never checks input. StepMetadata is the same as i32 tensors on the model's device, made
// once per step by UploadBatch: what the ops read.
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/tensor.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "ops/attention.h"

namespace gemmaserve::model {

struct BatchSequence {
  int64_t num_cached = 0;  // tokens already in the KV cache: positions [0, num_cached)
  int64_t num_tokens = 0;  // tokens of this step, at positions [num_cached, num_cached + num_tokens)
  // Physical block per logical block, per KV group ([sliding, full]). The sliding group may hold
  // −1 for blocks that fell out of the window and were freed.
  std::array<std::vector<int32_t>, kNumKvGroups> block_tables;
  bool all_logits = false;  // logits for every token of the step, not only the last
};

struct ForwardBatch {
  // Filled by the caller.
  std::vector<int32_t> token_ids;  // [num_tokens], sequence by sequence
  std::vector<BatchSequence> sequences;
  // Optional: the caller's id of each sequence, used to name it in errors (else its index).
  std::vector<uint64_t> sequence_ids;

  // Derived by Finalize (vectors keep their capacity when a batch is reused, so a steady stream
  // of like steps allocates nothing).
  std::vector<int32_t> positions;                               // [num_tokens]
  std::array<std::vector<int32_t>, kNumKvGroups> slot_mapping;  // [num_tokens] per group
  std::vector<int32_t> token_begin;                             // [S]: first token of sequence s
  std::vector<int32_t> query_lens;                              // [S]: its tokens this step
  std::vector<int32_t> context_lens;                            // [S]: num_cached + num_tokens
  int64_t max_context_len = 0;
  // Per group, [S, max_blocks[g]] row-major: the blocks of each sequence's context, −1 after them.
  std::array<std::vector<int32_t>, kNumKvGroups> block_tables;
  std::array<int64_t, kNumKvGroups> max_blocks{};
  std::vector<int32_t> logits_rows;  // token rows that get logits
  int64_t kv_block_size = 0;         // the geometry's tokens per block

  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }

  // Validates the caller's fields against the model and cache geometry (ids inside the vocabulary,
  // contexts within max_position_embeddings, every block a token writes or may read present and
  // inside its pool) and derives the rest. INVALID_ARGUMENT naming the sequence and value.
  absl::Status Finalize(const Gemma4Config& config, const KvGeometry& geometry);
};

// The shape a decode graph (Gemma4Model, ops/graph.h) is recorded at: every launch shape of the
// step depends on it alone, not on the batch it replays. Sequences are rounded up to a graph batch
// size (GraphBatchSize) and the block tables' width to a power of two.
struct GraphShape {
  int64_t num_sequences = 0;
  int64_t table_width = 0;      // blocks per row of every used group's table
  int64_t max_context_len = 0;  // what such tables hold, at most max_position_embeddings

  bool operator<(const GraphShape& other) const {
    return std::pair(num_sequences, table_width) <
           std::pair(other.num_sequences, other.table_width);
  }
};

// Whether a finalized batch is a plain decode step: one token for each sequence, and logits for
// those tokens only.
bool IsPlainDecode(const ForwardBatch& batch);

// The graph batch sizes: 1, 2, 4, 8, then every multiple of 8. The smallest ≥ num_sequences.
int64_t GraphBatchSize(int64_t num_sequences);

// The graph shape of a finalized plain decode batch: tables at least 16 blocks wide.
GraphShape GraphShapeFor(const ForwardBatch& batch, const Gemma4Config& config);

// `batch` (a finalized plain decode, which fits `shape`) laid out as a graph of `shape` reads it,
// into the derived fields of `padded` (what UploadBatch reads; its sequences stay empty): the
// batch's tokens then padding tokens (id 0, position 0, ops::kPaddingSlot: computed, cached
// nowhere), its sequences then padding sequences of no tokens and no context (so no sequence reads
// the padding tokens' rows, and attention leaves them alone), block tables shape.table_width wide,
// max_context_len the shape's, and logits for every row, the padding rows' after the batch's.
void PadForGraph(const ForwardBatch& batch, const GraphShape& shape, ForwardBatch& padded);

// A finalized batch as the ops read it: i32 tensors on the model's device.
struct StepMetadata {
  Tensor token_ids;  // [num_tokens]
  Tensor positions;  // [num_tokens]
  std::array<Tensor, kNumKvGroups> slots;  // [num_tokens] per group
  std::array<ops::AttentionMetadata, kNumKvGroups> attention;
  Tensor logits_rows;  // [rows that get logits]
};

// Where UploadBatch stages a step's metadata for a GPU: one host array holding every field, and
// device memory for it, grown to the largest step so far (a steady state allocates nothing).
struct UploadBuffers {
  std::vector<int32_t> staging;
  Tensor device;  // i32 [capacity] on the model's device
};

// The one upload of a step's metadata. On the CPU the tensors borrow `batch`'s vectors (no copy),
// so `batch` must outlive the result and stay unchanged while it is used; on a GPU every field is
// staged into `buffers` and copied in one transfer, and the tensors are views of buffers.device.
StepMetadata UploadBatch(const ForwardBatch& batch, const Device& device, UploadBuffers& buffers);

}  // namespace gemmaserve::model
