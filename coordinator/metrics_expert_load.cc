#include "coordinator/metrics_expert_load.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace gemmaserve::coordinator {

absl::Status ValidateMoeGeometry(const MoeGeometry& geometry) {
  if (geometry.num_layers < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE geometry: num_layers ", geometry.num_layers, " is negative"));
  }
  if (geometry.num_layers == 0) return absl::OkStatus();
  if (geometry.num_experts <= 0 || geometry.ep_size <= 0 || geometry.window_steps <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MoE geometry: num_experts (", geometry.num_experts, "), ep_size (", geometry.ep_size,
        ") and window_steps (", geometry.window_steps, ") must be positive"));
  }
  if (geometry.expert_to_rank.empty()) {
    if (geometry.num_experts % geometry.ep_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MoE geometry: contiguous placement needs ep_size ", geometry.ep_size,
          " to divide num_experts ", geometry.num_experts, "; pass expert_to_rank"));
    }
    return absl::OkStatus();
  }
  if (static_cast<int>(geometry.expert_to_rank.size()) != geometry.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE geometry: expert_to_rank has ", geometry.expert_to_rank.size(),
                     " entries, expected num_experts ", geometry.num_experts));
  }
  for (int e = 0; e < geometry.num_experts; ++e) {
    const int rank = geometry.expert_to_rank[e];
    if (rank < 0 || rank >= geometry.ep_size) {
      return absl::InvalidArgumentError(absl::StrCat("MoE geometry: expert_to_rank[", e, "] = ",
                                                     rank, " is outside [0, ", geometry.ep_size,
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

namespace {

// "0", "1", …, the decimal strings of [0, n).
std::vector<std::string> Numbers(int n) {
  std::vector<std::string> numbers;
  numbers.reserve(n);
  for (int i = 0; i < n; ++i) numbers.push_back(std::to_string(i));
  return numbers;
}

}  // namespace

std::vector<int> ContiguousExpertPlacement(int num_experts, int ep_size) {
  CHECK(ep_size > 0 && num_experts % ep_size == 0) << num_experts << " experts, ep " << ep_size;
  const int per_rank = num_experts / ep_size;
  std::vector<int> placement(num_experts);
  for (int e = 0; e < num_experts; ++e) placement[e] = e / per_rank;
  return placement;
}

ExpertLoadMetrics::ExpertLoadMetrics(const MoeGeometry& geometry)
    : num_layers_(geometry.num_layers),
      num_experts_(geometry.num_experts),
      ep_size_(geometry.ep_size),
      window_steps_(geometry.window_steps),
      expert_to_rank_(geometry.expert_to_rank.empty()
                          ? ContiguousExpertPlacement(geometry.num_experts, geometry.ep_size)
                          : geometry.expert_to_rank),
      numbers_(Numbers(std::max({geometry.num_layers, geometry.num_experts, geometry.ep_size}))) {
  const absl::Status valid = ValidateMoeGeometry(geometry);
  CHECK(valid.ok()) << valid;
  CHECK_GT(num_layers_, 0);
  const size_t layer_ranks = static_cast<size_t>(num_layers_) * ep_size_;
  absl::MutexLock lock(&mu_);
  expert_tokens_.assign(static_cast<size_t>(num_layers_) * num_experts_, 0);
  rank_tokens_.assign(layer_ranks, 0);
  window_.assign(static_cast<size_t>(window_steps_) * layer_ranks, 0);
  window_sum_.assign(layer_ranks, 0);
}

absl::Status ExpertLoadMetrics::Validate(
    const google::protobuf::RepeatedPtrField<internal::v1::ExpertCounts>& counts) const {
  for (const internal::v1::ExpertCounts& entry : counts) {
    if (entry.layer() < 0 || entry.layer() >= num_layers_) {
      return absl::InvalidArgumentError(absl::StrCat("expert counts: layer ", entry.layer(),
                                                     " is outside [0, ", num_layers_, ")"));
    }
    if (entry.tokens_size() != num_experts_) {
      return absl::InvalidArgumentError(absl::StrCat("expert counts: layer ", entry.layer(),
                                                     " has ", entry.tokens_size(),
                                                     " counts, expected ", num_experts_));
    }
    for (int64_t tokens : entry.tokens()) {
      if (tokens < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "expert counts: layer ", entry.layer(), " has a negative count ", tokens));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ExpertLoadMetrics::Record(
    const google::protobuf::RepeatedPtrField<internal::v1::ExpertCounts>& counts) {
  if (counts.empty()) return absl::OkStatus();
  if (absl::Status valid = Validate(counts); !valid.ok()) return valid;

  absl::MutexLock lock(&mu_);
  // Retire the oldest step in the ring and collect this one in its slot.
  const size_t slot_size = static_cast<size_t>(num_layers_) * ep_size_;
  int64_t* slot = window_.data() + static_cast<size_t>(next_slot_) * slot_size;
  for (size_t i = 0; i < slot_size; ++i) window_sum_[i] -= slot[i];
  std::fill(slot, slot + slot_size, 0);

  for (const internal::v1::ExpertCounts& entry : counts) {
    const size_t layer = static_cast<size_t>(entry.layer());
    int64_t* layer_experts = expert_tokens_.data() + layer * num_experts_;
    int64_t* layer_ranks = slot + layer * ep_size_;
    for (int e = 0; e < num_experts_; ++e) {
      const int64_t tokens = entry.tokens(e);
      layer_experts[e] += tokens;
      layer_ranks[expert_to_rank_[e]] += tokens;
    }
  }
  for (size_t i = 0; i < slot_size; ++i) {
    rank_tokens_[i] += slot[i];
    window_sum_[i] += slot[i];
  }
  next_slot_ = (next_slot_ + 1) % window_steps_;
  return absl::OkStatus();
}

std::vector<prometheus::MetricFamily> ExpertLoadMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> families(3);
  prometheus::MetricFamily& experts = families[0];
  experts.name = "gemmaserve_moe_expert_tokens_total";
  experts.help = "Tokens routed to each expert of each MoE layer";
  experts.type = prometheus::MetricType::Counter;
  experts.metric.resize(static_cast<size_t>(num_layers_) * num_experts_);
  prometheus::MetricFamily& ranks = families[1];
  ranks.name = "gemmaserve_moe_rank_tokens_total";
  ranks.help = "Tokens routed to the experts each expert-parallel rank holds";
  ranks.type = prometheus::MetricType::Counter;
  ranks.metric.resize(static_cast<size_t>(num_layers_) * ep_size_);
  for (int l = 0; l < num_layers_; ++l) {
    for (int e = 0; e < num_experts_; ++e) {
      experts.metric[l * num_experts_ + e].label = {{"expert", numbers_[e]},
                                                    {"layer", numbers_[l]}};
    }
    for (int r = 0; r < ep_size_; ++r) {
      ranks.metric[l * ep_size_ + r].label = {{"layer", numbers_[l]}, {"rank", numbers_[r]}};
    }
  }

  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < expert_tokens_.size(); ++i) {
    experts.metric[i].counter.value = static_cast<double>(expert_tokens_[i]);
  }
  for (size_t i = 0; i < rank_tokens_.size(); ++i) {
    ranks.metric[i].counter.value = static_cast<double>(rank_tokens_[i]);
  }
  families[2] = CollectBalancedness();
  return families;
}

prometheus::MetricFamily ExpertLoadMetrics::CollectBalancedness() const {
  prometheus::MetricFamily family;
  family.name = "gemmaserve_moe_balancedness";
  family.help =
      "Mean / max tokens per expert-parallel rank over the recent steps, in (0, 1]; "
      "layer=\"all\": sum over layers of mean / sum over layers of max";
  family.type = prometheus::MetricType::Gauge;
  family.metric.resize(num_layers_ + 1);
  int64_t sum_all = 0;  // Σ over layers and ranks: Σ_layers mean × ep_size
  int64_t max_all = 0;  // Σ over layers of the busiest rank
  for (int l = 0; l < num_layers_; ++l) {
    const int64_t* ranks = window_sum_.data() + static_cast<size_t>(l) * ep_size_;
    int64_t sum = 0;
    int64_t max = 0;
    for (int r = 0; r < ep_size_; ++r) {
      sum += ranks[r];
      max = std::max(max, ranks[r]);
    }
    family.metric[l].label = {{"layer", numbers_[l]}};
    family.metric[l].gauge.value = max == 0 ? 1.0 : static_cast<double>(sum) / ep_size_ / max;
    sum_all += sum;
    max_all += max;
  }
  family.metric[num_layers_].label = {{"layer", "all"}};
  family.metric[num_layers_].gauge.value =
      max_all == 0 ? 1.0 : static_cast<double>(sum_all) / ep_size_ / max_all;
  return family;
}

}  // namespace gemmaserve::coordinator
