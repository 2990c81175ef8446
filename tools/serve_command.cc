// gemmaserve serve: the embedded default — a coordinator and N local workers in one command.
// gemmaserve coordinator: the multi-host form — the coordinator alone, waiting for
// `gemmaserve worker` processes started elsewhere (the Helm chart's layout).
//
// Both serve gRPC gemmaserve.v1.Inference (--grpc-port), OpenAI-compatible HTTP (--http-port)
// and the internal worker protocol (--internal-port). SIGTERM or SIGINT drains: the coordinator
// turns not-ready, refuses new requests, lets running ones finish within --drain-timeout-s, then
// stops its workers (a stalled worker adds at most a few seconds).
//
// A worker that dies or stalls past its step's deadline is replaced (`serve` relaunches its local
// workers; `coordinator` waits for the orchestrator to restart them) while the replica answers
// 503 / UNAVAILABLE to new requests, and the requests that were running continue once it is back.
// If it is not back within --recovery-timeout-s, /health turns 503 so the orchestrator restarts
// the coordinator.
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "coordinator/api/generate_params.h"
#include "coordinator/api/http_server.h"
#include "coordinator/api/inference_service.h"
#include "coordinator/api/served_model.h"
#include "coordinator/deferred_engine.h"
#include "coordinator/engine_loop.h"
#include "coordinator/engine_metrics.h"
#include "coordinator/local_cluster.h"
#include "coordinator/metrics.h"
#include "coordinator/step_message_size.h"
#include "model/kv_cache.h"
#include "ops/linear.h"
#include "spdlog/spdlog.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/parallel_flags.h"
#include "tools/server_flags.h"
#include "worker/gpu_placement.h"

namespace gemmaserve::tools {
namespace {

struct ServeConfig {
  std::string model_dir;
  ParallelFlags parallel;
  std::string host = "0.0.0.0";
  std::string internal_host;  // empty: 127.0.0.1 for serve, 0.0.0.0 for coordinator
  int64_t grpc_port = 50051;
  int64_t http_port = 8000;
  int64_t internal_port = 50052;
  std::string served_model_name;
  int64_t threads = 1;
  std::string device = "cpu";
  std::string precision = "f32";
  double gpu_memory_utilization = 0.9;
  bool enforce_eager = false;
  std::string cpu_precision = "f32";
  int64_t kv_cache_mb = 512;
  std::string kv_cache_dtype = "auto";
  int64_t worker_metrics_port = 9400;
  int64_t block_size = 16;
  int64_t max_num_seqs = 256;
  int64_t max_tokens_per_step = 2048;
  int64_t max_waiting = 1024;
  int64_t max_model_len = 0;  // 0: the checkpoint's max_position_embeddings
  bool no_prefix_caching = false;
  int64_t drain_timeout_s = 30;
  int64_t ready_timeout_s = 1800;
  int64_t step_timeout_s = 10;
  int64_t step_timeout_per_token_ms = 50;
  int64_t recovery_timeout_s = 300;
  std::string log_level = "info";
  ApiFlags api;
  InternalPortFlags internal;
};

void AddFlags(FlagSet& flags, ServeConfig& c, bool local_workers) {
  flags.String("model", &c.model_dir, "checkpoint directory (config.json, safetensors, tokenizer.json)", true);
  c.parallel.AddFlags(flags);
  flags.String("host", &c.host, "address the gRPC and HTTP APIs listen on");
  flags.Int("grpc-port", &c.grpc_port, "gemmaserve.v1.Inference, grpc.health.v1, reflection");
  flags.Int("http-port", &c.http_port, "OpenAI-compatible HTTP, /health, /ready, /metrics");
  flags.Int("internal-port", &c.internal_port, "the worker protocol (gemmaserve.internal.v1)");
  flags.String("internal-host", &c.internal_host,
               local_workers ? "address the internal port listens on (default 127.0.0.1)"
                             : "address the internal port listens on (default 0.0.0.0)");
  flags.String("served-model-name", &c.served_model_name, "model name clients send (default: the directory's name)");
  if (local_workers) {
    flags.Int("threads", &c.threads, "compute threads per worker");
    flags.String("device", &c.device,
                 "cpu, or cuda: worker r on the visible GPU r (mod their count); cuda:N puts every "
                 "worker on GPU N");
    flags.String("precision", &c.precision,
                 "on GPUs: f32 (exact) or bf16 (weights, KV cache and matmul inputs)");
    flags.Double("gpu-memory-utilization", &c.gpu_memory_utilization,
                 "on GPUs: the share of a GPU's memory each worker may hold; the KV cache gets "
                 "what weights and activations leave");
    flags.Bool("enforce-eager", &c.enforce_eager,
               "on GPUs: run every step op by op, without CUDA graphs for decode steps");
    flags.String("cpu-precision", &c.cpu_precision,
                 "f32 (exact) or bf16 (prefill matmuls on the CPU's bf16 instructions: AMX, "
                 "AVX512-BF16)");
    flags.Int("kv-cache-mb", &c.kv_cache_mb, "KV cache memory budget per worker, MiB");
    flags.Int("worker-metrics-port", &c.worker_metrics_port,
              "worker r serves /metrics on this port + r; 0 = free ports, -1 = off");
  }
  flags.Int("block-size", &c.block_size, "KV slots per block");
  flags.String("kv-cache-dtype", &c.kv_cache_dtype,
               "auto (f32 on the CPU), f32, or bf16 (half the KV memory)");
  flags.Int("max-num-seqs", &c.max_num_seqs, "sequences running at once");
  flags.Int("max-tokens-per-step", &c.max_tokens_per_step, "token budget of one step (chunked prefill)");
  flags.Int("max-waiting", &c.max_waiting, "queued requests before RESOURCE_EXHAUSTED / HTTP 429");
  flags.Int("max-model-len", &c.max_model_len,
            "prompt plus new tokens of one request, at most (0: the checkpoint's "
            "max_position_embeddings, or what the KV cache holds if that is less)");
  flags.Bool("no-prefix-caching", &c.no_prefix_caching, "do not reuse the KV of repeated prefixes");
  flags.Int("drain-timeout-s", &c.drain_timeout_s, "on SIGTERM, how long running requests may finish");
  flags.Int("ready-timeout-s", &c.ready_timeout_s, "how long to wait for every worker to attach");
  flags.Int("step-timeout-s", &c.step_timeout_s,
            "a step's deadline is this plus --step-timeout-per-token-ms per token it computes; a "
            "worker that misses it is taken for stalled and replaced");
  flags.Int("step-timeout-per-token-ms", &c.step_timeout_per_token_ms,
            "the part of a step's deadline that grows with its tokens, ms per token (raise it "
            "for a large model on few CPU cores, where a stall would otherwise be misread)");
  flags.Int("recovery-timeout-s", &c.recovery_timeout_s,
            "how long lost workers may take to come back before /health turns 503 and the "
            "requests waiting for them fail");
  flags.String("log-level", &c.log_level, "trace, debug, info, warn, error or off");
  c.api.AddFlags(flags);
  c.internal.AddFlags(flags);
}

// Waits for SIGINT/SIGTERM (blocked in every thread, see Serve) up to `timeout`; true if one came.
bool AwaitSignal(const sigset_t& signals, absl::Duration timeout) {
  const timespec wait = absl::ToTimespec(timeout);
  return sigtimedwait(&signals, nullptr, &wait) > 0;
}

// The context length asked for: --max-model-len, or the checkpoint's when it is 0; never more than
// the checkpoint's, whose RoPE and window were trained for it.
absl::StatusOr<int64_t> RequestedModelLen(int64_t flag, const model::Gemma4Config& config) {
  if (flag < 0) return absl::InvalidArgumentError(absl::StrCat("--max-model-len ", flag, " < 0"));
  if (flag > config.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-model-len ", flag, " exceeds the checkpoint's max_position_embeddings (",
                     config.max_position_embeddings, ")"));
  }
  return flag > 0 ? flag : config.max_position_embeddings;
}

absl::Status Serve(ServeConfig c, bool local_workers) {
  RETURN_IF_ERROR(InitLogging(c.log_level));
  ASSIGN_OR_RETURN(model::Gemma4Config config, model::Gemma4Config::FromModelDir(c.model_dir));
  ASSIGN_OR_RETURN(const parallel::ParallelLayout layout, c.parallel.Resolve(config, c.model_dir));
  ASSIGN_OR_RETURN(auto served, coordinator::api::ServedModel::Load(c.model_dir, c.served_model_name));
  coordinator::api::HttpServerOptions http_options;
  coordinator::api::GrpcApiServerOptions grpc_options;
  RETURN_IF_ERROR(c.api.Apply(&http_options, &grpc_options));
  ASSIGN_OR_RETURN(const parallel::InternalAuthOptions internal_auth, c.internal.Resolve());
  ASSIGN_OR_RETURN(const int64_t max_model_len, RequestedModelLen(c.max_model_len, config));
  if (!local_workers && internal_auth.cluster_secret.empty()) {
    return absl::InvalidArgumentError(
        "--cluster-secret-file (or GEMMASERVE_CLUSTER_SECRET) is required: every RPC on the "
        "internal port must carry the secret the workers are given");
  }
  spdlog::info("open file limit {}", RaiseOpenFileLimit());

  // Signals are taken by sigtimedwait on this thread only: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  coordinator::LocalClusterOptions cluster_options;
  cluster_options.spec.model_dir = c.model_dir;
  cluster_options.spec.layout = layout;
  cluster_options.spec.block_size = static_cast<int>(c.block_size);
  cluster_options.spec.max_tokens_per_step = static_cast<int>(c.max_tokens_per_step);
  RETURN_IF_ERROR(model::ResolveKvCacheDType(c.kv_cache_dtype, Device::Cpu()).status());
  cluster_options.spec.kv_cache_dtype = c.kv_cache_dtype;
  cluster_options.spec.step_timeout = absl::Seconds(c.step_timeout_s);
  cluster_options.spec.step_timeout_per_token = absl::Milliseconds(c.step_timeout_per_token_ms);
  cluster_options.spec.recovery_timeout = absl::Seconds(c.recovery_timeout_s);
  coordinator::StepShape shape;
  shape.max_num_seqs = c.max_num_seqs;
  shape.max_tokens_per_step = c.max_tokens_per_step;
  shape.max_model_len = max_model_len;
  shape.block_size = c.block_size;
  shape.max_top_logprobs = coordinator::api::kMaxTopLogprobs;
  if (config.is_moe()) {
    shape.num_layers = config.num_hidden_layers;
    shape.num_experts = config.num_experts;
  }
  cluster_options.spec.max_message_bytes = coordinator::StepMessageLimit(shape);
  const std::string internal_host =
      !c.internal_host.empty() ? c.internal_host : local_workers ? "127.0.0.1" : "0.0.0.0";
  cluster_options.internal_address = absl::StrCat(internal_host, ":", c.internal_port);
  cluster_options.auth = internal_auth;
  cluster_options.launch_workers = local_workers;
  RETURN_IF_ERROR(ops::SetCpuPrecision(c.cpu_precision));  // checks the value before any worker
  RETURN_IF_ERROR(worker::CheckGpuMemoryUtilization(c.gpu_memory_utilization));
  if (local_workers) PrepareLocalWorkerThreads(layout.world_size(), c.threads);
  cluster_options.worker_args = {"--threads", absl::StrCat(c.threads), "--cpu-precision",
                                 c.cpu_precision, "--kv-cache-mb",
                                 absl::StrCat(c.kv_cache_mb), "--log-level", c.log_level,
                                 "--device", c.device, "--precision", c.precision,
                                 "--gpu-memory-utilization",
                                 absl::StrCat(c.gpu_memory_utilization)};
  if (c.enforce_eager) cluster_options.worker_args.push_back("--enforce-eager");
  cluster_options.metrics_port_base = static_cast<int>(c.worker_metrics_port);
  cluster_options.wait_ready = false;
  cluster_options.restart_workers = true;
  ASSIGN_OR_RETURN(auto cluster, coordinator::LocalCluster::Start(cluster_options));

  coordinator::CoordinatorMetricsOptions metrics_options;
  if (config.is_moe()) {
    metrics_options.moe.num_layers = static_cast<int>(config.num_hidden_layers);
    metrics_options.moe.num_experts = static_cast<int>(config.num_experts);
    metrics_options.moe.ep_size = layout.ep();
  }
  ASSIGN_OR_RETURN(auto metrics, coordinator::CoordinatorMetrics::Create(metrics_options));
  coordinator::EngineMetrics observer(*metrics);

  coordinator::DeferredEngine deferred;
  http_options.metrics = [&metrics] { return metrics->Serialize(); };
  coordinator::WorkerGroup& group = cluster->group();
  http_options.healthy = [&group] { return group.healthy(); };
  http_options.address = c.host;
  http_options.port = static_cast<int>(c.http_port);
  ASSIGN_OR_RETURN(auto http, coordinator::api::HttpServer::Start(http_options, &deferred, served.get()));
  grpc_options.address = absl::StrCat(c.host, ":", c.grpc_port);
  ASSIGN_OR_RETURN(auto grpc_api, coordinator::api::GrpcApiServer::Start(grpc_options, &deferred, served.get()));
  grpc_api->SetServing(false);
  spdlog::info("serving {} as \"{}\": gRPC :{}, HTTP :{}, internal :{}; waiting for {} worker(s)",
               c.model_dir, served->name(), grpc_api->port(), http->port(), cluster->internal_port(),
               layout.world_size());

  const absl::Time give_up = absl::Now() + absl::Seconds(c.ready_timeout_s);
  while (true) {
    absl::Status ready = cluster->WaitReady(absl::Milliseconds(500));
    if (ready.ok()) break;
    if (!absl::IsDeadlineExceeded(ready) || absl::Now() > give_up) return ready;
    if (AwaitSignal(signals, absl::ZeroDuration())) return absl::OkStatus();
  }

  coordinator::EngineOptions engine_options;
  engine_options.recovery_timeout = absl::Seconds(c.recovery_timeout_s);
  coordinator::SchedulerOptions& s = engine_options.scheduler;
  s.block_size = c.block_size;
  s.kv_pages = group.kv_pages();
  s.sliding_window = config.sliding_window;
  s.max_num_seqs = c.max_num_seqs;
  s.max_tokens_per_step = c.max_tokens_per_step;
  s.max_waiting = c.max_waiting;
  s.max_model_len = coordinator::MaxSequenceTokens(s, max_model_len);
  if (s.max_model_len < max_model_len) {
    spdlog::warn(
        "the KV cache holds one sequence of at most {} tokens ({} pages of {}-token blocks), fewer "
        "than the max model length of {} ({}): one request is limited to {} tokens; more "
        "--kv-cache-mb lifts the limit",
        s.max_model_len, s.kv_pages.num_pages, c.block_size, max_model_len,
        c.max_model_len > 0 ? "--max-model-len" : "the checkpoint's max_position_embeddings",
        s.max_model_len);
  }
  s.enable_prefix_caching = !c.no_prefix_caching;
  RETURN_IF_ERROR(s.Validate());
  engine_options.eos_token_ids = served->eos_token_ids();
  const RealClock clock;
  coordinator::EngineLoop engine(
      engine_options, &served->tokenizer(),
      [&group](const internal::v1::StepPlan& step) { return group.Step(step); },
      [&group] { return group.ready(); }, clock, &observer);
  engine.Start();
  deferred.Set(&engine);
  grpc_api->SetServing(true);
  spdlog::info("ready: {} KV pages ({} sliding or {} full blocks of {} tokens each), max model "
               "length {}",
               s.kv_pages.num_pages, s.kv_pages.blocks_per_page[0], s.kv_pages.blocks_per_page[1],
               c.block_size, s.max_model_len);

  while (!AwaitSignal(signals, absl::Seconds(1))) {
    grpc_api->SetServing(engine.Ready());  // off while lost workers are replaced
  }
  spdlog::info("draining (up to {} s)", c.drain_timeout_s);
  grpc_api->SetServing(false);
  if (!engine.Drain(absl::Seconds(c.drain_timeout_s))) {
    spdlog::warn("drain timed out; aborting the requests still running");
  }
  http->Shutdown();
  grpc_api->Shutdown();
  // Ends a step in flight at once, even one a stalled worker would never answer, so that the
  // engine loop can stop.
  group.Shutdown("the coordinator is stopping", absl::Seconds(3));
  engine.Stop();
  cluster.reset();  // stops the workers
  spdlog::info("stopped");
  return absl::OkStatus();
}

}  // namespace

int ServeMain(int argc, char** argv) {
  ServeConfig config;
  FlagSet flags("serve", "Serve a model with a coordinator and local worker processes.");
  AddFlags(flags, config, /*local_workers=*/true);
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return Serve(config, /*local_workers=*/true); });
}

int CoordinatorMain(int argc, char** argv) {
  ServeConfig config;
  FlagSet flags("coordinator", "Serve a model with workers started elsewhere (gemmaserve worker).");
  AddFlags(flags, config, /*local_workers=*/false);
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return Serve(config, /*local_workers=*/false); });
}

}  // namespace gemmaserve::tools
