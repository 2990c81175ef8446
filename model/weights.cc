#include "model/weights.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace gemmaserve::model {
namespace {

// Reads one tensor, checks its shape and returns an owned f32 copy.
class WeightReader {
 public:
  WeightReader(const Checkpoint& checkpoint, std::string prefix)
      : checkpoint_(checkpoint), prefix_(std::move(prefix)) {}

  absl::StatusOr<Tensor> Read(const std::string& name, const Shape& shape) const {
    ASSIGN_OR_RETURN(Tensor tensor, checkpoint_.Get(prefix_ + name, shape));
    if (tensor.dtype() != DType::kBF16 && tensor.dtype() != DType::kF16 &&
        tensor.dtype() != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", prefix_, name, " in ", checkpoint_.dir(), ": dtype ",
                       std::string(DTypeName(tensor.dtype())), " is not a floating-point weight type"));
    }
    return tensor.ToF32();
  }

  // Row-stacks two tensors [a, n] and [b, n] into [a + b, n].
  absl::StatusOr<Tensor> ReadStacked(const std::string& first, const std::string& second,
                                     const Shape& each) const {
    ASSIGN_OR_RETURN(Tensor a, Read(first, each));
    ASSIGN_OR_RETURN(Tensor b, Read(second, each));
    Tensor stacked = Tensor::Empty(DType::kF32, {2 * each[0], each[1]});
    std::memcpy(stacked.data<float>(), a.data<float>(), a.nbytes());
    std::memcpy(stacked.data<float>() + a.numel(), b.data<float>(), b.nbytes());
    return stacked;
  }

 private:
  const Checkpoint& checkpoint_;
  std::string prefix_;
};

absl::Status LoadAttention(const WeightReader& reader, const std::string& p,
                           const Gemma4Config& config, LayerWeights& layer) {
  const LayerGeometry& g = layer.geometry;
  const int64_t hidden = config.hidden_size;
  AttentionWeights& a = layer.attention;
  ASSIGN_OR_RETURN(a.q_proj, reader.Read(p + "self_attn.q_proj.weight",
                                         {layer.num_heads_local * g.head_dim, hidden}));
  ASSIGN_OR_RETURN(a.k_proj, reader.Read(p + "self_attn.k_proj.weight",
                                         {layer.num_kv_heads_local * g.head_dim, hidden}));
  if (g.has_v_proj) {
    ASSIGN_OR_RETURN(a.v_proj, reader.Read(p + "self_attn.v_proj.weight",
                                           {layer.num_kv_heads_local * g.head_dim, hidden}));
  }
  ASSIGN_OR_RETURN(a.o_proj, reader.Read(p + "self_attn.o_proj.weight",
                                         {hidden, layer.num_heads_local * g.head_dim}));
  ASSIGN_OR_RETURN(a.q_norm, reader.Read(p + "self_attn.q_norm.weight", {g.head_dim}));
  ASSIGN_OR_RETURN(a.k_norm, reader.Read(p + "self_attn.k_norm.weight", {g.head_dim}));
  return absl::OkStatus();
}

absl::Status LoadMoe(const WeightReader& reader, const std::string& p, const Gemma4Config& config,
                     MoeWeights& moe) {
  const int64_t hidden = config.hidden_size;
  const int64_t experts = config.num_experts;
  const int64_t width = config.moe_intermediate_size;
  ASSIGN_OR_RETURN(moe.router_proj, reader.Read(p + "router.proj.weight", {experts, hidden}));
  ASSIGN_OR_RETURN(moe.router_scale, reader.Read(p + "router.scale", {hidden}));
  ASSIGN_OR_RETURN(moe.per_expert_scale, reader.Read(p + "router.per_expert_scale", {experts}));
  ASSIGN_OR_RETURN(moe.gate_up, reader.Read(p + "experts.gate_up_proj", {experts, 2 * width, hidden}));
  ASSIGN_OR_RETURN(moe.down, reader.Read(p + "experts.down_proj", {experts, hidden, width}));
  moe.local_expert.resize(experts);
  for (int64_t e = 0; e < experts; ++e) moe.local_expert[e] = static_cast<int32_t>(e);
  ASSIGN_OR_RETURN(moe.pre_feedforward_layernorm_2,
                   reader.Read(p + "pre_feedforward_layernorm_2.weight", {hidden}));
  ASSIGN_OR_RETURN(moe.post_feedforward_layernorm_1,
                   reader.Read(p + "post_feedforward_layernorm_1.weight", {hidden}));
  ASSIGN_OR_RETURN(moe.post_feedforward_layernorm_2,
                   reader.Read(p + "post_feedforward_layernorm_2.weight", {hidden}));
  return absl::OkStatus();
}

absl::StatusOr<LayerWeights> LoadLayer(const WeightReader& reader, const Gemma4Config& config,
                                       int64_t index) {
  const std::string p = absl::StrCat("layers.", index, ".");
  const int64_t hidden = config.hidden_size;
  LayerWeights layer;
  layer.geometry = config.layers[index];
  layer.num_heads_local = config.num_attention_heads;
  layer.num_kv_heads_local = layer.geometry.num_kv_heads;
  ASSIGN_OR_RETURN(layer.input_layernorm, reader.Read(p + "input_layernorm.weight", {hidden}));
  ASSIGN_OR_RETURN(layer.post_attention_layernorm,
                   reader.Read(p + "post_attention_layernorm.weight", {hidden}));
  ASSIGN_OR_RETURN(layer.pre_feedforward_layernorm,
                   reader.Read(p + "pre_feedforward_layernorm.weight", {hidden}));
  ASSIGN_OR_RETURN(layer.post_feedforward_layernorm,
                   reader.Read(p + "post_feedforward_layernorm.weight", {hidden}));
  RETURN_IF_ERROR(LoadAttention(reader, p, config, layer));
  const int64_t width = layer.geometry.mlp_width;
  ASSIGN_OR_RETURN(layer.mlp.gate_up, reader.ReadStacked(p + "mlp.gate_proj.weight",
                                                         p + "mlp.up_proj.weight", {width, hidden}));
  ASSIGN_OR_RETURN(layer.mlp.down, reader.Read(p + "mlp.down_proj.weight", {hidden, width}));
  if (config.is_moe()) {
    layer.has_moe = true;
    RETURN_IF_ERROR(LoadMoe(reader, p, config, layer.moe));
  }
  ASSIGN_OR_RETURN(Tensor scalar, reader.Read(p + "layer_scalar", {1}));
  layer.layer_scalar = scalar.data<float>()[0];
  return layer;
}

}  // namespace

absl::StatusOr<std::string> TextWeightPrefix(const Checkpoint& checkpoint) {
  for (const char* prefix : {"model.language_model.", "model."}) {
    if (checkpoint.Contains(absl::StrCat(prefix, "embed_tokens.weight"))) return std::string(prefix);
  }
  return absl::NotFoundError(absl::StrCat(
      "checkpoint ", checkpoint.dir(),
      ": no model.language_model.embed_tokens.weight (nor model.embed_tokens.weight)"));
}

absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& checkpoint, const Gemma4Config& config) {
  ASSIGN_OR_RETURN(std::string prefix, TextWeightPrefix(checkpoint));
  WeightReader reader(checkpoint, prefix);
  ModelWeights weights;
  ASSIGN_OR_RETURN(weights.embed_tokens,
                   reader.Read("embed_tokens.weight", {config.vocab_size, config.hidden_size}));
  ASSIGN_OR_RETURN(weights.final_norm, reader.Read("norm.weight", {config.hidden_size}));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    ASSIGN_OR_RETURN(LayerWeights layer, LoadLayer(reader, config, i));
    weights.layers.push_back(std::move(layer));
  }
  return weights;
}

}  // namespace gemmaserve::model
