// CoordinatorMetrics: the coordinator's Prometheus metrics, served as text on the HTTP port's
// /metrics (Serialize). It owns one prometheus::Registry and, for MoE models, the expert-load
// collectable; Serialize is the only way out, so a scrape always sees both. The engine loop
// records each step, its sequences' tokens and finished requests, and copies the scheduler's load
// after each step.
//
// Families (names are a contract: dashboards and alerts use them; units are in the names):
//   histograms, seconds, buckets 1 ms … 100 s:
//     gemmaserve_time_to_first_token_seconds      arrival → first output token
//     gemmaserve_inter_token_latency_seconds      between consecutive output tokens of a sequence
//     gemmaserve_e2e_request_latency_seconds      arrival → finish
//     gemmaserve_request_queue_time_seconds       arrival → first scheduled (observed at the
//                                                 first token)
//     gemmaserve_step_duration_seconds{kind}      one step, kind "prefill" | "decode" | "mixed"
//   gemmaserve_batch_size                         histogram of sequences per step, buckets 1 … 512
//   counters:
//     gemmaserve_prompt_tokens_total              prompt tokens of finished requests
//     gemmaserve_generation_tokens_total          output tokens
//     gemmaserve_requests_total{finish_reason}    "stop" | "length" | "abort" | "error"
//     gemmaserve_prefix_cache_queried_tokens_total, gemmaserve_prefix_cache_hit_tokens_total
//     gemmaserve_preemptions_total
//   gauges:
//     gemmaserve_requests_running, gemmaserve_requests_waiting
//     gemmaserve_kv_cache_usage_ratio{group}      the group's pages in use ÷ all KV pages, group
//                                                 "sliding" | "full" (the groups share the pages)
//   MoE expert load (MoE models only): see coordinator/metrics_expert_load.h.
//
// Kubernetes Gateway API inference extension: its model-server protocol reads three signals to
// pick a replica. They are exported twice, under our names and under the names vLLM uses, so the
// extension's vLLM configuration works unchanged (colons are legal in Prometheus metric names):
//   queued requests       gemmaserve_requests_waiting       = gemmaserve:num_requests_waiting
//   running requests      gemmaserve_requests_running       = gemmaserve:num_requests_running
//   KV cache utilization  gemmaserve_kv_cache_usage_ratio   ~ gemmaserve:kv_cache_usage_perc
// gemmaserve:kv_cache_usage_perc is, like vLLM's, a fraction in [0, 1] despite its name: the sum
// of the two groups' ratios, the share of the pages holding blocks in use.
//
// Cost: every Record call is a few atomic updates and allocates nothing; RecordStep's MoE part is
// O(layers × experts) integer additions (see ExpertLoadMetrics). Serialize formats every series
// (about 4,000 for the 26B-A4B) and takes milliseconds: it runs on the scraping HTTP thread.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/engine.h"
#include "coordinator/metrics_expert_load.h"
#include "coordinator/request.h"
#include "gemmaserve/internal/v1/worker.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace gemmaserve::coordinator {

enum class StepKind {
  kPrefill,  // every sequence of the step is prefilling (a prompt chunk)
  kDecode,   // every sequence decodes one token
  kMixed,    // both
};
const char* StepKindName(StepKind kind);  // "prefill", "decode", "mixed"
// The kind of a step with these sequence counts; a step with no prefill is a decode step.
StepKind StepKindOf(int64_t num_prefill_sequences, int64_t num_decode_sequences);

struct CoordinatorMetricsOptions {
  // The MoE layout, for the expert-load families; num_layers 0 (the default) for a dense model.
  MoeGeometry moe;
};

class CoordinatorMetrics {
 public:
  // INVALID_ARGUMENT when options.moe is inconsistent (ValidateMoeGeometry).
  static absl::StatusOr<std::unique_ptr<CoordinatorMetrics>> Create(
      const CoordinatorMetricsOptions& options);

  CoordinatorMetrics(const CoordinatorMetrics&) = delete;
  CoordinatorMetrics& operator=(const CoordinatorMetrics&) = delete;

  // A sequence's first output token, `ttft` after its arrival, which waited `queue_time` from its
  // arrival to its first scheduling. Counts one generation token.
  void RecordFirstToken(absl::Duration ttft, absl::Duration queue_time);
  // `num_tokens` further output tokens of one sequence, `gap` after its previous output token.
  // Each token's inter-token latency is gap ÷ num_tokens.
  void RecordNextTokens(int64_t num_tokens, absl::Duration gap);
  // A request's end, with its final usage: its end-to-end latency (usage.total_ms), its prompt
  // tokens (cached ones included) and one request of `reason`.
  void RecordRequestFinished(const Usage& usage, FinishReason reason);
  // One step: its wall time, the sequences it ran, and rank 0's StepResult.expert_counts (empty
  // for dense models). INVALID_ARGUMENT when the expert counts do not match the MoE geometry; the
  // step's duration and batch size are recorded regardless.
  absl::Status RecordStep(
      StepKind kind, absl::Duration duration, int64_t num_sequences,
      const google::protobuf::RepeatedPtrField<internal::v1::ExpertCounts>& expert_counts);
  // The scheduler's load after a step. Its cumulative counts (prefix cache, preemptions) feed the
  // counters by their increase since the previous call; a count that went down (a new scheduler)
  // starts a new baseline.
  void SetLoad(const LoadInfo& load) ABSL_LOCKS_EXCLUDED(mu_);

  // Prometheus text exposition format (version 0.0.4) of every family.
  std::string Serialize() const;

 private:
  explicit CoordinatorMetrics(const CoordinatorMetricsOptions& options);

  prometheus::Registry registry_;

  prometheus::Histogram* ttft_;
  prometheus::Histogram* inter_token_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_time_;
  prometheus::Histogram* step_duration_[3];  // by StepKind
  prometheus::Histogram* batch_size_;

  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Counter* requests_[4];  // by FinishReason
  prometheus::Counter* prefix_queried_tokens_;
  prometheus::Counter* prefix_hit_tokens_;
  prometheus::Counter* preemptions_;

  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* kv_usage_sliding_;
  prometheus::Gauge* kv_usage_full_;
  prometheus::Gauge* gie_waiting_;   // gemmaserve:num_requests_waiting
  prometheus::Gauge* gie_running_;   // gemmaserve:num_requests_running
  prometheus::Gauge* gie_kv_usage_;  // gemmaserve:kv_cache_usage_perc

  std::unique_ptr<ExpertLoadMetrics> expert_load_;  // null for dense models

  // The cumulative LoadInfo counts at the previous SetLoad.
  absl::Mutex mu_;
  int64_t last_prefix_queried_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_prefix_hit_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_preemptions_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace gemmaserve::coordinator
