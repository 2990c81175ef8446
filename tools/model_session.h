// ModelSession: what `run`, `logits` and `bench-model` drive: the model in this process (a
// ModelShard behind a LocalCommunicator) or, with --tp/--ep N, a LocalCluster of N worker
// processes behind a coordinator — both through a SequenceDriver, so the two paths differ only in
// where the step runs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/local_cluster.h"
#include "coordinator/sequence_driver.h"
#include "model/config.h"
#include "parallel/communicator.h"
#include "tools/flags.h"
#include "tools/parallel_flags.h"
#include "worker/model_shard.h"

namespace gemmaserve::tools {

struct SessionOptions {
  std::string model_dir;
  ParallelFlags parallel;       // world size 1: the model runs in this process
  int64_t threads = 2;          // compute threads (per worker with --tp/--ep)
  std::string kv_cache_dtype = "auto";
  std::string device = "cpu";     // cpu, cuda or cuda:N
  std::string precision = "f32";  // f32 (exact), or bf16 matrices and KV (GPU only)
  std::string cpu_precision = "f32";  // f32, or bf16 prefill matmuls (ops::SetCpuPrecision)
  double gpu_memory_utilization = 0.9;  // per worker process with --tp/--ep on GPUs
  bool enforce_eager = false;           // on a GPU: no decode graphs
  int64_t max_context = 0;      // tokens per sequence the KV cache must hold
  int64_t max_sequences = 1;
  std::string log_level = "warn";  // passed on to worker processes

  // Declares --model, --tp, --ep, --threads, --kv-cache-dtype, --device, --precision,
  // --cpu-precision, --gpu-memory-utilization and --enforce-eager.
  void AddFlags(FlagSet& flags);
};

class ModelSession {
 public:
  static absl::StatusOr<std::unique_ptr<ModelSession>> Open(const SessionOptions& options);

  const model::Gemma4Config& config() const { return config_; }
  coordinator::SequenceDriver& driver() { return *driver_; }
  // The in-process model, or null when the steps run in worker processes.
  worker::ModelShard* local_shard() { return shard_.get(); }

 private:
  ModelSession() = default;

  model::Gemma4Config config_;
  std::unique_ptr<parallel::Communicator> comm_;
  std::unique_ptr<worker::ModelShard> shard_;
  std::unique_ptr<coordinator::LocalCluster> cluster_;
  std::unique_ptr<coordinator::SequenceDriver> driver_;
};

}  // namespace gemmaserve::tools
