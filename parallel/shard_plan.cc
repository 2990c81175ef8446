#include "parallel/shard_plan.h"

#include "absl/strings/str_cat.h"

namespace gemmaserve::parallel {

absl::StatusOr<ShardPlan> ShardPlan::Create(int rank, int world_size, ExpertSharding experts) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is not in a world of size ", world_size));
  }
  return ShardPlan(rank, world_size, experts);
}

absl::StatusOr<Range> ShardPlan::EvenSplit(int64_t total, const std::string& what) const {
  if (total % world_size_ != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", total,
                                                   " is not divisible by the world size ",
                                                   world_size_));
  }
  const int64_t share = total / world_size_;
  return Range{rank_ * share, (rank_ + 1) * share};
}

absl::StatusOr<Range> ShardPlan::QueryHeads(int64_t num_heads) const {
  return EvenSplit(num_heads, "num_attention_heads (query heads)");
}

absl::StatusOr<Range> ShardPlan::KvHeads(int64_t num_heads, int64_t num_kv_heads) const {
  if (num_kv_heads % world_size_ == 0) return EvenSplit(num_kv_heads, "num_key_value_heads");
  if (world_size_ % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        num_kv_heads, " KV heads can be neither split nor replicated evenly over ", world_size_,
        " ranks"));
  }
  // More ranks than KV heads: this rank's query heads all read one KV head, which it replicates.
  const absl::StatusOr<Range> query = QueryHeads(num_heads);
  if (!query.ok()) return query.status();
  const int64_t group = num_heads / num_kv_heads;
  const int64_t kv = query->begin / group;
  return Range{kv, kv + 1};
}

absl::StatusOr<Range> ShardPlan::VocabRows(int64_t vocab_size) const {
  return EvenSplit(vocab_size, "vocab_size");
}

absl::StatusOr<Range> ShardPlan::Experts(int64_t num_experts) const {
  if (experts_ == ExpertSharding::kTensorParallel) return Range{0, num_experts};
  return EvenSplit(num_experts, "num_experts");
}

absl::StatusOr<Range> ShardPlan::ExpertWidth(int64_t width) const {
  if (experts_ == ExpertSharding::kExpertParallel) return Range{0, width};
  return EvenSplit(width, "moe_intermediate_size");
}

}  // namespace gemmaserve::parallel
