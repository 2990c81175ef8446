#include "tools/model_session.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/device.h"
#include "model/checkpoint.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "ops/linear.h"
#include "ops/weights.h"
#include "worker/gpu_placement.h"

namespace gemmaserve::tools {

namespace {
constexpr int64_t kBlockSize = 16;
}  // namespace

void SessionOptions::AddFlags(FlagSet& flags) {
  flags.String("model", &model_dir, "checkpoint directory (config.json + safetensors)", true);
  parallel.AddFlags(flags);
  flags.Int("threads", &threads, "compute threads (per worker process with --tp/--ep)");
  flags.String("kv-cache-dtype", &kv_cache_dtype,
               "auto (the precision's: f32 on the CPU), f32, or bf16 (half the KV memory)");
  flags.String("device", &device,
               "cpu, cuda or cuda:N; with --tp/--ep, cuda puts worker r on the visible GPU r "
               "(mod their count) and cuda:N every worker on GPU N");
  flags.String("cpu-precision", &cpu_precision,
               "f32 (exact) or bf16 (CPU prefill matmuls on AMX / AVX512-BF16, bf16-rounded inputs)");
  flags.String("precision", &precision,
               "f32 (exact) or bf16 (bf16 weights, matmul inputs and KV; GPU only)");
  flags.Double("gpu-memory-utilization", &gpu_memory_utilization,
               "with --tp/--ep on GPUs: the share of a GPU's memory each worker may hold");
  flags.Bool("enforce-eager", &enforce_eager,
             "on a GPU: run every step op by op, without CUDA graphs for decode steps");
}

namespace {

// The weight format of --device and --precision, checked against this build and the GPU.
absl::StatusOr<ops::WeightFormat> FormatFor(const SessionOptions& options) {
  RETURN_IF_ERROR(worker::CheckGpuMemoryUtilization(options.gpu_memory_utilization));
  ASSIGN_OR_RETURN(const Device device, kernels::ParseDevice(options.device));
  return ops::WeightFormatFor(device, options.precision);
}

// RESOURCE_EXHAUSTED naming both numbers when the weights do not fit the GPU's free memory.
absl::Status CheckFitsOnGpu(const std::string& model_dir, const ops::WeightFormat& format) {
  ASSIGN_OR_RETURN(model::Checkpoint checkpoint, model::Checkpoint::Open(model_dir));
  ASSIGN_OR_RETURN(const int64_t needed, model::PreparedShardBytes(checkpoint, format));
  ASSIGN_OR_RETURN(const int64_t free_bytes, kernels::FreeCudaMemory(format.device.ordinal));
  if (needed > free_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        model_dir, " needs ", needed >> 20, " MiB of weights on ", format.device.ToString(),
        ", which has ", free_bytes >> 20, " MiB free"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelSession>> ModelSession::Open(const SessionOptions& options) {
  std::unique_ptr<ModelSession> session(new ModelSession());
  ASSIGN_OR_RETURN(session->config_, model::Gemma4Config::FromModelDir(options.model_dir));
  // Refuse a layout the weights cannot take before starting any worker.
  ASSIGN_OR_RETURN(const parallel::ParallelLayout layout,
                   options.parallel.Resolve(session->config_, options.model_dir));
  if (options.max_context > session->config_.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("a context of ", options.max_context,
                                                   " tokens exceeds max_position_embeddings ",
                                                   session->config_.max_position_embeddings));
  }
  // Blocks of each group one sequence slot needs.
  const int64_t blocks = (options.max_context + kBlockSize - 1) / kBlockSize;
  ASSIGN_OR_RETURN(const ops::WeightFormat format, FormatFor(options));
  ASSIGN_OR_RETURN(const DType kv_cache_dtype,
                   model::ResolveKvCacheDType(options.kv_cache_dtype, format.device,
                                              format.matrix_dtype));
  coordinator::SequenceDriver::StepFn step;
  model::KvPages kv_pages;
  RETURN_IF_ERROR(ops::SetCpuPrecision(options.cpu_precision));
  if (layout.world_size() == 1) {
    ops::SetNumThreads(static_cast<int>(options.threads));
    if (!format.device.is_cpu()) RETURN_IF_ERROR(CheckFitsOnGpu(options.model_dir, format));
    ASSIGN_OR_RETURN(worker::LoadedShard loaded,
                     worker::LoadShard(options.model_dir, parallel::ShardPlan::Single(), format));
    session->comm_ = std::make_unique<parallel::LocalCommunicator>();
    worker::ShardOptions shard_options;
    shard_options.kv_cache_dtype = kv_cache_dtype;
    shard_options.decode_graphs = !options.enforce_eager;
    // The driver prefills a whole prompt in one step: a workspace that holds one (a layer's
    // activations for every prompt token, at most max_context) spares each layer of a long prompt
    // fresh, page-faulted overflow memory.
    shard_options.step_limits.max_tokens =
        std::max(shard_options.step_limits.max_tokens, options.max_context * options.max_sequences);
    kv_pages = model::BlockRuns::PagesFor(
        {0, worker::KvLayout(loaded, kBlockSize, kv_cache_dtype).blocks_per_page}, blocks,
        options.max_sequences);
    session->shard_ = std::make_unique<worker::ModelShard>(
        std::move(loaded), kBlockSize, kv_pages.num_pages, *session->comm_, shard_options);
    worker::ModelShard* shard = session->shard_.get();
    step = [shard](const internal::v1::StepPlan& plan) { return shard->executor().Execute(plan); };
  } else {
    coordinator::LocalClusterOptions cluster;
    cluster.spec.model_dir = options.model_dir;
    cluster.spec.layout = layout;
    cluster.spec.block_size = kBlockSize;
    cluster.spec.kv_cache_dtype = options.kv_cache_dtype;
    PrepareLocalWorkerThreads(layout.world_size(), options.threads);
    cluster.worker_args = {"--threads", absl::StrCat(options.threads), "--cpu-precision",
                           options.cpu_precision, "--log-level", options.log_level,
                           "--device", options.device, "--precision", options.precision,
                           "--gpu-memory-utilization",
                           absl::StrCat(options.gpu_memory_utilization)};
    if (options.enforce_eager) cluster.worker_args.push_back("--enforce-eager");
    ASSIGN_OR_RETURN(session->cluster_, coordinator::LocalCluster::Start(cluster));
    const model::KvPages held = session->cluster_->group().kv_pages();
    kv_pages = model::BlockRuns::PagesFor(held, blocks, options.max_sequences);
    if (held.num_pages < kv_pages.num_pages) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the workers hold ", held.num_pages, " KV pages; ", kv_pages.num_pages, " are needed"));
    }
    coordinator::WorkerGroup* group = &session->cluster_->group();
    step = [group](const internal::v1::StepPlan& plan) { return group->Step(plan); };
  }
  session->driver_ = std::make_unique<coordinator::SequenceDriver>(
      std::move(step), kBlockSize, kv_pages, options.max_sequences, session->config_.vocab_size);
  return session;
}

}  // namespace gemmaserve::tools
