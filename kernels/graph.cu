#include "kernels/graph.h"

#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_util.h"

namespace gemmaserve::kernels {
namespace {

// The stream graphs of `ordinal` are captured and replayed on: one per device, made on first use
// and kept. Blocking (cudaStreamCreate's default): ordered against the legacy default stream, which
// is unusable, for every thread, while it captures.
cudaStream_t GraphStream(int ordinal) {
  static std::mutex mutex;
  static std::map<int, cudaStream_t> streams;
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, added] = streams.try_emplace(ordinal, nullptr);
  if (added) GS_CUDA_CHECK(cudaStreamCreate(&it->second));
  return it->second;
}

absl::Status Unavailable(const char* call, cudaError_t error) {
  return absl::UnavailableError(
      absl::StrCat("CUDA graph: ", call, ": ", cudaGetErrorString(error)));
}

}  // namespace

struct CudaGraph::Handles {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaStream_t stream = nullptr;
};

absl::StatusOr<std::unique_ptr<CudaGraph>> CudaGraph::Capture(const Device& device,
                                                              const std::function<void()>& record) {
  CHECK(device.is_cuda()) << "CudaGraph on " << device.ToString();
  GS_CUDA_CHECK(cudaSetDevice(device.ordinal));
  auto handles = std::make_unique<Handles>();
  handles->stream = GraphStream(device.ordinal);
  // Thread-local mode: this thread may not call what would synchronise (cudaMalloc, cudaMemcpy);
  // other threads are not disturbed.
  cudaError_t error = cudaStreamBeginCapture(handles->stream, cudaStreamCaptureModeThreadLocal);
  if (error != cudaSuccess) {
    cudaGetLastError();  // not left for the next launch check to find
    return Unavailable("cudaStreamBeginCapture", error);
  }
  internal::CaptureFailure failure;
  {
    internal::StreamScope stream(handles->stream);
    internal::CaptureFailureScope failures(&failure);
    record();
  }
  error = cudaStreamEndCapture(handles->stream, &handles->graph);
  if (!failure.call.empty() || error != cudaSuccess) {
    if (handles->graph != nullptr) cudaGraphDestroy(handles->graph);
    cudaGetLastError();  // a recording's errors are not sticky: clear them for the next call
    if (!failure.call.empty()) {
      return absl::UnavailableError(
          absl::StrCat("CUDA graph: while recording, ", failure.call, ": ", failure.message));
    }
    return Unavailable("cudaStreamEndCapture", error);
  }
  size_t num_nodes = 0;
  GS_CUDA_CHECK(cudaGraphGetNodes(handles->graph, nullptr, &num_nodes));
  error = cudaGraphInstantiate(&handles->exec, handles->graph, 0);
  if (error != cudaSuccess) {
    cudaGraphDestroy(handles->graph);
    cudaGetLastError();
    return Unavailable("cudaGraphInstantiate", error);
  }
  return std::unique_ptr<CudaGraph>(
      new CudaGraph(device, std::move(handles), static_cast<int64_t>(num_nodes)));
}

CudaGraph::CudaGraph(const Device& device, std::unique_ptr<Handles> handles, int64_t num_nodes)
    : device_(device), handles_(std::move(handles)), num_nodes_(num_nodes) {}

CudaGraph::~CudaGraph() {
  cudaSetDevice(device_.ordinal);
  cudaGraphExecDestroy(handles_->exec);
  cudaGraphDestroy(handles_->graph);
}

void CudaGraph::Replay() {
  GS_CUDA_CHECK(cudaSetDevice(device_.ordinal));
  GS_CUDA_CHECK(cudaGraphLaunch(handles_->exec, handles_->stream));
}

}  // namespace gemmaserve::kernels
