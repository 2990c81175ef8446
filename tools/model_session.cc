#include "tools/model_session.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/kv_cache.h"
#include "ops/linear.h"

namespace gemmaserve::tools {

namespace {
constexpr int64_t kBlockSize = 16;
}  // namespace

void SessionOptions::AddFlags(FlagSet& flags) {
  flags.String("model", &model_dir, "checkpoint directory (config.json + safetensors)", true);
  parallel.AddFlags(flags);
  flags.Int("threads", &threads, "compute threads (per worker process with --tp/--ep)");
  flags.String("kv-cache-dtype", &kv_cache_dtype,
               "auto (f32 on the CPU), f32, or bf16 (half the KV memory)");
}

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
  const int64_t blocks =
      (options.max_context + kBlockSize - 1) / kBlockSize * options.max_sequences;
  ASSIGN_OR_RETURN(const DType kv_cache_dtype,
                   model::ResolveKvCacheDType(options.kv_cache_dtype, Device::Cpu()));
  coordinator::SequenceDriver::StepFn step;
  if (layout.world_size() == 1) {
    ops::SetNumThreads(static_cast<int>(options.threads));
    ASSIGN_OR_RETURN(worker::LoadedShard loaded,
                     worker::LoadShard(options.model_dir, parallel::ShardPlan::Single()));
    session->comm_ = std::make_unique<parallel::LocalCommunicator>();
    worker::ShardOptions shard_options;
    shard_options.kv_cache_dtype = kv_cache_dtype;
    session->shard_ = std::make_unique<worker::ModelShard>(std::move(loaded), kBlockSize, blocks,
                                                           *session->comm_, shard_options);
    worker::ModelShard* shard = session->shard_.get();
    step = [shard](const internal::v1::StepPlan& plan) { return shard->executor().Execute(plan); };
  } else {
    coordinator::LocalClusterOptions cluster;
    cluster.spec.model_dir = options.model_dir;
    cluster.spec.layout = layout;
    cluster.spec.block_size = kBlockSize;
    cluster.spec.kv_cache_dtype = options.kv_cache_dtype;
    cluster.worker_args = {"--threads", absl::StrCat(options.threads), "--log-level",
                           options.log_level};
    ASSIGN_OR_RETURN(session->cluster_, coordinator::LocalCluster::Start(cluster));
    if (session->cluster_->group().num_blocks() < blocks) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the workers hold ", session->cluster_->group().num_blocks(), " KV blocks; ", blocks,
          " are needed"));
    }
    coordinator::WorkerGroup* group = &session->cluster_->group();
    step = [group](const internal::v1::StepPlan& plan) { return group->Step(plan); };
  }
  session->driver_ = std::make_unique<coordinator::SequenceDriver>(
      std::move(step), kBlockSize, blocks, options.max_sequences, session->config_.vocab_size);
  return session;
}

}  // namespace gemmaserve::tools
