// ShardPlan: which part of each weight one rank holds (DESIGN.md, "Parallelism for Gemma 4").
//
// The non-expert layers are tensor-parallel over all world_size ranks:
//   - q_proj, k_proj, v_proj, gate_proj, up_proj are column-parallel (output rows split by head or
//     by intermediate unit); o_proj and down_proj are row-parallel (input columns split the same
//     way), each followed by one all-reduce.
//   - Query heads split evenly. KV heads split evenly when world_size divides them; when
//     world_size is a multiple of the KV heads, each KV head is replicated on the ranks whose
//     query heads read it.
//   - embed_tokens is vocab-parallel (rows split); the tied LM head's logits are all-gathered.
//   - Norms, the router and layer_scalar are replicated.
// Experts are split by expert (expert parallel: rank r holds a contiguous range, addressed through
// a placement map) or, in tensor-parallel mode, by intermediate unit like a dense MLP.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gemmaserve::parallel {

// A half-open range [begin, end).
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const Range& other) const { return begin == other.begin && end == other.end; }
};

enum class ExpertSharding {
  kExpertParallel,  // each rank holds num_experts / world_size whole experts
  kTensorParallel,  // each rank holds a 1/world_size slice of every expert's intermediate units
};

class ShardPlan {
 public:
  // The single-process plan: one rank holds everything.
  static ShardPlan Single() { return ShardPlan(0, 1, ExpertSharding::kExpertParallel); }
  // INVALID_ARGUMENT unless 0 ≤ rank < world_size.
  static absl::StatusOr<ShardPlan> Create(int rank, int world_size, ExpertSharding experts);

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  ExpertSharding expert_sharding() const { return experts_; }

  // This rank's even share of `total` units; INVALID_ARGUMENT naming `what` unless world_size
  // divides total.
  absl::StatusOr<Range> EvenSplit(int64_t total, const std::string& what) const;
  // Query heads of this rank.
  absl::StatusOr<Range> QueryHeads(int64_t num_heads) const;
  // KV heads this rank holds for its query heads (split or replicated, see above).
  absl::StatusOr<Range> KvHeads(int64_t num_heads, int64_t num_kv_heads) const;
  // Vocabulary rows of the embedding and LM head.
  absl::StatusOr<Range> VocabRows(int64_t vocab_size) const;
  // Whole experts held by this rank (all of them in tensor-parallel mode).
  absl::StatusOr<Range> Experts(int64_t num_experts) const;
  // Intermediate units of each expert held by this rank (all of them in expert-parallel mode).
  absl::StatusOr<Range> ExpertWidth(int64_t width) const;

 private:
  ShardPlan(int rank, int world_size, ExpertSharding experts)
      : rank_(rank), world_size_(world_size), experts_(experts) {}

  int rank_;
  int world_size_;
  ExpertSharding experts_;
};

}  // namespace gemmaserve::parallel
