// WorkerMetrics: one worker's Prometheus metrics, served over HTTP at /metrics (and /health) on
// its own port (default 9400) by a MetricsHttpServer. Every series carries the worker's rank:
//   gemmaserve_worker_step_compute_seconds{rank}        histogram, forward time of one step
//   gemmaserve_worker_step_communication_seconds{rank}  histogram, time inside collectives per step
//   gemmaserve_worker_weight_bytes{rank}                gauge, weights this rank holds
//   gemmaserve_worker_kv_cache_bytes{rank}              gauge, KV cache this rank allocated
//   gemmaserve_worker_up{rank}                          gauge, 1 while the process serves metrics
//   gemmaserve_worker_ready{rank}                       gauge, 1 when attached and taking steps
//   gemmaserve_worker_decode_graph_steps_total{rank}    counter, decode steps replayed as CUDA
//   graphs gemmaserve_worker_decode_graphs_recorded_total{rank} counter, CUDA graphs recorded
//   gemmaserve_worker_decode_graphs{rank}               gauge, CUDA graphs held
// Expert load is not here: rank 0 sends its routing counts to the coordinator with each step.
//
// Ownership: the object owns its registry and HTTP server; destroying it stops serving.
// Thread-safety: every method may be called from any thread; scrapes run on the server's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "worker/metrics_http_server.h"

namespace gemmaserve::worker {

struct WorkerMetricsOptions {
  int rank = 0;
  std::string bind_address = "0.0.0.0";  // interface the metrics server listens on
  int port = 9400;                        // 0: the system picks a free port (tests)
};

class WorkerMetrics {
 public:
  // Starts serving. UNAVAILABLE naming the address when the port cannot be bound (in use, no
  // permission); INVALID_ARGUMENT for a port outside [0, 65535].
  static absl::StatusOr<std::unique_ptr<WorkerMetrics>> Start(const WorkerMetricsOptions& options);
  ~WorkerMetrics();

  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  // The port actually listened on (the chosen one when options.port was 0).
  int port() const { return server_->port(); }

  // One step's times on this rank (StepResult.compute_ms and communication_ms).
  void RecordStep(absl::Duration compute, absl::Duration communication);
  void SetWeightBytes(int64_t bytes);
  void SetKvCacheBytes(int64_t bytes);
  void SetReady(bool ready);
  // The model's decode graph totals since it was made (model::Gemma4Model::graph_stats), after a
  // step: the counters advance by what changed. Called from the step's thread only.
  void SetDecodeGraphs(int64_t recorded, int64_t replayed, int64_t held);

  // The text a scrape of /metrics returns.
  std::string Serialize() const;

 private:
  explicit WorkerMetrics(int rank);

  // Declared before server_ so that the server, destroyed first, never scrapes a dead registry.
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> server_;

  prometheus::Histogram* compute_;
  prometheus::Histogram* communication_;
  prometheus::Gauge* weight_bytes_;
  prometheus::Gauge* kv_cache_bytes_;
  prometheus::Gauge* ready_;
  prometheus::Counter* graph_steps_;
  prometheus::Counter* graphs_recorded_;
  prometheus::Gauge* graphs_held_;
  int64_t last_recorded_ = 0;  // the totals SetDecodeGraphs saw last
  int64_t last_replayed_ = 0;
};

}  // namespace gemmaserve::worker
