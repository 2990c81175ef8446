#include "coordinator/engine_metrics.h"

#include "spdlog/spdlog.h"

namespace gemmaserve::coordinator {

void EngineMetrics::OnStep(const StepReport& report) {
  static const google::protobuf::RepeatedPtrField<internal::v1::ExpertCounts> kNone;
  const absl::Status status =
      metrics_.RecordStep(report.kind, report.duration, report.num_sequences,
                          report.result != nullptr ? report.result->expert_counts() : kNone);
  if (!status.ok()) spdlog::warn("expert counts not recorded: {}", std::string(status.message()));
}

void EngineMetrics::OnFirstToken(absl::Duration ttft, absl::Duration queue) {
  metrics_.RecordFirstToken(ttft, queue);
}

void EngineMetrics::OnToken(absl::Duration inter_token) {
  metrics_.RecordNextTokens(1, inter_token);
}

void EngineMetrics::OnFinished(const Usage& usage, FinishReason reason) {
  metrics_.RecordRequestFinished(usage, reason);
}

void EngineMetrics::OnLoad(const LoadInfo& load) { metrics_.SetLoad(load); }

}  // namespace gemmaserve::coordinator
