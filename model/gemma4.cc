#include "model/gemma4.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/norm.h"
#include "ops/routing.h"

namespace gemmaserve::model {
namespace {

Tensor NewF32(Shape shape) { return Tensor::Empty(DType::kF32, std::move(shape)); }

// y = RmsNorm(x) with weight w (or none when w is undefined), into a new tensor.
Tensor Norm(const Tensor& x, const Tensor& w, double eps) {
  Tensor y = NewF32(x.shape());
  ops::RmsNorm(x, w, static_cast<float>(eps), y);
  return y;
}

Tensor Project(const Tensor& x, const Tensor& w) {
  Tensor y = NewF32({x.dim(0), ops::LinearOutFeatures(w)});
  ops::Linear(x, w, y);
  return y;
}

// Expert e's matrix of a stacked [num_local_experts, ...] expert weight.
Tensor ExpertWeight(const Tensor& stacked, int64_t e) {
  return stacked.Slice(e, e + 1).View(Shape(stacked.shape().begin() + 1, stacked.shape().end()));
}

}  // namespace

Gemma4Model::Gemma4Model(Gemma4Config config, ModelWeights weights, parallel::Communicator& comm)
    : config_(std::move(config)), weights_(std::move(weights)), comm_(comm) {
  for (const LayerWeights& layer : weights_.layers) {
    const LayerGeometry& g = layer.geometry;
    rotary_.emplace_back(g.head_dim, g.rope_angles, g.rope_theta);
  }
  if (config_.is_moe()) {
    expert_counts_.assign(weights_.layers.size(), std::vector<int64_t>(config_.num_experts, 0));
  }
}

std::vector<std::vector<int64_t>> Gemma4Model::TakeExpertCounts() {
  std::vector<std::vector<int64_t>> counts = expert_counts_;
  for (std::vector<int64_t>& layer : expert_counts_) std::fill(layer.begin(), layer.end(), 0);
  return counts;
}

void Gemma4Model::Observe(const char* name, int64_t layer, const Tensor& value) const {
  if (observer_) observer_(name, layer, value);
}

Tensor Gemma4Model::Forward(const ForwardBatch& batch, KvCache& cache) {
  const int64_t num_tokens = batch.num_tokens();
  const double eps = config_.rms_norm_eps;
  // h0 = embed_tokens[ids] · sqrt(hidden); activations are f32 here, so the scale is too.
  // Vocab-parallel: each rank fills the rows of the ids it holds, zeros elsewhere, then one
  // all-reduce assembles the embedding.
  Tensor h = NewF32({num_tokens, config_.hidden_size});
  ops::EmbeddingLookup(weights_.embed_tokens, batch.token_ids.data(),
                       config_.EmbedScale(DType::kF32), h, weights_.vocab_rows.begin);
  comm_.AllReduceSum(h);
  Observe("embed", -1, h);

  for (int64_t l = 0; l < static_cast<int64_t>(weights_.layers.size()); ++l) {
    const LayerWeights& layer = weights_.layers[l];
    // A. Attention block.
    Tensor attn = Attention(l, Norm(h, layer.input_layernorm, eps), batch, cache);
    ops::AddInPlace(h, Norm(attn, layer.post_attention_layernorm, eps));
    Observe("attn_residual", l, h);

    // B. Feed-forward block. The MoE layers run the dense MLP and the routed experts side by side
    // on the same residual, each with its own post-norm, then normalise their sum.
    Tensor ffn = Mlp(layer.mlp, Norm(h, layer.pre_feedforward_layernorm, eps));
    if (layer.has_moe) {
      const MoeWeights& moe = layer.moe;
      Tensor dense = Norm(ffn, moe.post_feedforward_layernorm_1, eps);
      Tensor experts = Experts(l, h, Norm(h, moe.pre_feedforward_layernorm_2, eps));
      ffn = Norm(experts, moe.post_feedforward_layernorm_2, eps);
      ops::AddInPlace(ffn, dense);
    }
    ops::AddInPlace(h, Norm(ffn, layer.post_feedforward_layernorm, eps));

    // D. layer_scalar scales the whole residual stream, not a branch.
    ops::ScaleInPlace(h, layer.layer_scalar);
    Observe("layer_out", l, h);
  }
  return LmHead(h, batch);
}

Tensor Gemma4Model::Attention(int64_t l, const Tensor& x, const ForwardBatch& batch,
                              KvCache& cache) {
  const LayerWeights& layer = weights_.layers[l];
  const AttentionWeights& w = layer.attention;
  const LayerGeometry& g = layer.geometry;
  const int64_t num_tokens = x.dim(0);
  const double eps = config_.rms_norm_eps;
  const Shape q_shape = {num_tokens, layer.num_heads_local, g.head_dim};
  const Shape kv_shape = {num_tokens, layer.num_kv_heads_local, g.head_dim};

  Tensor q = Project(x, w.q_proj).View(q_shape);
  ops::RmsNorm(q, w.q_norm, static_cast<float>(eps), q);
  rotary_[l].Apply(q, batch.positions.data());

  Tensor k_raw = Project(x, w.k_proj).View(kv_shape);
  // On attention_k_eq_v full layers V is the raw K projection, taken before k_norm and RoPE.
  Tensor v_raw = g.has_v_proj ? Project(x, w.v_proj).View(kv_shape) : k_raw;
  Tensor k = Norm(k_raw, w.k_norm, eps);
  rotary_[l].Apply(k, batch.positions.data());
  Tensor v = Norm(v_raw, Tensor(), eps);  // v_norm has no weight
  Observe("q", l, q);
  Observe("k", l, k);
  Observe("v", l, v);

  const int group = static_cast<int>(g.kind);
  ops::WriteKvCache(k, v, batch.slot_mapping[group].data(), cache.k(l), cache.v(l));
  std::vector<ops::AttentionSpan> spans(batch.sequences.size());
  for (size_t s = 0; s < spans.size(); ++s) {
    const BatchSequence& seq = batch.sequences[s];
    spans[s] = {batch.token_begin[s], seq.num_tokens, seq.num_cached + seq.num_tokens,
                seq.block_tables[group].data()};
  }
  Tensor o = NewF32(q_shape);
  // Scale 1.0: Gemma 4 has no 1/sqrt(head_dim); the q/k norms absorb it.
  ops::PagedAttention(q, cache.k(l), cache.v(l), spans, g.sliding_window, 1.0f, o);
  Tensor out = Project(o.View({num_tokens, layer.num_heads_local * g.head_dim}), w.o_proj);
  comm_.AllReduceSum(out);  // o_proj is row-parallel
  Observe("attn_out", l, out);
  return out;
}

Tensor Gemma4Model::Mlp(const MlpWeights& mlp, const Tensor& x) {
  Tensor gate_up = Project(x, mlp.gate_up);
  Tensor act = NewF32({x.dim(0), ops::LinearInFeatures(mlp.down)});
  ops::GeluTanhGate(gate_up, act);
  Tensor out = Project(act, mlp.down);
  comm_.AllReduceSum(out);  // down_proj is row-parallel
  return out;
}

Tensor Gemma4Model::Experts(int64_t l, const Tensor& residual, const Tensor& x) {
  const MoeWeights& moe = weights_.layers[l].moe;
  const int64_t num_tokens = x.dim(0);
  const int64_t hidden = config_.hidden_size;
  const int64_t top_k = config_.top_k_experts;

  // Router: reads the raw residual through a weightless norm, its learned scale and 1/sqrt(hidden).
  Tensor z = Norm(residual, Tensor(), config_.rms_norm_eps);
  const float root = 1.0f / std::sqrt(static_cast<float>(hidden));
  for (int64_t t = 0; t < num_tokens; ++t) {
    float* row = z.data<float>() + t * hidden;
    for (int64_t i = 0; i < hidden; ++i) row[i] = row[i] * moe.router_scale.data<float>()[i] * root;
  }
  Tensor router_logits = Project(z, moe.router_proj);
  Tensor expert_ids = Tensor::Empty(DType::kI32, {num_tokens, top_k});
  Tensor expert_weights = NewF32({num_tokens, top_k});
  ops::TopKRouting(router_logits, moe.per_expert_scale, top_k, expert_ids, expert_weights);
  Observe("router_weights", l, expert_weights);

  // Group the (token, weight) pairs by expert, then run each local expert once on its tokens.
  const int64_t num_experts = config_.num_experts;
  std::vector<std::vector<std::pair<int64_t, float>>> routed(num_experts);
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t e = expert_ids.data<int32_t>()[t * top_k + j];
      routed[e].push_back({t, expert_weights.data<float>()[t * top_k + j]});
    }
  }
  for (int64_t e = 0; e < num_experts; ++e) {
    expert_counts_[l][e] += static_cast<int64_t>(routed[e].size());
  }
  Tensor out = Tensor::Zeros(DType::kF32, {num_tokens, hidden});
  for (int64_t e = 0; e < num_experts; ++e) {
    const int32_t local = moe.local_expert[e];
    if (local < 0 || routed[e].empty()) continue;
    const Tensor gate_up_w = ExpertWeight(moe.gate_up, local);
    const Tensor down_w = ExpertWeight(moe.down, local);
    const int64_t width = ops::LinearInFeatures(down_w);
    const int64_t n = static_cast<int64_t>(routed[e].size());
    Tensor xe = NewF32({n, hidden});
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(xe.data<float>() + i * hidden, x.data<float>() + routed[e][i].first * hidden,
                  hidden * sizeof(float));
    }
    Tensor gate_up = Project(xe, gate_up_w);
    Tensor act = NewF32({n, width});
    ops::GeluTanhGate(gate_up, act);
    Tensor ye = Project(act, down_w);
    for (int64_t i = 0; i < n; ++i) {
      const float weight = routed[e][i].second;
      float* dst = out.data<float>() + routed[e][i].first * hidden;
      const float* src = ye.data<float>() + i * hidden;
      for (int64_t j = 0; j < hidden; ++j) dst[j] += weight * src[j];
    }
  }
  comm_.AllReduceSum(out);  // each rank holds a subset of the experts
  return out;
}

Tensor Gemma4Model::GatherVocab(const Tensor& local) {
  const int64_t world = comm_.world_size();
  const int64_t rows = local.dim(0);
  const int64_t shard = local.dim(1);
  Tensor gathered = NewF32({world * rows, shard});  // rank-major: [world][rows][shard]
  comm_.AllGather(local, gathered);
  Tensor logits = NewF32({rows, world * shard});
  for (int64_t r = 0; r < world; ++r) {
    for (int64_t i = 0; i < rows; ++i) {
      std::memcpy(logits.data<float>() + i * world * shard + r * shard,
                  gathered.data<float>() + (r * rows + i) * shard, shard * sizeof(float));
    }
  }
  return logits;
}

Tensor Gemma4Model::LmHead(const Tensor& h, const ForwardBatch& batch) {
  const int64_t hidden = config_.hidden_size;
  const int64_t rows = static_cast<int64_t>(batch.logits_rows.size());
  Tensor selected = NewF32({rows, hidden});
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(selected.data<float>() + r * hidden, h.data<float>() + batch.logits_rows[r] * hidden,
                hidden * sizeof(float));
  }
  Tensor normed = Norm(selected, weights_.final_norm, config_.rms_norm_eps);
  // Tied head: the embedding matrix without its sqrt(hidden) scale. Each rank computes the logits
  // of its vocabulary rows; an all-gather assembles full rows.
  Tensor logits = Project(normed, weights_.embed_tokens);
  if (comm_.world_size() > 1) logits = GatherVocab(logits);
  if (config_.final_logit_softcapping > 0) {
    ops::SoftcapInPlace(logits, static_cast<float>(config_.final_logit_softcapping));
  }
  return logits;
}

}  // namespace gemmaserve::model
