#include "model/weights.h"

#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "ops/copy.h"

namespace gemmaserve::model {
namespace {

using ops::PrepareLinearWeight;
using ops::PrepareWeight;
using ops::WeightFormat;
using parallel::Range;
using parallel::ShardPlan;

// Reads tensors under one name prefix and checks their full shapes; returns the rank's slices in
// the checkpoint's dtype, for the backend to prepare.
class WeightReader {
 public:
  WeightReader(const Checkpoint& checkpoint, std::string prefix)
      : checkpoint_(checkpoint), prefix_(std::move(prefix)) {}

  absl::StatusOr<Tensor> Read(const std::string& name, const Shape& shape) const {
    return ReadSlice(name, shape, 0, Range{0, shape.empty() ? 1 : shape[0]});
  }

  // `range` of dimension `dim` of the tensor, whose full shape must be `shape`.
  absl::StatusOr<Tensor> ReadSlice(const std::string& name, const Shape& shape, int dim,
                                   Range range) const {
    ASSIGN_OR_RETURN(Tensor tensor, checkpoint_.Get(prefix_ + name, shape));
    if (tensor.dtype() != DType::kBF16 && tensor.dtype() != DType::kF16 &&
        tensor.dtype() != DType::kF32) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", prefix_, name, " in ", checkpoint_.dir(), ": dtype ",
          std::string(DTypeName(tensor.dtype())), " is not a floating-point weight type"));
    }
    if (shape.empty()) return tensor;
    return ops::SliceDim(tensor, dim, range.begin, range.end);
  }

 private:
  const Checkpoint& checkpoint_;
  std::string prefix_;
};

Range Scaled(Range range, int64_t factor) { return {range.begin * factor, range.end * factor}; }

absl::Status LoadAttention(const WeightReader& reader, const std::string& p,
                           const Gemma4Config& config, const ShardPlan& plan,
                           const WeightFormat& format, LayerWeights& layer) {
  const LayerGeometry& g = layer.geometry;
  const int64_t hidden = config.hidden_size;
  const int64_t nq = config.num_attention_heads;
  ASSIGN_OR_RETURN(Range heads, plan.QueryHeads(nq));
  ASSIGN_OR_RETURN(Range kv_heads, plan.KvHeads(nq, g.num_kv_heads));
  layer.num_heads_local = heads.size();
  layer.num_kv_heads_local = kv_heads.size();
  const Range q_rows = Scaled(heads, g.head_dim);
  const Range kv_rows = Scaled(kv_heads, g.head_dim);
  AttentionWeights& a = layer.attention;
  ASSIGN_OR_RETURN(Tensor q, reader.ReadSlice(p + "self_attn.q_proj.weight",
                                              {nq * g.head_dim, hidden}, 0, q_rows));
  a.q_proj = PrepareLinearWeight(q, format);
  const Shape kv_shape = {g.num_kv_heads * g.head_dim, hidden};
  ASSIGN_OR_RETURN(Tensor k, reader.ReadSlice(p + "self_attn.k_proj.weight", kv_shape, 0, kv_rows));
  a.k_proj = PrepareLinearWeight(k, format);
  if (g.has_v_proj) {
    ASSIGN_OR_RETURN(Tensor v, reader.ReadSlice(p + "self_attn.v_proj.weight", kv_shape, 0, kv_rows));
    a.v_proj = PrepareLinearWeight(v, format);
  }
  ASSIGN_OR_RETURN(Tensor o, reader.ReadSlice(p + "self_attn.o_proj.weight",
                                              {hidden, nq * g.head_dim}, 1, q_rows));
  a.o_proj = PrepareLinearWeight(o, format);
  ASSIGN_OR_RETURN(Tensor q_norm, reader.Read(p + "self_attn.q_norm.weight", {g.head_dim}));
  a.q_norm = PrepareWeight(q_norm, format);
  ASSIGN_OR_RETURN(Tensor k_norm, reader.Read(p + "self_attn.k_norm.weight", {g.head_dim}));
  a.k_norm = PrepareWeight(k_norm, format);
  return absl::OkStatus();
}

absl::Status LoadMlp(const WeightReader& reader, const std::string& p, const Gemma4Config& config,
                     const ShardPlan& plan, const WeightFormat& format, int64_t width,
                     MlpWeights& mlp) {
  const int64_t hidden = config.hidden_size;
  ASSIGN_OR_RETURN(Range units, plan.EvenSplit(width, "intermediate_size"));
  ASSIGN_OR_RETURN(Tensor gate, reader.ReadSlice(p + "mlp.gate_proj.weight", {width, hidden}, 0, units));
  ASSIGN_OR_RETURN(Tensor up, reader.ReadSlice(p + "mlp.up_proj.weight", {width, hidden}, 0, units));
  mlp.gate_up = PrepareLinearWeight(ops::Concat({gate, up}, 0), format);
  ASSIGN_OR_RETURN(Tensor down, reader.ReadSlice(p + "mlp.down_proj.weight", {hidden, width}, 1, units));
  mlp.down = PrepareLinearWeight(down, format);
  return absl::OkStatus();
}

absl::Status LoadMoe(const WeightReader& reader, const std::string& p, const Gemma4Config& config,
                     const ShardPlan& plan, const WeightFormat& format, MoeWeights& moe) {
  const int64_t hidden = config.hidden_size;
  const int64_t experts = config.num_experts;
  const int64_t width = config.moe_intermediate_size;
  ASSIGN_OR_RETURN(Tensor router, reader.Read(p + "router.proj.weight", {experts, hidden}));
  moe.router_proj = PrepareLinearWeight(router, format);
  ASSIGN_OR_RETURN(Tensor router_scale, reader.Read(p + "router.scale", {hidden}));
  moe.router_scale = PrepareWeight(router_scale, format);
  ASSIGN_OR_RETURN(Tensor per_expert_scale,
                   reader.Read(p + "router.per_expert_scale", {experts}));
  moe.per_expert_scale = PrepareWeight(per_expert_scale, format);
  ASSIGN_OR_RETURN(Range held, plan.Experts(experts));
  ASSIGN_OR_RETURN(Range units, plan.ExpertWidth(width));
  // gate_up_proj is [E, 2·width, hidden] with gate rows first: take this rank's experts, then
  // its units of the gate half and of the up half.
  const Shape gate_up_shape = {experts, 2 * width, hidden};
  ASSIGN_OR_RETURN(Tensor gate_up, reader.ReadSlice(p + "experts.gate_up_proj", gate_up_shape, 0, held));
  if (units.size() != width) {
    gate_up = ops::Concat({ops::SliceDim(gate_up, 1, units.begin, units.end),
                           ops::SliceDim(gate_up, 1, width + units.begin, width + units.end)},
                          1);
  }
  moe.gate_up = PrepareLinearWeight(gate_up, format);
  ASSIGN_OR_RETURN(Tensor down, reader.ReadSlice(p + "experts.down_proj", {experts, hidden, width}, 0, held));
  moe.down = PrepareLinearWeight(
      units.size() == width ? down : ops::SliceDim(down, 2, units.begin, units.end), format);
  std::vector<int32_t> local_expert(experts, -1);
  for (int64_t e = held.begin; e < held.end; ++e) {
    local_expert[e] = static_cast<int32_t>(e - held.begin);
  }
  moe.local_expert = ops::ToDevice(Tensor::FromInts(local_expert, {experts}), format.device);
  ASSIGN_OR_RETURN(Tensor pre_2, reader.Read(p + "pre_feedforward_layernorm_2.weight", {hidden}));
  moe.pre_feedforward_layernorm_2 = PrepareWeight(pre_2, format);
  ASSIGN_OR_RETURN(Tensor post_1, reader.Read(p + "post_feedforward_layernorm_1.weight", {hidden}));
  moe.post_feedforward_layernorm_1 = PrepareWeight(post_1, format);
  ASSIGN_OR_RETURN(Tensor post_2, reader.Read(p + "post_feedforward_layernorm_2.weight", {hidden}));
  moe.post_feedforward_layernorm_2 = PrepareWeight(post_2, format);
  return absl::OkStatus();
}

absl::StatusOr<LayerWeights> LoadLayer(const WeightReader& reader, const Gemma4Config& config,
                                       const ShardPlan& plan, const WeightFormat& format,
                                       int64_t index) {
  const std::string p = absl::StrCat("layers.", index, ".");
  const int64_t hidden = config.hidden_size;
  LayerWeights layer;
  layer.geometry = config.layers[index];
  for (auto [name, weight] :
       {std::pair{"input_layernorm.weight", &layer.input_layernorm},
        std::pair{"post_attention_layernorm.weight", &layer.post_attention_layernorm},
        std::pair{"pre_feedforward_layernorm.weight", &layer.pre_feedforward_layernorm},
        std::pair{"post_feedforward_layernorm.weight", &layer.post_feedforward_layernorm}}) {
    ASSIGN_OR_RETURN(Tensor norm, reader.Read(p + name, {hidden}));
    *weight = PrepareWeight(norm, format);
  }
  RETURN_IF_ERROR(LoadAttention(reader, p, config, plan, format, layer));
  RETURN_IF_ERROR(LoadMlp(reader, p, config, plan, format, layer.geometry.mlp_width, layer.mlp));
  if (config.is_moe()) {
    layer.has_moe = true;
    RETURN_IF_ERROR(LoadMoe(reader, p, config, plan, format, layer.moe));
  }
  // A scalar the forward passes to an op by value: read on the host.
  ASSIGN_OR_RETURN(Tensor scalar, reader.Read(p + "layer_scalar", {1}));
  layer.layer_scalar = ops::ScalarToHost(scalar);
  return layer;
}

}  // namespace

int64_t ModelWeights::TotalBytes() const {
  int64_t bytes = embed_tokens.nbytes() + final_norm.nbytes();
  for (const LayerWeights& layer : layers) {
    const AttentionWeights& a = layer.attention;
    const MoeWeights& m = layer.moe;
    for (const Tensor* t :
         {&layer.input_layernorm, &layer.post_attention_layernorm, &layer.pre_feedforward_layernorm,
          &layer.post_feedforward_layernorm, &a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &a.q_norm,
          &a.k_norm, &layer.mlp.gate_up, &layer.mlp.down, &m.router_proj, &m.router_scale,
          &m.per_expert_scale, &m.gate_up, &m.down, &m.pre_feedforward_layernorm_2,
          &m.post_feedforward_layernorm_1, &m.post_feedforward_layernorm_2}) {
      if (t->defined()) bytes += t->nbytes();
    }
  }
  return bytes;
}

absl::Status ValidateShardPlan(const Gemma4Config& config, const ShardPlan& plan) {
  RETURN_IF_ERROR(plan.QueryHeads(config.num_attention_heads).status());
  for (const LayerGeometry& layer : config.layers) {
    RETURN_IF_ERROR(plan.KvHeads(config.num_attention_heads, layer.num_kv_heads).status());
    RETURN_IF_ERROR(plan.EvenSplit(layer.mlp_width, "intermediate_size").status());
  }
  RETURN_IF_ERROR(plan.VocabRows(config.vocab_size).status());
  if (config.is_moe()) {
    RETURN_IF_ERROR(plan.Experts(config.num_experts).status());
    RETURN_IF_ERROR(plan.ExpertWidth(config.moe_intermediate_size).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> PreparedShardBytes(const Checkpoint& checkpoint,
                                           const ops::WeightFormat& format, int world_size) {
  ASSIGN_OR_RETURN(std::string prefix, TextWeightPrefix(checkpoint));
  int64_t bytes = 0;
  for (const std::string& name : checkpoint.TensorNames()) {
    if (name.rfind(prefix, 0) != 0) continue;
    ASSIGN_OR_RETURN(TensorInfo info, checkpoint.Info(name));
    bytes += ops::PreparedWeightBytes(NumElements(info.shape), info.dtype, format);
  }
  return bytes / world_size;
}

absl::StatusOr<std::string> TextWeightPrefix(const Checkpoint& checkpoint) {
  for (const char* prefix : {"model.language_model.", "model."}) {
    if (checkpoint.Contains(absl::StrCat(prefix, "embed_tokens.weight"))) return std::string(prefix);
  }
  return absl::NotFoundError(absl::StrCat(
      "checkpoint ", checkpoint.dir(),
      ": no model.language_model.embed_tokens.weight (nor model.embed_tokens.weight)"));
}

absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& checkpoint, const Gemma4Config& config,
                                         const ShardPlan& plan, const WeightFormat& format) {
  RETURN_IF_ERROR(ValidateShardPlan(config, plan));
  RETURN_IF_ERROR(ops::CheckWeightFormat(format));
  ASSIGN_OR_RETURN(std::string prefix, TextWeightPrefix(checkpoint));
  WeightReader reader(checkpoint, prefix);
  ModelWeights weights;
  weights.device = format.device;
  ASSIGN_OR_RETURN(weights.vocab_rows, plan.VocabRows(config.vocab_size));
  ASSIGN_OR_RETURN(Tensor embed,
                   reader.ReadSlice("embed_tokens.weight", {config.vocab_size, config.hidden_size},
                                    0, weights.vocab_rows));
  weights.embed_tokens = PrepareLinearWeight(embed, format);
  ASSIGN_OR_RETURN(Tensor final_norm, reader.Read("norm.weight", {config.hidden_size}));
  weights.final_norm = PrepareWeight(final_norm, format);
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    ASSIGN_OR_RETURN(LayerWeights layer, LoadLayer(reader, config, plan, format, i));
    weights.layers.push_back(std::move(layer));
  }
  return weights;
}

}  // namespace gemmaserve::model
