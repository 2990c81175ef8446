// DeviceGraph: the ops of a step recorded once on a GPU and replayed with one launch (a CUDA
// graph, kernels/graph.h); what a decode step of the model replays instead of launching its
// kernels one by one. The ops recorded must take their tensors where they stay between replays
// and must not allocate or copy to the host (see kernels/graph.h for what capture refuses).
// There is nothing to record on the CPU, where ops run as they are called.
//
// Thread-safety: one thread captures and replays a device's graphs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "common/tensor.h"

namespace gemmaserve::kernels {
class CudaGraph;
}

namespace gemmaserve::ops {

class DeviceGraph {
 public:
  // Records the ops `record` calls on `device`, executing none. FAILED_PRECONDITION on the CPU
  // or in a build without CUDA; UNAVAILABLE with the runtime's message when capture failed.
  static absl::StatusOr<std::unique_ptr<DeviceGraph>> Capture(const Device& device,
                                                              const std::function<void()>& record);
  ~DeviceGraph();
  DeviceGraph(const DeviceGraph&) = delete;
  DeviceGraph& operator=(const DeviceGraph&) = delete;

  // Runs the recorded ops again, on the memory they were recorded with, asynchronously and in
  // order with every op before and after.
  void Replay();

  // Whether a buffer the ops keep for themselves (a matmul's rounded input) has moved since
  // capture: the graph would use freed memory, so it must not be replayed; capture it again.
  bool stale() const;

  int64_t num_nodes() const;

 private:
  DeviceGraph(std::unique_ptr<kernels::CudaGraph> graph, int64_t generation);

  std::unique_ptr<kernels::CudaGraph> graph_;
  int64_t generation_;  // kernels::ScratchGeneration() when captured
};

}  // namespace gemmaserve::ops
