#include "worker/worker_metrics.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "prometheus/text_serializer.h"

namespace gemmaserve::worker {
namespace {

// Roughly log-spaced, 100 µs to 10 s: one rank's share of a step is shorter than a request, and
// a small model's decode step on a GPU takes well under a millisecond.
prometheus::Histogram::BucketBoundaries StepBucketsSeconds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10};
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Start(
    const WorkerMetricsOptions& options) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker metrics: port ", options.port, " is outside [0, 65535]"));
  }
  std::unique_ptr<WorkerMetrics> metrics(new WorkerMetrics(options.rank));
  WorkerMetrics* raw = metrics.get();
  ASSIGN_OR_RETURN(metrics->server_, MetricsHttpServer::Start(options.bind_address, options.port,
                                                              [raw] { return raw->Serialize(); }));
  return metrics;
}

WorkerMetrics::WorkerMetrics(int rank) : registry_(std::make_shared<prometheus::Registry>()) {
  const prometheus::Labels labels = {{"rank", std::to_string(rank)}};
  prometheus::Registry& r = *registry_;

  compute_ = &prometheus::BuildHistogram()
                  .Name("gemmaserve_worker_step_compute_seconds")
                  .Help("Forward time of one step on this rank")
                  .Register(r)
                  .Add(labels, StepBucketsSeconds());
  communication_ = &prometheus::BuildHistogram()
                        .Name("gemmaserve_worker_step_communication_seconds")
                        .Help("Time inside collectives during one step on this rank")
                        .Register(r)
                        .Add(labels, StepBucketsSeconds());
  weight_bytes_ = &prometheus::BuildGauge()
                       .Name("gemmaserve_worker_weight_bytes")
                       .Help("Bytes of model weights this rank holds")
                       .Register(r)
                       .Add(labels);
  kv_cache_bytes_ = &prometheus::BuildGauge()
                         .Name("gemmaserve_worker_kv_cache_bytes")
                         .Help("Bytes of KV cache this rank allocated")
                         .Register(r)
                         .Add(labels);
  prometheus::BuildGauge()
      .Name("gemmaserve_worker_up")
      .Help("1 while the worker process serves metrics")
      .Register(r)
      .Add(labels)
      .Set(1);
  ready_ = &prometheus::BuildGauge()
                .Name("gemmaserve_worker_ready")
                .Help("1 when the worker is attached to its coordinator and taking steps")
                .Register(r)
                .Add(labels);
  graph_steps_ = &prometheus::BuildCounter()
                      .Name("gemmaserve_worker_decode_graph_steps_total")
                      .Help("Decode steps this rank replayed as CUDA graphs")
                      .Register(r)
                      .Add(labels);
  graphs_recorded_ = &prometheus::BuildCounter()
                          .Name("gemmaserve_worker_decode_graphs_recorded_total")
                          .Help("CUDA graphs this rank recorded for decode steps")
                          .Register(r)
                          .Add(labels);
  graphs_held_ = &prometheus::BuildGauge()
                      .Name("gemmaserve_worker_decode_graphs")
                      .Help("CUDA graphs of decode steps this rank holds")
                      .Register(r)
                      .Add(labels);
}

WorkerMetrics::~WorkerMetrics() = default;

void WorkerMetrics::RecordStep(absl::Duration compute, absl::Duration communication) {
  compute_->Observe(absl::ToDoubleSeconds(compute));
  communication_->Observe(absl::ToDoubleSeconds(communication));
}

void WorkerMetrics::SetWeightBytes(int64_t bytes) {
  weight_bytes_->Set(static_cast<double>(bytes));
}

void WorkerMetrics::SetKvCacheBytes(int64_t bytes) {
  kv_cache_bytes_->Set(static_cast<double>(bytes));
}

void WorkerMetrics::SetReady(bool ready) { ready_->Set(ready ? 1 : 0); }

void WorkerMetrics::SetDecodeGraphs(int64_t recorded, int64_t replayed, int64_t held) {
  graphs_recorded_->Increment(static_cast<double>(recorded - last_recorded_));
  graph_steps_->Increment(static_cast<double>(replayed - last_replayed_));
  graphs_held_->Set(static_cast<double>(held));
  last_recorded_ = recorded;
  last_replayed_ = replayed;
}

std::string WorkerMetrics::Serialize() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace gemmaserve::worker
