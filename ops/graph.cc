#include "ops/graph.h"

#include <utility>

#include "kernels/graph.h"
#include "kernels/linear.h"

namespace gemmaserve::ops {

absl::StatusOr<std::unique_ptr<DeviceGraph>> DeviceGraph::Capture(
    const Device& device, const std::function<void()>& record) {
#ifdef GEMMASERVE_HAVE_CUDA
  if (device.is_cuda()) {
    const int64_t generation = kernels::ScratchGeneration();
    absl::StatusOr<std::unique_ptr<kernels::CudaGraph>> graph =
        kernels::CudaGraph::Capture(device, record);
    if (!graph.ok()) return graph.status();
    return std::unique_ptr<DeviceGraph>(new DeviceGraph(std::move(*graph), generation));
  }
#endif
  return absl::FailedPreconditionError("graphs of ops are recorded on a CUDA GPU only, not on " +
                                       device.ToString());
}

DeviceGraph::DeviceGraph(std::unique_ptr<kernels::CudaGraph> graph, int64_t generation)
    : graph_(std::move(graph)), generation_(generation) {}

DeviceGraph::~DeviceGraph() = default;

void DeviceGraph::Replay() {
  CHECK(!stale()) << "DeviceGraph: replayed after a buffer it uses moved";
  graph_->Replay();
}

bool DeviceGraph::stale() const {
#ifdef GEMMASERVE_HAVE_CUDA
  return kernels::ScratchGeneration() != generation_;
#else
  return false;
#endif
}

int64_t DeviceGraph::num_nodes() const { return graph_->num_nodes(); }

}  // namespace gemmaserve::ops
