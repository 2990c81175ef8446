#include "worker/worker.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "gemmaserve/internal/v1/worker.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "kernels/device.h"
#include "ops/linear.h"
#include "ops/weights.h"
#include "parallel/gloo_communicator.h"
#include "parallel/grpc_key_value_store.h"
#include "parallel/parallel_layout.h"
#include "spdlog/spdlog.h"
#include "worker/model_shard.h"
#include "worker/step_stream.h"
#include "worker/worker_metrics.h"

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
    }
    if (!stream->Reply(reply)) break;
  }
  return stream->Finish(/*shutdown=*/false);
}

}  // namespace

absl::Status RunWorker(const WorkerOptions& options) {
  ASSIGN_OR_RETURN(const Device device, kernels::ParseDevice(options.device));
  if (!device.is_cpu()) {
    // The CUDA forward pass runs in `gemmaserve run` and `logits` (--device cuda); workers on GPUs
    // need NCCL between ranks and the KV cache sized from GPU memory first.
    return absl::FailedPreconditionError(absl::StrCat(
        "--device ", options.device, ": workers run on the CPU so far; use --device cpu"));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("--rank ", options.rank,
                                                   " is not in a world of size ", options.world_size));
  }
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
  RETURN_IF_ERROR(CheckShardFits(cluster.model_dir(), options));
  spdlog::info("rank {}/{}: loading {} (tp {}, ep {}) for generation {}", options.rank,
               options.world_size, cluster.model_dir(), cluster.tp_size(), cluster.ep_size(),
               cluster.generation());
  ASSIGN_OR_RETURN(LoadedShard loaded, LoadShard(cluster.model_dir(), plan));

  ShardOptions shard_options;
  ASSIGN_OR_RETURN(shard_options.kv_cache_dtype,
                   model::ResolveKvCacheDType(
                       cluster.kv_cache_dtype().empty() ? "auto" : cluster.kv_cache_dtype(),
                       loaded.weights.device));
  if (cluster.max_tokens_per_step() > 0) {
    shard_options.step_limits.max_tokens = cluster.max_tokens_per_step();
  }
  const int64_t pair_bytes =
      KvBytesPerBlockPair(loaded, cluster.block_size(), shard_options.kv_cache_dtype);
  const int64_t capacity = (options.kv_cache_mb << 20) / pair_bytes;
  if (capacity < 1) {
    return absl::ResourceExhaustedError(absl::StrCat("--kv-cache-mb ", options.kv_cache_mb,
                                                     " holds no KV block of ", pair_bytes, " bytes"));
  }
  pb::RegisterRequest request;
  request.set_rank(options.rank);
  request.set_world_size(options.world_size);
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  request.set_host(hostname);
  request.set_session_id(cluster.session_id());
  request.set_generation(cluster.generation());
  request.set_sliding_blocks(capacity);
  request.set_full_blocks(capacity);
  request.set_weight_bytes(loaded.weights.TotalBytes());
  request.set_kv_cache_bytes(capacity * pair_bytes);
  pb::RegisterResponse registered;
  grpc::ClientContext register_context;
  register_context.set_deadline(absl::ToChronoTime(absl::Now() + options.join_timeout));
  grpc::Status status = stub->Register(&register_context, request, &registered);
  if (!status.ok()) return FromGrpc(status, absl::StrCat("rank ", options.rank, ": Register"));
  const int64_t num_blocks = std::min(registered.sliding_blocks(), registered.full_blocks());

  std::unique_ptr<parallel::Communicator> comm;
  if (options.world_size == 1) {
    comm = std::make_unique<parallel::LocalCommunicator>();
  } else {
    std::string host = options.collective_host;
    if (host.empty()) {
      ASSIGN_OR_RETURN(host, LocalAddressToward(options.coordinator));
    }
    parallel::GrpcKeyValueStore store(channel, cluster.rendezvous_namespace());
    ASSIGN_OR_RETURN(comm, parallel::GlooCommunicator::Create(options.rank, options.world_size, store,
                                                              host, options.join_timeout));
  }
  if (metrics != nullptr) {
    metrics->SetWeightBytes(loaded.weights.TotalBytes());
    metrics->SetKvCacheBytes(num_blocks * pair_bytes);
  }
  ModelShard shard(std::move(loaded), cluster.block_size(), num_blocks, *comm, shard_options);
  return ServeSteps(*stub, cluster, shard, *comm, options.rank, metrics.get());
}

}  // namespace gemmaserve::worker
