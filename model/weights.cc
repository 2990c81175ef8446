#include "model/weights.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "ops/linear.h"

namespace gemmaserve::model {
namespace {

using parallel::Range;
using parallel::ShardPlan;

// Copies `range` of dimension `dim` of `full` (any float dtype, e.g. a view of the mmap) into a new
// f32 tensor, touching only the bytes of the slice.
Tensor SliceToF32(const Tensor& full, int dim, Range range) {
  Shape shape = full.shape();
  int64_t outer = 1;
  for (int i = 0; i < dim; ++i) outer *= shape[i];
  int64_t inner = 1;
  for (int i = dim + 1; i < full.rank(); ++i) inner *= shape[i];
  const int64_t full_dim = shape[dim];
  shape[dim] = range.size();
  Tensor out = Tensor::Empty(DType::kF32, shape);
  const size_t element = DTypeSize(full.dtype());
  const char* src = static_cast<const char*>(full.raw_data());
  for (int64_t o = 0; o < outer; ++o) {
    const char* run = src + ((o * full_dim + range.begin) * inner) * element;
    ConvertToF32(full.dtype(), run, out.data<float>() + o * range.size() * inner,
                 static_cast<size_t>(range.size() * inner));
  }
  return out;
}

// Reads tensors under one name prefix, checks their full shapes and returns owned f32 slices.
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
    if (shape.empty()) return tensor.ToF32();
    return SliceToF32(tensor, dim, range);
  }

 private:
  const Checkpoint& checkpoint_;
  std::string prefix_;
};

// Row-stacks [a, n] and [b, n] into [a + b, n].
Tensor StackRows(const Tensor& a, const Tensor& b) {
  Tensor stacked = Tensor::Empty(DType::kF32, {a.dim(0) + b.dim(0), a.dim(1)});
  std::memcpy(stacked.data<float>(), a.data<float>(), a.nbytes());
  std::memcpy(stacked.data<float>() + a.numel(), b.data<float>(), b.nbytes());
  return stacked;
}

Range Scaled(Range range, int64_t factor) { return {range.begin * factor, range.end * factor}; }

absl::Status LoadAttention(const WeightReader& reader, const std::string& p,
                           const Gemma4Config& config, const ShardPlan& plan, LayerWeights& layer) {
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
  ASSIGN_OR_RETURN(a.q_proj, reader.ReadSlice(p + "self_attn.q_proj.weight", {nq * g.head_dim, hidden},
                                              0, q_rows));
  const Shape kv_shape = {g.num_kv_heads * g.head_dim, hidden};
  ASSIGN_OR_RETURN(a.k_proj, reader.ReadSlice(p + "self_attn.k_proj.weight", kv_shape, 0, kv_rows));
  if (g.has_v_proj) {
    ASSIGN_OR_RETURN(a.v_proj, reader.ReadSlice(p + "self_attn.v_proj.weight", kv_shape, 0, kv_rows));
  }
  ASSIGN_OR_RETURN(a.o_proj, reader.ReadSlice(p + "self_attn.o_proj.weight", {hidden, nq * g.head_dim},
                                              1, q_rows));
  for (Tensor* w : {&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj}) {
    if (w->raw_data() != nullptr) *w = ops::PackLinearWeight(*w);
  }
  ASSIGN_OR_RETURN(a.q_norm, reader.Read(p + "self_attn.q_norm.weight", {g.head_dim}));
  ASSIGN_OR_RETURN(a.k_norm, reader.Read(p + "self_attn.k_norm.weight", {g.head_dim}));
  return absl::OkStatus();
}

absl::Status LoadMlp(const WeightReader& reader, const std::string& p, const Gemma4Config& config,
                     const ShardPlan& plan, int64_t width, MlpWeights& mlp) {
  const int64_t hidden = config.hidden_size;
  ASSIGN_OR_RETURN(Range units, plan.EvenSplit(width, "intermediate_size"));
  ASSIGN_OR_RETURN(Tensor gate, reader.ReadSlice(p + "mlp.gate_proj.weight", {width, hidden}, 0, units));
  ASSIGN_OR_RETURN(Tensor up, reader.ReadSlice(p + "mlp.up_proj.weight", {width, hidden}, 0, units));
  mlp.gate_up = ops::PackLinearWeight(StackRows(gate, up));
  ASSIGN_OR_RETURN(Tensor down, reader.ReadSlice(p + "mlp.down_proj.weight", {hidden, width}, 1, units));
  mlp.down = ops::PackLinearWeight(down);
  return absl::OkStatus();
}

absl::Status LoadMoe(const WeightReader& reader, const std::string& p, const Gemma4Config& config,
                     const ShardPlan& plan, MoeWeights& moe) {
  const int64_t hidden = config.hidden_size;
  const int64_t experts = config.num_experts;
  const int64_t width = config.moe_intermediate_size;
  ASSIGN_OR_RETURN(Tensor router, reader.Read(p + "router.proj.weight", {experts, hidden}));
  moe.router_proj = ops::PackLinearWeight(router);
  ASSIGN_OR_RETURN(moe.router_scale, reader.Read(p + "router.scale", {hidden}));
  ASSIGN_OR_RETURN(moe.per_expert_scale, reader.Read(p + "router.per_expert_scale", {experts}));
  ASSIGN_OR_RETURN(Range held, plan.Experts(experts));
  ASSIGN_OR_RETURN(Range units, plan.ExpertWidth(width));
  // gate_up_proj is [E, 2·width, hidden] with gate rows first: take this rank's experts, then
  // its units of the gate half and of the up half.
  const Shape gate_up_shape = {experts, 2 * width, hidden};
  ASSIGN_OR_RETURN(Tensor gate_up, reader.ReadSlice(p + "experts.gate_up_proj", gate_up_shape, 0, held));
  if (units.size() == width) {
    moe.gate_up = gate_up;
  } else {
    Tensor gate = SliceToF32(gate_up, 1, units);
    Tensor up = SliceToF32(gate_up, 1, Range{width + units.begin, width + units.end});
    moe.gate_up = Tensor::Empty(DType::kF32, {held.size(), 2 * units.size(), hidden});
    const int64_t half = units.size() * hidden;
    for (int64_t e = 0; e < held.size(); ++e) {
      float* dst = moe.gate_up.data<float>() + e * 2 * half;
      std::memcpy(dst, gate.data<float>() + e * half, half * sizeof(float));
      std::memcpy(dst + half, up.data<float>() + e * half, half * sizeof(float));
    }
  }
  ASSIGN_OR_RETURN(Tensor down, reader.ReadSlice(p + "experts.down_proj", {experts, hidden, width}, 0, held));
  moe.down = ops::PackLinearWeight(units.size() == width ? down : SliceToF32(down, 2, units));
  moe.gate_up = ops::PackLinearWeight(moe.gate_up);
  moe.local_expert.assign(experts, -1);
  for (int64_t e = held.begin; e < held.end; ++e) {
    moe.local_expert[e] = static_cast<int32_t>(e - held.begin);
  }
  ASSIGN_OR_RETURN(moe.pre_feedforward_layernorm_2,
                   reader.Read(p + "pre_feedforward_layernorm_2.weight", {hidden}));
  ASSIGN_OR_RETURN(moe.post_feedforward_layernorm_1,
                   reader.Read(p + "post_feedforward_layernorm_1.weight", {hidden}));
  ASSIGN_OR_RETURN(moe.post_feedforward_layernorm_2,
                   reader.Read(p + "post_feedforward_layernorm_2.weight", {hidden}));
  return absl::OkStatus();
}

absl::StatusOr<LayerWeights> LoadLayer(const WeightReader& reader, const Gemma4Config& config,
                                       const ShardPlan& plan, int64_t index) {
  const std::string p = absl::StrCat("layers.", index, ".");
  const int64_t hidden = config.hidden_size;
  LayerWeights layer;
  layer.geometry = config.layers[index];
  ASSIGN_OR_RETURN(layer.input_layernorm, reader.Read(p + "input_layernorm.weight", {hidden}));
  ASSIGN_OR_RETURN(layer.post_attention_layernorm,
                   reader.Read(p + "post_attention_layernorm.weight", {hidden}));
  ASSIGN_OR_RETURN(layer.pre_feedforward_layernorm,
                   reader.Read(p + "pre_feedforward_layernorm.weight", {hidden}));
  ASSIGN_OR_RETURN(layer.post_feedforward_layernorm,
                   reader.Read(p + "post_feedforward_layernorm.weight", {hidden}));
  RETURN_IF_ERROR(LoadAttention(reader, p, config, plan, layer));
  RETURN_IF_ERROR(LoadMlp(reader, p, config, plan, layer.geometry.mlp_width, layer.mlp));
  if (config.is_moe()) {
    layer.has_moe = true;
    RETURN_IF_ERROR(LoadMoe(reader, p, config, plan, layer.moe));
  }
  ASSIGN_OR_RETURN(Tensor scalar, reader.Read(p + "layer_scalar", {1}));
  layer.layer_scalar = scalar.data<float>()[0];
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
      if (t->raw_data() != nullptr) bytes += t->nbytes();
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

absl::StatusOr<std::string> TextWeightPrefix(const Checkpoint& checkpoint) {
  for (const char* prefix : {"model.language_model.", "model."}) {
    if (checkpoint.Contains(absl::StrCat(prefix, "embed_tokens.weight"))) return std::string(prefix);
  }
  return absl::NotFoundError(absl::StrCat(
      "checkpoint ", checkpoint.dir(),
      ": no model.language_model.embed_tokens.weight (nor model.embed_tokens.weight)"));
}

absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& checkpoint, const Gemma4Config& config,
                                         const ShardPlan& plan) {
  RETURN_IF_ERROR(ValidateShardPlan(config, plan));
  ASSIGN_OR_RETURN(std::string prefix, TextWeightPrefix(checkpoint));
  WeightReader reader(checkpoint, prefix);
  ModelWeights weights;
  ASSIGN_OR_RETURN(weights.vocab_rows, plan.VocabRows(config.vocab_size));
  ASSIGN_OR_RETURN(Tensor embed,
                   reader.ReadSlice("embed_tokens.weight", {config.vocab_size, config.hidden_size},
                                    0, weights.vocab_rows));
  weights.embed_tokens = ops::PackLinearWeight(embed);
  ASSIGN_OR_RETURN(weights.final_norm, reader.Read("norm.weight", {config.hidden_size}));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    ASSIGN_OR_RETURN(LayerWeights layer, LoadLayer(reader, config, plan, i));
    weights.layers.push_back(std::move(layer));
  }
  return weights;
}

}  // namespace gemmaserve::model
