#include "coordinator/metrics.h"

#include <algorithm>
#include <iterator>
#include <utility>
#include <vector>

#include "common/check.h"
#include "prometheus/text_serializer.h"

namespace gemmaserve::coordinator {
namespace {

// Roughly log-spaced, 1 ms to 100 s: from a fast decode step to a long request.
prometheus::Histogram::BucketBoundaries LatencyBucketsSeconds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100};
}

prometheus::Histogram::BucketBoundaries BatchSizeBuckets() {
  prometheus::Histogram::BucketBoundaries buckets;
  for (int size = 1; size <= 512; size *= 2) buckets.push_back(size);
  return buckets;
}

prometheus::Histogram* AddHistogram(prometheus::Registry& registry, const std::string& name,
                                    const std::string& help,
                                    const prometheus::Histogram::BucketBoundaries& buckets) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add({}, buckets);
}

prometheus::Counter* AddCounter(prometheus::Registry& registry, const std::string& name,
                                const std::string& help) {
  return &prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({});
}

prometheus::Gauge* AddGauge(prometheus::Registry& registry, const std::string& name,
                            const std::string& help) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({});
}

// Adds `now − *last` to `counter` and remembers `now`; a decrease starts a new baseline.
void AddIncrease(int64_t now, int64_t* last, prometheus::Counter* counter) {
  if (now > *last) counter->Increment(static_cast<double>(now - *last));
  *last = now;
}

}  // namespace

const char* StepKindName(StepKind kind) {
  switch (kind) {
    case StepKind::kPrefill:
      return "prefill";
    case StepKind::kDecode:
      return "decode";
    case StepKind::kMixed:
      return "mixed";
  }
  return "unknown";
}

StepKind StepKindOf(int64_t num_prefill_sequences, int64_t num_decode_sequences) {
  if (num_prefill_sequences == 0) return StepKind::kDecode;
  return num_decode_sequences == 0 ? StepKind::kPrefill : StepKind::kMixed;
}

absl::StatusOr<std::unique_ptr<CoordinatorMetrics>> CoordinatorMetrics::Create(
    const CoordinatorMetricsOptions& options) {
  if (absl::Status valid = ValidateMoeGeometry(options.moe); !valid.ok()) return valid;
  return std::unique_ptr<CoordinatorMetrics>(new CoordinatorMetrics(options));
}

CoordinatorMetrics::CoordinatorMetrics(const CoordinatorMetricsOptions& options) {
  prometheus::Registry& r = registry_;
  const prometheus::Histogram::BucketBoundaries seconds = LatencyBucketsSeconds();
  ttft_ = AddHistogram(r, "gemmaserve_time_to_first_token_seconds",
                       "Time from a request's arrival to its first output token", seconds);
  inter_token_ = AddHistogram(r, "gemmaserve_inter_token_latency_seconds",
                              "Time between consecutive output tokens of a sequence", seconds);
  e2e_ = AddHistogram(r, "gemmaserve_e2e_request_latency_seconds",
                      "Time from a request's arrival to its end", seconds);
  queue_time_ = AddHistogram(r, "gemmaserve_request_queue_time_seconds",
                             "Time from a request's arrival to its first scheduling", seconds);
  auto& steps = prometheus::BuildHistogram()
                    .Name("gemmaserve_step_duration_seconds")
                    .Help("Wall time of one engine step, by the kind of its sequences")
                    .Register(r);
  for (StepKind kind : {StepKind::kPrefill, StepKind::kDecode, StepKind::kMixed}) {
    step_duration_[static_cast<int>(kind)] = &steps.Add({{"kind", StepKindName(kind)}}, seconds);
  }
  batch_size_ = AddHistogram(r, "gemmaserve_batch_size", "Sequences per engine step",
                             BatchSizeBuckets());

  prompt_tokens_ = AddCounter(r, "gemmaserve_prompt_tokens_total",
                              "Prompt tokens of finished requests");
  generation_tokens_ = AddCounter(r, "gemmaserve_generation_tokens_total", "Output tokens");
  auto& requests = prometheus::BuildCounter()
                       .Name("gemmaserve_requests_total")
                       .Help("Finished requests by finish reason")
                       .Register(r);
  for (FinishReason reason :
       {FinishReason::kStop, FinishReason::kLength, FinishReason::kAbort, FinishReason::kError}) {
    requests_[static_cast<int>(reason)] =
        &requests.Add({{"finish_reason", FinishReasonName(reason)}});
  }
  prefix_queried_tokens_ = AddCounter(r, "gemmaserve_prefix_cache_queried_tokens_total",
                                      "Prompt tokens looked up in the prefix cache");
  prefix_hit_tokens_ = AddCounter(r, "gemmaserve_prefix_cache_hit_tokens_total",
                                  "Prompt tokens the prefix cache served");
  preemptions_ = AddCounter(r, "gemmaserve_preemptions_total",
                            "Sequences whose KV blocks were taken back, to be recomputed");

  running_ = AddGauge(r, "gemmaserve_requests_running", "Requests holding KV blocks");
  waiting_ = AddGauge(r, "gemmaserve_requests_waiting", "Requests queued for admission");
  auto& kv_usage = prometheus::BuildGauge()
                       .Name("gemmaserve_kv_cache_usage_ratio")
                       .Help("KV cache pages holding this group's blocks in use / all pages")
                       .Register(r);
  kv_usage_sliding_ = &kv_usage.Add({{"group", "sliding"}});
  kv_usage_full_ = &kv_usage.Add({{"group", "full"}});
  gie_waiting_ = AddGauge(r, "gemmaserve:num_requests_waiting",
                          "Same as gemmaserve_requests_waiting (vLLM name, for the Gateway API "
                          "inference extension)");
  gie_running_ = AddGauge(r, "gemmaserve:num_requests_running",
                          "Same as gemmaserve_requests_running (vLLM name, for the Gateway API "
                          "inference extension)");
  gie_kv_usage_ = AddGauge(r, "gemmaserve:kv_cache_usage_perc",
                           "KV cache usage in [0, 1]: pages holding blocks in use / all pages "
                           "(vLLM name, for the Gateway API inference extension)");

  if (options.moe.num_layers > 0) {
    expert_load_ = std::make_unique<ExpertLoadMetrics>(options.moe);
  }
}

void CoordinatorMetrics::RecordFirstToken(absl::Duration ttft, absl::Duration queue_time) {
  ttft_->Observe(absl::ToDoubleSeconds(ttft));
  queue_time_->Observe(absl::ToDoubleSeconds(queue_time));
  generation_tokens_->Increment();
}

void CoordinatorMetrics::RecordNextTokens(int64_t num_tokens, absl::Duration gap) {
  if (num_tokens <= 0) return;
  const double per_token_s = absl::ToDoubleSeconds(gap) / static_cast<double>(num_tokens);
  for (int64_t i = 0; i < num_tokens; ++i) inter_token_->Observe(per_token_s);
  generation_tokens_->Increment(static_cast<double>(num_tokens));
}

void CoordinatorMetrics::RecordRequestFinished(const Usage& usage, FinishReason reason) {
  e2e_->Observe(usage.total_ms / 1e3);
  prompt_tokens_->Increment(static_cast<double>(usage.prompt_tokens));
  requests_[static_cast<int>(reason)]->Increment();
}

absl::Status CoordinatorMetrics::RecordStep(
    StepKind kind, absl::Duration duration, int64_t num_sequences,
    const google::protobuf::RepeatedPtrField<internal::v1::ExpertCounts>& expert_counts) {
  step_duration_[static_cast<int>(kind)]->Observe(absl::ToDoubleSeconds(duration));
  batch_size_->Observe(static_cast<double>(num_sequences));
  if (expert_counts.empty()) return absl::OkStatus();
  if (expert_load_ == nullptr) {
    return absl::InvalidArgumentError(
        "expert counts: the step reported expert counts but the model has no MoE layers");
  }
  return expert_load_->Record(expert_counts);
}

void CoordinatorMetrics::SetLoad(const LoadInfo& load) {
  running_->Set(static_cast<double>(load.running_requests));
  waiting_->Set(static_cast<double>(load.waiting_requests));
  gie_running_->Set(static_cast<double>(load.running_requests));
  gie_waiting_->Set(static_cast<double>(load.waiting_requests));
  const double total = static_cast<double>(load.total_pages);
  const double sliding = total > 0 ? static_cast<double>(load.used_sliding_pages) / total : 0.0;
  const double full = total > 0 ? static_cast<double>(load.used_full_pages) / total : 0.0;
  kv_usage_sliding_->Set(sliding);
  kv_usage_full_->Set(full);
  gie_kv_usage_->Set(sliding + full);

  absl::MutexLock lock(&mu_);
  AddIncrease(load.prefix_cache_queried_tokens, &last_prefix_queried_, prefix_queried_tokens_);
  AddIncrease(load.prefix_cache_hit_tokens, &last_prefix_hit_, prefix_hit_tokens_);
  AddIncrease(load.preemptions, &last_preemptions_, preemptions_);
}

std::string CoordinatorMetrics::Serialize() const {
  std::vector<prometheus::MetricFamily> families = registry_.Collect();
  if (expert_load_ != nullptr) {
    std::vector<prometheus::MetricFamily> moe = expert_load_->Collect();
    families.insert(families.end(), std::make_move_iterator(moe.begin()),
                    std::make_move_iterator(moe.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace gemmaserve::coordinator
