// The device query of a build without CUDA: there is never a GPU, so never a graph to capture.
#include "common/check.h"
#include "kernels/device.h"
#include "kernels/graph.h"

namespace gemmaserve::kernels {

bool BuiltWithCuda() { return false; }

absl::StatusOr<std::vector<CudaDevice>> ListCudaDevices() {
  return absl::FailedPreconditionError("this build has no CUDA support (GEMMASERVE_CUDA=OFF)");
}

absl::Status CheckCudaDevice(int) { return ListCudaDevices().status(); }

absl::StatusOr<CudaMemory> CudaMemoryInfo(int) { return ListCudaDevices().status(); }

absl::StatusOr<int64_t> FreeCudaMemory(int) { return ListCudaDevices().status(); }

struct CudaGraph::Handles {};

absl::StatusOr<std::unique_ptr<CudaGraph>> CudaGraph::Capture(const Device&,
                                                              const std::function<void()>&) {
  return ListCudaDevices().status();
}

CudaGraph::~CudaGraph() = default;

void CudaGraph::Replay() { CHECK(false) << "CudaGraph::Replay in a build without CUDA"; }

}  // namespace gemmaserve::kernels
