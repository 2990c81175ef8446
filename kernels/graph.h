// CudaGraph: a run of kernels recorded once and replayed with one launch (a CUDA graph), which
// saves the per-kernel launch cost that dominates a small decode step (a few thousand launches
// of microseconds each for the 31B model).
//
// Capture records what the kernels launch while `record` runs: every kernel, cuBLAS call and
// memset of the calling thread goes to the graph's stream (kernels/cuda_util.h, Stream()) and
// nothing executes. What the graph reads and writes are the addresses the kernels were given
// then, and their launch shapes are fixed; only the contents of that memory may change between
// replays. So the recorded code must take its buffers where they stay (a Workspace, buffers the
// caller keeps) and must not copy to or from the host or synchronise: the runtime refuses such
// calls during capture, and the recording fails naming the first refused call
// (kernels/cuda_util.h: a failed call while recording is not a CHECK failure). Nor may it allocate
// device memory, which is a CHECK failure as everywhere (common/tensor.cc): run the same ops once
// before recording them, so that every buffer they keep exists.
//
// The graph's stream is a blocking stream of the device: it waits for work issued before on the
// legacy default stream, and that stream's later work waits for a replay, so a replay is ordered
// between eager steps like any kernel.
//
// Thread-safety: one thread captures and replays a device's graphs, and while it records no other
// thread may use the device's legacy stream (the runtime refuses that while a blocking stream
// captures; no other thread of a worker touches the GPU).
#pragma once

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "common/tensor.h"

namespace gemmaserve::kernels {

class CudaGraph {
 public:
  // Records what `record` launches on `device`'s graph stream, then instantiates it. UNAVAILABLE
  // with the runtime's message when a call inside `record`, the capture or the instantiation
  // failed; `record` then ran to its end on calls that did nothing.
  static absl::StatusOr<std::unique_ptr<CudaGraph>> Capture(const Device& device,
                                                            const std::function<void()>& record);
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Launches the recorded kernels, asynchronously, ordered after every earlier kernel.
  void Replay();

  // Nodes recorded: kernels, memsets and what cuBLAS adds.
  int64_t num_nodes() const { return num_nodes_; }

 private:
  struct Handles;
  CudaGraph(const Device& device, std::unique_ptr<Handles> handles, int64_t num_nodes);

  Device device_;
  std::unique_ptr<Handles> handles_;
  int64_t num_nodes_ = 0;
};

}  // namespace gemmaserve::kernels
