// Gemma4Model: the Gemma 4 text decoder forward pass (GEMMA4.md §2), dense and MoE, over a
// ForwardBatch of one or more sequences and a paged KvCache. Reads in layer order like the spec:
// embed → per layer: attention block, feed-forward block (dense MLP, or dense MLP + routed experts),
// layer_scalar → final norm → tied LM head → softcap.
//
// Sharded execution: the weights may be one rank's shard (column-parallel q/k/v/gate/up,
// row-parallel o/down, a subset of experts); the model then all-reduces through the communicator
// right after each row-parallel matmul and after the experts. With a LocalCommunicator the same
// code is the single-process model.
//
// Thread-safety: Forward mutates the cache and must not run concurrently with itself.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "model/config.h"
#include "model/forward_batch.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "ops/rope.h"
#include "parallel/communicator.h"

namespace gemmaserve::model {

class Gemma4Model {
 public:
  // Called with every named intermediate ("attn_out", "ffn_out", ...; layer −1 outside layers),
  // so a debug run can dump and compare them by (name, layer).
  using Observer = std::function<void(const std::string& name, int64_t layer, const Tensor& value)>;

  // `comm` must outlive the model.
  Gemma4Model(Gemma4Config config, ModelWeights weights, parallel::Communicator& comm);

  const Gemma4Config& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  void set_observer(Observer observer) { observer_ = std::move(observer); }

  // Runs one step. `batch` must be finalized against this model's config and `cache`. Writes the
  // step's keys and values into `cache` and returns the softcapped logits of batch.logits_rows:
  // [logits_rows.size(), vocab_size] f32.
  Tensor Forward(const ForwardBatch& batch, KvCache& cache);

  // Tokens routed to each expert since the last call, per layer: [num_layers][num_experts]
  // (empty for dense models). Every rank routes every token, so any rank's counts are the model's.
  std::vector<std::vector<int64_t>> TakeExpertCounts();

 private:
  // h [num_tokens, hidden] → attention output [num_tokens, hidden] (before its post-norm).
  Tensor Attention(int64_t layer, const Tensor& x, const ForwardBatch& batch, KvCache& cache);
  // x [num_tokens, hidden] → dense MLP output [num_tokens, hidden].
  Tensor Mlp(const MlpWeights& mlp, const Tensor& x);
  // The routed experts of a MoE layer: router on the raw residual, experts on `x`.
  Tensor Experts(int64_t layer, const Tensor& residual, const Tensor& x);
  Tensor LmHead(const Tensor& hidden, const ForwardBatch& batch);
  // Assembles [rows, vocab] logits from every rank's [rows, vocab / world_size] shard.
  Tensor GatherVocab(const Tensor& local);
  void Observe(const char* name, int64_t layer, const Tensor& value) const;

  Gemma4Config config_;
  ModelWeights weights_;
  parallel::Communicator& comm_;
  std::vector<ops::Rotary> rotary_;  // per layer
  std::vector<std::vector<int64_t>> expert_counts_;  // [layer][expert], see TakeExpertCounts
  Observer observer_;
};

}  // namespace gemmaserve::model
