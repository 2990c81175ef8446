// gemmaserve worker: one rank of a replica, dialing the coordinator (DESIGN.md, "Processes,
// commands and ports").
#include "common/logging.h"
#include "common/status_macros.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/server_flags.h"
#include "worker/worker.h"

namespace gemmaserve::tools {

int WorkerMain(int argc, char** argv) {
  worker::WorkerOptions options;
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t threads = 1;
  int64_t local_rank = -1;
  int64_t connect_timeout_s = 60;
  int64_t metrics_port = options.metrics_port;
  std::string log_level = "info";
  InternalPortFlags internal;
  FlagSet flags("worker", "Run one rank of a model replica, driven by a coordinator.");
  flags.String("coordinator", &options.coordinator, "HOST:PORT of the coordinator's internal port",
               true);
  flags.Int("rank", &rank, "this worker's rank, 0 … world size − 1", true);
  flags.Int("world-size", &world_size, "ranks in the replica", true);
  flags.String("device", &options.device,
               "cpu, cuda:N, or cuda (the GPU of index --local-rank among the visible ones)");
  flags.Int("local-rank", &local_rank,
            "this worker's index on its machine (default: LOCAL_RANK, else --rank)");
  flags.Int("threads", &threads, "compute threads");
  flags.String("cpu-precision", &options.cpu_precision,
               "f32 (exact) or bf16 (prefill matmuls on the CPU's bf16 instructions)");
  flags.String("precision", &options.precision,
               "on a GPU: f32 (exact) or bf16 (weights, KV cache and matmul inputs)");
  flags.Int("kv-cache-mb", &options.kv_cache_mb, "memory budget of the KV cache on the CPU, MiB");
  flags.Double("gpu-memory-utilization", &options.gpu_memory_utilization,
               "on a GPU: the share of its memory this worker may hold; the KV cache gets what "
               "weights and activations leave");
  flags.Bool("enforce-eager", &options.enforce_eager,
             "on a GPU: run every step op by op, without CUDA graphs for decode steps");
  flags.String("collective-host", &options.collective_host,
               "address peers reach this worker at (default: the local address toward the coordinator)");
  flags.Int("metrics-port", &metrics_port,
            "Prometheus /metrics and /health port; 0 = any free port, -1 = off");
  flags.Int("connect-timeout-s", &connect_timeout_s,
            "seconds to keep retrying an unreachable coordinator");
  flags.String("log-level", &log_level, "trace, debug, info, warn, error or off");
  internal.AddFlags(flags);
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&]() -> absl::Status {
    RETURN_IF_ERROR(InitLogging(log_level));
    options.rank = static_cast<int>(rank);
    options.world_size = static_cast<int>(world_size);
    options.local_rank = static_cast<int>(local_rank);
    options.threads = static_cast<int>(threads);
    options.connect_timeout = absl::Seconds(connect_timeout_s);
    options.metrics_port = static_cast<int>(metrics_port);
    ASSIGN_OR_RETURN(options.auth, internal.Resolve());
    return worker::RunWorker(options);
  });
}

}  // namespace gemmaserve::tools
