// The weights of one Gemma 4 decoder (or of one rank's shard of it) as plain data: a struct of
// tensors per layer, filled by LoadWeights from a checkpoint. The loader reads the rank's slices
// in the checkpoint's dtype and lets the backend prepare them (ops/weights.h): every matrix a
// Linear multiplies by through ops::PrepareLinearWeight, everything else through
// ops::PrepareWeight. Shapes below are the logical [out, in]; ops::LinearOutFeatures and
// LinearInFeatures read them in whatever layout the backend chose.
//
// Shapes below are for one rank; with a single process, *_local equals the config value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "ops/weights.h"
#include "parallel/shard_plan.h"

namespace gemmaserve::model {

struct AttentionWeights {
  Tensor q_proj;  // [num_heads · head_dim, hidden]
  Tensor k_proj;  // [num_kv_heads · head_dim, hidden]
  Tensor v_proj;  // [num_kv_heads · head_dim, hidden]; undefined on k_eq_v layers (V = raw K)
  Tensor o_proj;  // [hidden, num_heads · head_dim]
  Tensor q_norm;  // [head_dim]
  Tensor k_norm;  // [head_dim]
};

// The dense MLP; gate_proj and up_proj are stacked so one matmul computes both.
struct MlpWeights {
  Tensor gate_up;  // [2 · width, hidden]: rows [0, width) gate, [width, 2·width) up
  Tensor down;     // [hidden, width]
};

struct MoeWeights {
  Tensor router_proj;       // [num_experts, hidden]
  Tensor router_scale;      // [hidden]
  Tensor per_expert_scale;  // [num_experts]
  Tensor gate_up;           // [num_local_experts, 2 · moe_width, hidden]
  Tensor down;              // [num_local_experts, hidden, moe_width]
  // [num_experts] i32: local_expert[e] = index into gate_up/down of global expert e, or −1 when
  // another rank holds it.
  Tensor local_expert;
  Tensor pre_feedforward_layernorm_2;   // [hidden]
  Tensor post_feedforward_layernorm_1;  // [hidden]
  Tensor post_feedforward_layernorm_2;  // [hidden]
};

struct LayerWeights {
  LayerGeometry geometry;
  int64_t num_heads_local = 0;
  int64_t num_kv_heads_local = 0;
  Tensor input_layernorm;             // [hidden]
  Tensor post_attention_layernorm;    // [hidden]
  Tensor pre_feedforward_layernorm;   // [hidden]
  Tensor post_feedforward_layernorm;  // [hidden]
  AttentionWeights attention;
  MlpWeights mlp;
  bool has_moe = false;
  MoeWeights moe;
  float layer_scalar = 1.0f;
};

struct ModelWeights {
  Device device;        // where every tensor below lives
  Tensor embed_tokens;  // [vocab rows held, hidden]; also the tied LM head
  parallel::Range vocab_rows;  // which vocabulary rows embed_tokens holds
  Tensor final_norm;    // [hidden]
  std::vector<LayerWeights> layers;

  // Bytes of all tensors held.
  int64_t TotalBytes() const;
};

// The prefix of text weights in Gemma4ForConditionalGeneration checkpoints ("model.language_model.")
// or, for a text-only export, "model.". Vision and audio tower tensors are never read.
absl::StatusOr<std::string> TextWeightPrefix(const Checkpoint& checkpoint);

// Bytes the text weights of `checkpoint` take once prepared for `format`, split evenly over
// `world_size` ranks (replicated norms and router weights are small next to the rest): what a
// shard needs before it is loaded.
absl::StatusOr<int64_t> PreparedShardBytes(const Checkpoint& checkpoint,
                                           const ops::WeightFormat& format, int world_size = 1);

// OK when every weight of `config` splits as `plan` needs (query heads, KV heads of both layer
// kinds, MLP units, vocabulary, experts); else INVALID_ARGUMENT naming the first that does not.
absl::Status ValidateShardPlan(const Gemma4Config& config, const parallel::ShardPlan& plan);

// Loads this rank's shard (per `plan`) of every text weight of `config` from `checkpoint`, checking
// each tensor's full shape, prepared for `format`'s device. Only the slices the rank holds are
// read from the maps.
absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& checkpoint, const Gemma4Config& config,
                                         const parallel::ShardPlan& plan = parallel::ShardPlan::Single(),
                                         const ops::WeightFormat& format = {});

}  // namespace gemmaserve::model
