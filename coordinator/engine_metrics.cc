#include "coordinator/engine_metrics.h"

#include "spdlog/spdlog.h"

namespace gemmaserve::coordinator {

void EngineMetrics::OnStep(const StepReport& report) {
  static const google::protobuf::RepeatedPtrField<internal::v1::ExpertCounts> kNone;
  const absl::Status status =
      metrics_.RecordStep(report.kind, absl::Seconds(report.duration_s), report.num_sequences,
                          report.result != nullptr ? report.result->expert_counts() : kNone);
  if (!status.ok()) spdlog::warn("expert counts not recorded: {}", std::string(status.message()));
}

void EngineMetrics::OnFirstToken(double ttft_s, double queue_s) {
  metrics_.RecordFirstToken(absl::Seconds(ttft_s), absl::Seconds(queue_s));
}

void EngineMetrics::OnToken(double inter_token_s) {
  metrics_.RecordNextTokens(1, absl::Seconds(inter_token_s));
}

void EngineMetrics::OnFinished(const Usage& usage, FinishReason reason) {
  metrics_.RecordRequestFinished(usage, reason);
}

void EngineMetrics::OnLoad(const LoadInfo& load) { metrics_.SetLoad(load); }

}  // namespace gemmaserve::coordinator
