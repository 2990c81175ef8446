// Worker: one rank of a model replica as a process (DESIGN.md, "Processes and data flow"). It dials
// the coordinator, learns the cluster layout, loads its shard, sizes its KV cache, registers,
// joins the collective group, then executes the steps the coordinator streams to it until told to
// shut down.
//
// A worker serves one generation of its replica (worker.proto): it joins the generation the
// cluster config names, and never another. When the generation ends the worker ends too, and its
// launcher (`serve`) or orchestrator (a StatefulSet) starts it again to join the next one.
//
// Failure policy: anything before the first step (coordinator unreachable past the retry budget,
// a shard that does not fit, a registration refused, a rendezvous timeout) returns a Status whose
// message the process prints before exiting non-zero. A lost coordinator stream ends the worker
// with UNAVAILABLE, at once even mid-step (step_stream.h); a failed collective mid-step crashes it
// (the coordinator ends the generation). A step result over the step message limit is replaced by
// an error reply, so the coordinator fails that step and the stream survives.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "parallel/internal_auth.h"

namespace gemmaserve::worker {

struct WorkerOptions {
  std::string coordinator;         // HOST:PORT of the coordinator's internal port
  parallel::InternalAuthOptions auth;  // the cluster secret every call carries; mutual TLS
  int rank = 0;
  int world_size = 1;
  // "cpu", "cuda:N", or "cuda": the GPU of index local_rank among the visible ones.
  std::string device = "cpu";
  int local_rank = -1;             // −1: LOCAL_RANK from the environment, else the rank
  int threads = 1;                 // compute threads
  std::string cpu_precision = "f32";  // f32, or bf16 matmuls for large steps (ops::SetCpuPrecision)
  std::string precision = "f32";   // on a GPU: f32 (exact) or bf16 weights, KV and matmul inputs
  int64_t kv_cache_mb = 256;       // memory budget of the KV cache on the CPU
  // On a GPU: the share of its memory this worker may hold (weights, activations, KV cache); the
  // KV cache gets what the rest leaves.
  double gpu_memory_utilization = 0.9;
  // On a GPU: every step op by op, no decode graphs (vLLM's --enforce-eager).
  bool enforce_eager = false;
  int metrics_port = 9400;         // Prometheus /metrics and /health; 0 = any free port, −1 = off
  // Address peers reach this worker at for collectives: an IP, hostname or interface name.
  // Empty: the local address of the connection to the coordinator.
  std::string collective_host;
  // How long to keep retrying an unreachable coordinator before giving up.
  absl::Duration connect_timeout = absl::Seconds(60);
  // How long registration and the collective rendezvous may wait for the other ranks.
  absl::Duration join_timeout = absl::Seconds(120);
};

// Runs the worker until shutdown. OK after a Shutdown from the coordinator.
absl::Status RunWorker(const WorkerOptions& options);

}  // namespace gemmaserve::worker
