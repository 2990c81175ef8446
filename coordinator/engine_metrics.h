// EngineMetrics: feeds the engine loop's observations into CoordinatorMetrics, the coordinator's
// Prometheus series (served on the HTTP port's /metrics).
#pragma once

#include "coordinator/engine_loop.h"
#include "coordinator/metrics.h"

namespace gemmaserve::coordinator {

class EngineMetrics final : public EngineObserver {
 public:
  // `metrics` must outlive this observer.
  explicit EngineMetrics(CoordinatorMetrics& metrics) : metrics_(metrics) {}

  void OnStep(const StepReport& report) override;
  void OnFirstToken(absl::Duration ttft, absl::Duration queue) override;
  void OnToken(absl::Duration inter_token) override;
  void OnFinished(const Usage& usage, FinishReason reason) override;
  void OnLoad(const LoadInfo& load) override;

 private:
  CoordinatorMetrics& metrics_;
};

}  // namespace gemmaserve::coordinator
