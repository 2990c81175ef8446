#include "worker/worker.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "gemmaserve/internal/v1/worker.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "kernels/device.h"
#include "model/checkpoint.h"
#include "model/gemma4.h"
#include "ops/linear.h"
#include "ops/weights.h"
#include "parallel/gloo_communicator.h"
#include "parallel/grpc_key_value_store.h"
#include "parallel/parallel_layout.h"
#include "spdlog/spdlog.h"
#include "worker/gpu_placement.h"
#include "worker/model_shard.h"
#include "worker/staged_communicator.h"
#include "worker/step_stream.h"
#include "worker/worker_metrics.h"

#ifdef GEMMASERVE_HAVE_CUDA
#include "parallel/nccl_communicator.h"
#endif

namespace gemmaserve::worker {
namespace {

namespace pb = internal::v1;

// Polls GetClusterConfig until the coordinator answers or `timeout` passes.
absl::StatusOr<pb::ClusterConfig> FetchClusterConfig(pb::Coordinator::Stub& stub,
                                                     const WorkerOptions& options) {
  const absl::Time give_up = absl::Now() + options.connect_timeout;
  absl::Duration backoff = absl::Milliseconds(100);
  grpc::Status last;
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    pb::ClusterConfig config;
    last = stub.GetClusterConfig(&context, pb::GetClusterConfigRequest(), &config);
    if (last.ok()) return config;
    if (last.error_code() != grpc::StatusCode::UNAVAILABLE &&
        last.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return FromGrpc(last, absl::StrCat("GetClusterConfig from ", options.coordinator));
    }
    if (absl::Now() + backoff > give_up) break;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
  return absl::UnavailableError(absl::StrCat("coordinator ", options.coordinator,
                                             " unreachable for ",
                                             absl::FormatDuration(options.connect_timeout), ": ",
                                             last.error_message()));
}

// The local IP address this host uses to reach HOST:PORT (a UDP connect sends nothing).
absl::StatusOr<std::string> LocalAddressToward(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--coordinator \"", host_port, "\" is not HOST:PORT"));
  }
  const std::string host = host_port.substr(0, colon);
  const std::string port = host_port.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &result) != 0 || result == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot resolve coordinator host ", host));
  }
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in local{};
  socklen_t length = sizeof(local);
  const bool ok = fd >= 0 && connect(fd, result->ai_addr, result->ai_addrlen) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0;
  if (fd >= 0) close(fd);
  freeaddrinfo(result);
  if (!ok) return absl::UnavailableError(absl::StrCat("no route to coordinator host ", host));
  char buffer[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &local.sin_addr, buffer, sizeof(buffer));
  return std::string(buffer);
}

// MemAvailable from /proc/meminfo, bytes; 0 when unknown.
int64_t AvailableMemoryBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t value_kb = 0;
  std::string unit;
  while (meminfo >> key >> value_kb >> unit) {
    if (key == "MemAvailable:") return value_kb * 1024;
  }
  return 0;
}

absl::Status CheckShardFits(const std::string& model_dir, const WorkerOptions& options) {
  ASSIGN_OR_RETURN(model::Checkpoint checkpoint, model::Checkpoint::Open(model_dir));
  ASSIGN_OR_RETURN(const int64_t weight_bytes,
                   model::PreparedShardBytes(checkpoint, ops::WeightFormat{}, options.world_size));
  const int64_t needed = weight_bytes + (options.kv_cache_mb << 20);
  const int64_t available = AvailableMemoryBytes();
  if (available > 0 && needed > available) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "rank ", options.rank, ": the shard of ", model_dir, " needs ", weight_bytes >> 20,
        " MiB of weights plus ", options.kv_cache_mb, " MiB of KV cache, but only ",
        available >> 20, " MiB of memory are available"));
  }
  return absl::OkStatus();
}

absl::StatusOr<parallel::ShardPlan> PlanFor(const pb::ClusterConfig& cluster, const WorkerOptions& options) {
  ASSIGN_OR_RETURN(const parallel::ParallelLayout layout,
                   parallel::ParallelLayout::Create(cluster.tp_size(), cluster.ep_size()));
  if (layout.world_size() != options.world_size) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--world-size ", options.world_size, " but the coordinator runs a world of ",
        layout.world_size(), " (", layout.ToString(), ")"));
  }
  return layout.PlanFor(options.rank);
}

// A reply the coordinator can receive: one over the step message limit becomes an error reply
// (the coordinator fails that step), where sending it would break the stream and the replica.
pb::StepResult Deliverable(pb::StepResult reply, int64_t max_message_bytes) {
  const int64_t bytes = static_cast<int64_t>(reply.ByteSizeLong());
  if (max_message_bytes <= 0 || bytes <= max_message_bytes) return reply;
  pb::StepResult refused;
  refused.set_step_id(reply.step_id());
  refused.set_rank(reply.rank());
  refused.set_error(absl::StrCat("the step's result takes ", bytes,
                                 " bytes, more than the step message limit of ", max_message_bytes,
                                 " bytes; ask for fewer rows of logits per step"));
  return refused;
}

// Answers each step until Shutdown or a broken stream.
absl::Status ServeSteps(pb::Coordinator::Stub& stub, const pb::ClusterConfig& cluster,
                        ModelShard& shard, parallel::Communicator& comm, int rank,
                        WorkerMetrics* metrics) {
  ASSIGN_OR_RETURN(std::unique_ptr<StepStream> stream,
                   StepStream::Open(stub, rank, cluster.generation()));
  spdlog::info("rank {}: attached (generation {}), serving steps", rank, cluster.generation());
  if (metrics != nullptr) metrics->SetReady(true);
  while (std::optional<pb::CoordinatorMessage> message = stream->Next()) {
    if (message->has_shutdown()) {
      spdlog::info("rank {}: shutdown ({})", rank, message->shutdown().reason());
      return stream->Finish(/*shutdown=*/true);
    }
    if (!message->has_step()) continue;  // a kind this worker does not know
    comm.ResetCommunicationMs();
    absl::StatusOr<pb::StepResult> result = shard.executor().Execute(message->step());
    pb::StepResult reply;
    if (result.ok()) {
      reply = Deliverable(std::move(*result), cluster.max_message_bytes());
    } else {
      reply.set_step_id(message->step().step_id());
      reply.set_rank(rank);
      reply.set_error(std::string(result.status().message()));
    }
    reply.set_communication_ms(comm.communication_ms());
    if (metrics != nullptr) {
      metrics->RecordStep(absl::Milliseconds(reply.compute_ms()),
                          absl::Milliseconds(reply.communication_ms()));
      const model::Gemma4Model::GraphStats graphs = shard.model().graph_stats();
      metrics->SetDecodeGraphs(graphs.recorded, graphs.replayed, graphs.graphs);
    }
    if (!stream->Reply(reply)) break;
  }
  return stream->Finish(/*shutdown=*/false);
}

// The device and weight format of --device, --local-rank and --precision.
absl::StatusOr<ops::WeightFormat> FormatFor(const WorkerOptions& options) {
  ASSIGN_OR_RETURN(const int local_rank, LocalRank(options.local_rank, options.rank));
  int visible_gpus = 0;
  if (options.device == "cuda") {
    ASSIGN_OR_RETURN(const std::vector<kernels::CudaDevice> devices, kernels::ListCudaDevices());
    visible_gpus = static_cast<int>(devices.size());
  }
  ASSIGN_OR_RETURN(const std::string device, WorkerDevice(options.device, local_rank, visible_gpus));
  ASSIGN_OR_RETURN(const Device parsed, kernels::ParseDevice(device));
  return ops::WeightFormatFor(parsed, options.precision);
}

// This worker's place in the collective group. CPU ranks: Gloo. GPU ranks: NCCL when each has a
// GPU of its own (every rank publishes "host/GPU uuid" in the store and reads the others'), else
// Gloo with each collective staged through host memory (ranks sharing one GPU).
absl::StatusOr<std::unique_ptr<parallel::Communicator>> JoinCollectives(
    const WorkerOptions& options, const Device& device, parallel::KeyValueStore& store) {
  std::string host = options.collective_host;
  if (host.empty()) {
    ASSIGN_OR_RETURN(host, LocalAddressToward(options.coordinator));
  }
  auto gloo = [&]() {
    return parallel::GlooCommunicator::Create(options.rank, options.world_size, store, host,
                                              options.join_timeout);
  };
  if (device.is_cpu()) {
    ASSIGN_OR_RETURN(std::unique_ptr<parallel::GlooCommunicator> comm, gloo());
    return std::unique_ptr<parallel::Communicator>(std::move(comm));
  }
  ASSIGN_OR_RETURN(const std::vector<kernels::CudaDevice> devices, kernels::ListCudaDevices());
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  RETURN_IF_ERROR(store.Set(absl::StrCat("placement/", options.rank),
                            absl::StrCat(hostname, "/", devices.at(device.ordinal).uuid)));
  std::vector<std::string> keys;
  for (int r = 0; r < options.world_size; ++r) keys.push_back(absl::StrCat("placement/", r));
  ASSIGN_OR_RETURN(const std::vector<std::string> placements,
                   store.Get(keys, options.join_timeout));
  if (EveryRankHasItsOwnGpu(placements)) {
#ifdef GEMMASERVE_HAVE_CUDA
    spdlog::info("rank {}: NCCL over {} ranks, one GPU each", options.rank, options.world_size);
    ASSIGN_OR_RETURN(std::unique_ptr<parallel::NcclCommunicator> comm,
                     parallel::NcclCommunicator::Create(options.rank, options.world_size,
                                                        device.ordinal, store,
                                                        options.join_timeout));
    return std::unique_ptr<parallel::Communicator>(std::move(comm));
#endif
  }
  spdlog::warn("rank {}: ranks share a GPU, where NCCL cannot run: Gloo, staged through host "
               "memory", options.rank);
  ASSIGN_OR_RETURN(std::unique_ptr<parallel::GlooCommunicator> comm, gloo());
  return std::unique_ptr<parallel::Communicator>(
      std::make_unique<StagedCommunicator>(std::move(comm)));
}

}  // namespace

absl::Status RunWorker(const WorkerOptions& options) {
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("--rank ", options.rank,
                                                   " is not in a world of size ", options.world_size));
  }
  RETURN_IF_ERROR(CheckGpuMemoryUtilization(options.gpu_memory_utilization));
  ASSIGN_OR_RETURN(const ops::WeightFormat format, FormatFor(options));
  ops::SetNumThreads(options.threads);
  RETURN_IF_ERROR(ops::SetCpuPrecision(options.cpu_precision));
  std::unique_ptr<WorkerMetrics> metrics;
  if (options.metrics_port >= 0) {
    WorkerMetricsOptions metrics_options;
    metrics_options.rank = options.rank;
    metrics_options.port = options.metrics_port;
    ASSIGN_OR_RETURN(metrics, WorkerMetrics::Start(metrics_options));
  }
  ASSIGN_OR_RETURN(auto config_channel,
                   parallel::CreateInternalChannel(options.coordinator, options.auth));
  ASSIGN_OR_RETURN(pb::ClusterConfig cluster,
                   FetchClusterConfig(*pb::Coordinator::NewStub(config_channel), options));
  // The step stream's messages may be as large as the coordinator's limit.
  ASSIGN_OR_RETURN(auto channel, parallel::CreateInternalChannel(options.coordinator, options.auth,
                                                                 cluster.max_message_bytes()));
  std::unique_ptr<pb::Coordinator::Stub> stub = pb::Coordinator::NewStub(channel);
  ASSIGN_OR_RETURN(parallel::ShardPlan plan, PlanFor(cluster, options));
  const bool on_gpu = !format.device.is_cpu();
  // On a GPU: the budget --gpu-memory-utilization allows, checked against the weights before
  // any allocation; the memory free before loading, to see what loading took.
  int64_t gpu_budget = 0;
  kernels::CudaMemory before_load;
  if (on_gpu) {
    ASSIGN_OR_RETURN(before_load, kernels::CudaMemoryInfo(format.device.ordinal));
    ASSIGN_OR_RETURN(model::Checkpoint checkpoint, model::Checkpoint::Open(cluster.model_dir()));
    GpuMemoryNeeds weights_only;
    ASSIGN_OR_RETURN(weights_only.weights,
                     model::PreparedShardBytes(checkpoint, format, options.world_size));
    ASSIGN_OR_RETURN(gpu_budget,
                     GpuBudget(weights_only, before_load.free_bytes, before_load.total_bytes,
                               options.gpu_memory_utilization, format.device.ToString()));
  } else {
    RETURN_IF_ERROR(CheckShardFits(cluster.model_dir(), options));
  }
  spdlog::info("rank {}/{}: loading {} (tp {}, ep {}) on {} for generation {}", options.rank,
               options.world_size, cluster.model_dir(), cluster.tp_size(), cluster.ep_size(),
               format.device.ToString(), cluster.generation());
  ASSIGN_OR_RETURN(LoadedShard loaded, LoadShard(cluster.model_dir(), plan, format));

  ShardOptions shard_options;
  shard_options.decode_graphs = !options.enforce_eager;
  ASSIGN_OR_RETURN(shard_options.kv_cache_dtype,
                   model::ResolveKvCacheDType(
                       cluster.kv_cache_dtype().empty() ? "auto" : cluster.kv_cache_dtype(),
                       format.device, format.matrix_dtype));
  if (cluster.max_tokens_per_step() > 0) {
    shard_options.step_limits.max_tokens = cluster.max_tokens_per_step();
  }
  const model::KvPageLayout layout =
      KvLayout(loaded, cluster.block_size(), shard_options.kv_cache_dtype);
  int64_t kv_bytes = options.kv_cache_mb << 20;
  if (on_gpu) {
    ASSIGN_OR_RETURN(const kernels::CudaMemory after_load,
                     kernels::CudaMemoryInfo(format.device.ordinal));
    GpuMemoryNeeds needs;
    needs.weights = loaded.weights.TotalBytes();
    needs.workspace = model::Gemma4Model::WorkspaceBytes(loaded.config, loaded.weights,
                                                         options.world_size,
                                                         shard_options.step_limits);
    needs.min_kv = layout.MemoryBytes(2);
    ASSIGN_OR_RETURN(kv_bytes, GpuKvBytes(needs, gpu_budget, before_load.free_bytes,
                                          after_load.free_bytes, format.device.ToString()));
    spdlog::info("rank {}: {} MiB of {} for the KV cache (--gpu-memory-utilization {})",
                 options.rank, kv_bytes >> 20, format.device.ToString(),
                 options.gpu_memory_utilization);
  }
  // Two pages at least: one sequence needs a block of each group.
  const int64_t capacity = layout.PagesIn(kv_bytes);
  if (capacity < 2) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "--kv-cache-mb ", options.kv_cache_mb, " holds ", capacity, " KV pages of ",
        layout.page_bytes, " bytes; a sequence needs at least 2 (", layout.MemoryBytes(2),
        " bytes)"));
  }
  pb::RegisterRequest request;
  request.set_rank(options.rank);
  request.set_world_size(options.world_size);
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  request.set_host(hostname);
  request.set_session_id(cluster.session_id());
  request.set_generation(cluster.generation());
  request.set_kv_pages(capacity);
  request.set_sliding_blocks_per_page(layout.blocks_per_page[0]);
  request.set_full_blocks_per_page(layout.blocks_per_page[1]);
  request.set_weight_bytes(loaded.weights.TotalBytes());
  request.set_kv_cache_bytes(layout.MemoryBytes(capacity));
  pb::RegisterResponse registered;
  grpc::ClientContext register_context;
  register_context.set_deadline(absl::ToChronoTime(absl::Now() + options.join_timeout));
  grpc::Status status = stub->Register(&register_context, request, &registered);
  if (!status.ok()) return FromGrpc(status, absl::StrCat("rank ", options.rank, ": Register"));
  const int64_t num_pages = registered.kv_pages();
  if (num_pages < 1 || num_pages > capacity) {
    return absl::InternalError(absl::StrCat("rank ", options.rank, ": the coordinator answered ",
                                            num_pages, " KV pages to a rank holding ", capacity));
  }

  std::unique_ptr<parallel::Communicator> comm;
  if (options.world_size == 1) {
    comm = std::make_unique<parallel::LocalCommunicator>();
  } else {
    parallel::GrpcKeyValueStore store(channel, cluster.rendezvous_namespace());
    ASSIGN_OR_RETURN(comm, JoinCollectives(options, format.device, store));
  }
  if (metrics != nullptr) {
    metrics->SetWeightBytes(loaded.weights.TotalBytes());
    metrics->SetKvCacheBytes(layout.MemoryBytes(num_pages));
  }
  ModelShard shard(std::move(loaded), cluster.block_size(), num_pages, *comm, shard_options);
  return ServeSteps(*stub, cluster, shard, *comm, options.rank, metrics.get());
}

}  // namespace gemmaserve::worker
