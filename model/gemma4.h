// Gemma4Model: the Gemma 4 text decoder forward pass (GEMMA4.md §2), dense and MoE, over a
// ForwardBatch of one or more sequences and a paged KvCache. Reads in layer order like the spec:
// embed → per layer: attention block, feed-forward block (dense MLP, or dense MLP + routed experts),
// layer_scalar → final norm → tied LM head → softcap.
//
// The model runs on the device its weights were prepared for: every computation is an op
// (ops/), which runs where its tensors live; the model never touches tensor memory itself
// (tests/model/forward_uses_only_ops_test.sh checks). A step uploads its metadata once
// (UploadBatch) and takes its activations from a Workspace sized at construction from StepLimits,
// so a steady-state step allocates nothing.
//
// Sharded execution: the weights may be one rank's shard (column-parallel q/k/v/gate/up,
// row-parallel o/down, a subset of experts); the model then all-reduces through the communicator
// right after each row-parallel matmul and after the experts. With a LocalCommunicator the same
// code is the single-process model.
//
// Decode graphs (UseDecodeGraphs; on a GPU, for a dense model in one process): a plain decode step
// is padded to a graph shape (model/forward_batch.h, PadForGraph) and replayed as one CUDA graph
// recorded at the first step of that shape (ops/graph.h), which saves the thousand-odd kernel
// launches a step otherwise costs the host. The graph's logits are bitwise those of the same
// padded step run op by op: the first replay of every graph is checked against the eager run it
// was recorded from; a mismatch, or a recording the runtime refused, turns graphs off for good
// (with an error in the log) and the steps go on op by op.
//
// Thread-safety: Forward mutates the cache and the workspace and must not run concurrently with
// itself.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "common/workspace.h"
#include "model/config.h"
#include "model/forward_batch.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "ops/graph.h"
#include "ops/rope.h"
#include "parallel/communicator.h"

namespace gemmaserve::model {

// The largest step the model's workspace is sized for. A larger one still runs, with extra
// allocations (Workspace).
struct StepLimits {
  int64_t max_tokens = 2048;      // tokens per step: the scheduler's token budget
  int64_t max_logits_rows = 256;  // rows that get logits: the sequences of a step, more with
                                  // prompt logprobs or all-position logits
};

class Gemma4Model {
 public:
  // Called with every named intermediate ("attn_out", "ffn_out", ...; layer −1 outside layers),
  // so a debug run can dump and compare them by (name, layer). The tensor lives in the workspace
  // and on the model's device: copy what must outlive the call.
  using Observer = std::function<void(const std::string& name, int64_t layer, const Tensor& value)>;

  // `comm` must outlive the model.
  Gemma4Model(Gemma4Config config, ModelWeights weights, parallel::Communicator& comm,
              const StepLimits& limits = {});

  const Gemma4Config& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const Workspace& workspace() const { return workspace_; }
  void set_observer(Observer observer) { observer_ = std::move(observer); }

  // Runs one step. `batch` must be finalized against this model's config and `cache`. Writes the
  // step's keys and values into `cache` and returns the softcapped logits of batch.logits_rows:
  // [logits_rows.size(), vocab_size] f32 on the model's device, valid until the next Forward.
  // Read them on the host through ops::ToHost.
  Tensor Forward(const ForwardBatch& batch, KvCache& cache);

  // Replays decode steps as graphs where it can (see above); off by default. Has an effect only
  // on a GPU, for a model without routed experts (which copy expert offsets to the host) in a
  // world of one (a collective would synchronise), without an observer, and for steps of at most
  // max_logits_rows sequences whose block tables cover at most kMaxGraphContext positions (each
  // graph's metadata grows with both; past that, attention outweighs the launches anyway).
  static constexpr int64_t kMaxGraphContext = 16384;
  void UseDecodeGraphs(bool on) { use_graphs_ = on; }

  // What the decode graphs have done since construction.
  struct GraphStats {
    int64_t recorded = 0;  // graphs recorded (a shape's first step, or its scratch moved)
    int64_t replayed = 0;  // steps replayed, the recording steps included
    int64_t graphs = 0;    // graphs held now
  };
  GraphStats graph_stats() const;

  // Tokens routed to each expert since the last call: [num_layers, num_experts] i64 in host
  // memory (empty for dense models). Every rank routes every token, so any rank's counts are the
  // model's.
  Tensor TakeExpertCounts();

  // Workspace bytes a step of `limits` needs: the residual stream, plus the larger of one layer's
  // activations (the forward gives them back after each layer) and the LM head's.
  int64_t WorkspaceBytes(const StepLimits& limits) const {
    return WorkspaceBytes(config_, weights_, comm_.world_size(), limits);
  }
  // The same for a rank of `world_size` that will hold `weights`, before the model exists (a GPU
  // worker sizes its KV cache from the memory left after both).
  static int64_t WorkspaceBytes(const Gemma4Config& config, const ModelWeights& weights,
                                int world_size, const StepLimits& limits);

 private:
  // A decode graph and what stays in place for it between replays.
  struct DecodeGraph {
    UploadBuffers upload;  // the metadata its kernels read, refilled for every replay
    std::unique_ptr<ops::DeviceGraph> graph;
    Tensor logits;            // [shape.num_sequences, vocab] in the workspace
    bool eager_only = false;  // the shape does not fit the workspace: never recorded
  };

  // The step after UploadBatch: embed, layers, LM head.
  Tensor Run(const StepMetadata& step, int64_t num_tokens, KvCache& cache);
  // Whether Forward may replay `batch` as a decode graph.
  bool GraphEligible(const ForwardBatch& batch) const;
  // A plain decode through the graph of its shape, recorded first when there is none.
  Tensor ForwardByGraph(const ForwardBatch& batch, const GraphShape& shape, DecodeGraph& entry,
                        KvCache& cache);
  // Records entry's graph from the eager step of `step` and checks its first replay against it.
  Tensor RecordGraph(DecodeGraph& entry, const StepMetadata& step, int64_t num_tokens, int64_t rows,
                     KvCache& cache);

  // h [num_tokens, hidden] → attention output [num_tokens, hidden] (before its post-norm).
  Tensor Attention(int64_t layer, const Tensor& x, const StepMetadata& step, KvCache& cache);
  // x [num_tokens, hidden] → dense MLP output [num_tokens, hidden].
  Tensor Mlp(const MlpWeights& mlp, const Tensor& x);
  // The routed experts of a MoE layer: router on the raw residual, experts on `x`.
  Tensor Experts(int64_t layer, const Tensor& residual, const Tensor& x);
  Tensor LmHead(const Tensor& hidden, const StepMetadata& step);

  // A new activation from the workspace.
  Tensor Activation(Shape shape, DType dtype = DType::kF32);
  // RmsNorm(x) with weight w (or none when w is undefined), into a new activation.
  Tensor Norm(const Tensor& x, const Tensor& w);
  // x · wᵀ into a new activation.
  Tensor Project(const Tensor& x, const Tensor& w);
  void Observe(const char* name, int64_t layer, const Tensor& value) const;

  Gemma4Config config_;
  ModelWeights weights_;
  parallel::Communicator& comm_;
  // Per KV group (layer kind), on which RoPE depends, so that one table of cos/sin
  // (ops::Rotary::Table) serves all the group's layers; empty for a group without layers.
  std::array<std::optional<ops::Rotary>, kNumKvGroups> rotary_;
  Tensor expert_counts_;  // [num_layers, num_experts] i64 on the device, see TakeExpertCounts
  Workspace workspace_;
  UploadBuffers upload_buffers_;
  Observer observer_;
  const StepLimits limits_;
  bool use_graphs_ = false;
  std::map<GraphShape, DecodeGraph> graphs_;
  ForwardBatch padded_;  // the current step laid out for its graph; kept to reuse its storage
  GraphStats graph_stats_;
};

}  // namespace gemmaserve::model
