#include "model/gemma4.h"

#include <algorithm>
#include <cmath>

#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/copy.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/moe.h"
#include "ops/norm.h"
#include "ops/routing.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::model {

Gemma4Model::Gemma4Model(Gemma4Config config, ModelWeights weights, parallel::Communicator& comm,
                         const StepLimits& limits)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      comm_(comm),
      expert_counts_(Tensor::Zeros(DType::kI64,
                                   {config_.is_moe() ? config_.num_hidden_layers : 0,
                                    config_.num_experts},
                                   weights_.device)),
      workspace_(WorkspaceBytes(limits), weights_.device),
      limits_(limits) {
  for (const LayerWeights& layer : weights_.layers) {
    const LayerGeometry& g = layer.geometry;
    std::optional<ops::Rotary>& rotary = rotary_[static_cast<int>(g.kind)];
    if (!rotary) rotary.emplace(g.head_dim, g.rope_angles, g.rope_theta, weights_.device);
  }
}

Tensor Gemma4Model::TakeExpertCounts() {
  Tensor counts = Tensor::Empty(DType::kI64, expert_counts_.shape());
  ops::Copy(expert_counts_, counts);
  ops::SetZero(expert_counts_);
  return counts;
}

void Gemma4Model::Observe(const char* name, int64_t layer, const Tensor& value) const {
  if (observer_) observer_(name, layer, value);
}

Tensor Gemma4Model::Activation(Shape shape, DType dtype) {
  return workspace_.Take(dtype, std::move(shape));
}

Tensor Gemma4Model::Norm(const Tensor& x, const Tensor& w) {
  Tensor y = Activation(x.shape());
  ops::RmsNorm(x, w, static_cast<float>(config_.rms_norm_eps), y);
  return y;
}

Tensor Gemma4Model::Project(const Tensor& x, const Tensor& w) {
  Tensor y = Activation({x.dim(0), ops::LinearOutFeatures(w)});
  ops::Linear(x, w, y);
  return y;
}

Tensor Gemma4Model::Forward(const ForwardBatch& batch, KvCache& cache) {
  if (GraphEligible(batch)) {
    const GraphShape shape = GraphShapeFor(batch, config_);
    if (shape.table_width * batch.kv_block_size <= kMaxGraphContext) {
      DecodeGraph& entry = graphs_[shape];
      if (!entry.eager_only) return ForwardByGraph(batch, shape, entry, cache);
    }
  }
  workspace_.Reset();
  return Run(UploadBatch(batch, weights_.device, upload_buffers_), batch.num_tokens(), cache);
}

bool Gemma4Model::GraphEligible(const ForwardBatch& batch) const {
  if (!use_graphs_ || !weights_.device.is_cuda() || config_.is_moe() || comm_.world_size() != 1 ||
      observer_ || !IsPlainDecode(batch)) {
    return false;
  }
  const int64_t size = GraphBatchSize(static_cast<int64_t>(batch.context_lens.size()));
  return size <= limits_.max_tokens && size <= limits_.max_logits_rows;
}

Tensor Gemma4Model::ForwardByGraph(const ForwardBatch& batch, const GraphShape& shape,
                                   DecodeGraph& entry, KvCache& cache) {
  PadForGraph(batch, shape, padded_);
  const StepMetadata step = UploadBatch(padded_, weights_.device, entry.upload);
  const int64_t rows = static_cast<int64_t>(batch.logits_rows.size());
  if (entry.graph != nullptr && entry.graph->stale()) entry.graph.reset();
  if (entry.graph == nullptr) return RecordGraph(entry, step, shape.num_sequences, rows, cache);
  entry.graph->Replay();
  ++graph_stats_.replayed;
  return entry.logits.Rows(rows);
}

Tensor Gemma4Model::RecordGraph(DecodeGraph& entry, const StepMetadata& step, int64_t num_tokens,
                                int64_t rows, KvCache& cache) {
  // Eagerly first: the step's result, and every buffer the kernels keep for this shape made
  // before recording (which may not allocate).
  workspace_.Reset();
  const int64_t overflows = workspace_.num_overflows();
  Tensor eager = Run(step, num_tokens, cache).Rows(rows);
  if (workspace_.num_overflows() != overflows) {
    entry.eager_only = true;  // its activations were allocated: there is no fixed place for them
    return eager;
  }
  // Recording executes nothing and takes the same workspace addresses, so `eager` stays intact.
  workspace_.Reset();
  absl::StatusOr<std::unique_ptr<ops::DeviceGraph>> graph = ops::DeviceGraph::Capture(
      weights_.device, [&] { entry.logits = Run(step, num_tokens, cache); });
  if (!graph.ok()) {
    spdlog::error("decode graphs off: recording a step of {} sequences failed: {}", num_tokens,
                  graph.status().ToString());
    use_graphs_ = false;
    return eager;
  }
  const Tensor expected = ops::ToHost(eager);
  // The replay rewrites the step's keys and values with the same bits, and its logits over
  // eager's.
  (*graph)->Replay();
  Tensor replayed = entry.logits.Rows(rows);
  if (!ops::SameBits(ops::ToHost(replayed), expected)) {
    spdlog::error(
        "decode graphs off: the graph of {} sequences replayed other logits than the "
        "step it was recorded from",
        num_tokens);
    use_graphs_ = false;
    // Op by op once more: the replay also rewrote the step's keys and values.
    workspace_.Reset();
    return Run(step, num_tokens, cache).Rows(rows);
  }
  entry.graph = std::move(*graph);
  ++graph_stats_.recorded;
  ++graph_stats_.replayed;
  spdlog::info("decode graph recorded for {} sequences over {} positions: {} nodes", num_tokens,
               step.attention[0].max_context_len, entry.graph->num_nodes());
  return replayed;
}

Gemma4Model::GraphStats Gemma4Model::graph_stats() const {
  GraphStats stats = graph_stats_;
  stats.graphs = 0;
  for (const auto& [shape, entry] : graphs_) stats.graphs += entry.graph != nullptr ? 1 : 0;
  return stats;
}

Tensor Gemma4Model::Run(const StepMetadata& step, int64_t num_tokens, KvCache& cache) {
  // h0 = embed_tokens[ids] · sqrt(hidden); activations are f32 here, so the scale is too.
  // Vocab-parallel: each rank fills the rows of the ids it holds, zeros elsewhere, then one
  // all-reduce assembles the embedding.
  Tensor h = Activation({num_tokens, config_.hidden_size});
  ops::EmbeddingLookup(weights_.embed_tokens, step.token_ids, config_.EmbedScale(DType::kF32), h,
                       weights_.vocab_rows.begin);
  comm_.AllReduceSum(h);
  Observe("embed", -1, h);

  // Each half layer ends with one AddRmsNorm: the residual update, and the norm that opens the
  // next half (the same bits as the norms and additions one at a time).
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const int64_t num_layers = static_cast<int64_t>(weights_.layers.size());
  Tensor layer_in = num_layers > 0 ? Norm(h, weights_.layers[0].input_layernorm) : Tensor();
  for (int64_t l = 0; l < num_layers; ++l) {
    const LayerWeights& layer = weights_.layers[l];
    Workspace::Scope layer_activations(workspace_);  // h and layer_in live on; the layer's own do not
    // A. Attention block.
    Tensor attn = Attention(l, layer_in, step, cache);
    Tensor ffn_in = Activation(h.shape());
    ops::AddRmsNorm(attn, layer.post_attention_layernorm, 1.0f, layer.pre_feedforward_layernorm,
                    eps, h, ffn_in);
    Observe("attn_residual", l, h);

    // B. Feed-forward block. The MoE layers run the dense MLP and the routed experts side by side
    // on the same residual, each with its own post-norm, then normalise their sum.
    Tensor ffn = Mlp(layer.mlp, ffn_in);
    if (layer.has_moe) {
      const MoeWeights& moe = layer.moe;
      Tensor dense = Norm(ffn, moe.post_feedforward_layernorm_1);
      Tensor experts = Experts(l, h, Norm(h, moe.pre_feedforward_layernorm_2));
      ffn = Norm(experts, moe.post_feedforward_layernorm_2);
      ops::AddInPlace(ffn, dense);
    }
    // D. layer_scalar scales the whole residual stream, not a branch; the next layer's input norm
    // follows.
    const Tensor next_norm = l + 1 < num_layers ? weights_.layers[l + 1].input_layernorm : Tensor();
    ops::AddRmsNorm(ffn, layer.post_feedforward_layernorm, layer.layer_scalar, next_norm, eps, h,
                    layer_in);
    Observe("layer_out", l, h);
  }
  return LmHead(h, step);
}

Tensor Gemma4Model::Attention(int64_t l, const Tensor& x, const StepMetadata& step,
                              KvCache& cache) {
  const LayerWeights& layer = weights_.layers[l];
  const AttentionWeights& w = layer.attention;
  const LayerGeometry& g = layer.geometry;
  const int64_t num_tokens = x.dim(0);
  const Shape q_shape = {num_tokens, layer.num_heads_local, g.head_dim};
  const Shape kv_shape = {num_tokens, layer.num_kv_heads_local, g.head_dim};

  const int group = static_cast<int>(g.kind);
  ops::Rotary& rotary = *rotary_[group];
  Tensor q = Project(x, w.q_proj).View(q_shape);
  Tensor k_raw = Project(x, w.k_proj).View(kv_shape);
  // On attention_k_eq_v full layers V is the raw K projection, taken before k_norm and RoPE.
  Tensor v_raw = g.has_v_proj ? Project(x, w.v_proj).View(kv_shape) : k_raw;
  Tensor k = Activation(kv_shape);
  Tensor v = Activation(kv_shape);
  // q and k normalised and rotated, v normalised (v_norm has no weight), k and v cached. A layer
  // whose cache holds no keys (model/kv_cache.h) caches its values only, and attention rebuilds
  // the keys from them: the same bits as k.
  const ops::AttentionInputs inputs{w.q_norm, w.k_norm, static_cast<float>(config_.rms_norm_eps),
                                    rotary, step.positions, step.slots[group]};
  ops::PrepareAttention(q, k_raw, v_raw, inputs, k, v, cache.k(l), cache.v(l));
  Observe("q", l, q);
  Observe("k", l, k);
  Observe("v", l, v);

  Tensor o = Activation(q_shape);
  const ops::AttentionMetadata& metadata = step.attention[group];
  std::optional<ops::KeysFromValues> keys_from_values;
  if (!cache.k(l).defined()) {
    // The CPU kernel reads the angles from a table, the CUDA kernel computes them.
    keys_from_values = ops::KeysFromValues{
        w.k_norm, rotary.inv_freq(),
        weights_.device.is_cpu() ? rotary.Table(metadata.max_context_len) : ops::RopeTable{}};
  }
  // Scale 1.0: Gemma 4 has no 1/sqrt(head_dim); the q/k norms absorb it.
  ops::PagedAttention(q, cache.k(l), cache.v(l), metadata, g.sliding_window, 1.0f, o,
                      keys_from_values ? &*keys_from_values : nullptr);
  Tensor out = Project(o.View({num_tokens, layer.num_heads_local * g.head_dim}), w.o_proj);
  comm_.AllReduceSum(out);  // o_proj is row-parallel
  Observe("attn_out", l, out);
  return out;
}

Tensor Gemma4Model::Mlp(const MlpWeights& mlp, const Tensor& x) {
  Tensor gate_up = Project(x, mlp.gate_up);
  Tensor act = Activation({x.dim(0), ops::LinearInFeatures(mlp.down)});
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

  // Route: the router reads the raw residual through a weightless norm, its learned scale and
  // 1/sqrt(hidden); softmax, top-k, renormalised, times per_expert_scale.
  Tensor z = Norm(residual, Tensor());
  ops::MultiplyInPlace(z, moe.router_scale, 1.0f / std::sqrt(static_cast<float>(hidden)));
  Tensor router_logits = Project(z, moe.router_proj);
  Tensor expert_ids = Activation({num_tokens, top_k}, DType::kI32);
  Tensor weights = Activation({num_tokens, top_k});
  ops::TopKRouting(router_logits, moe.per_expert_scale, top_k, expert_ids, weights);
  Observe("router_weights", l, weights);

  // Dispatch: the tokens routed to this rank's experts, grouped by expert.
  const int64_t num_local = moe.gate_up.dim(0);
  Tensor dispatched_tokens = Activation({num_tokens * top_k}, DType::kI32);
  Tensor dispatched_rows = Activation({num_tokens * top_k}, DType::kI32);
  Tensor offsets = Activation({num_local + 1}, DType::kI32);
  Tensor counts = expert_counts_.Slice(l, l + 1).View({config_.num_experts});
  const int64_t num_rows = ops::MoeDispatch(expert_ids, moe.local_expert, dispatched_tokens,
                                            dispatched_rows, offsets, counts);
  Tensor xe = Activation({num_rows, hidden});
  ops::GatherRows(x, dispatched_tokens.Rows(num_rows), xe);

  // Expert compute: each local expert's MLP on its rows.
  Tensor gate_up = Activation({num_rows, ops::ExpertOutFeatures(moe.gate_up)});
  ops::GroupedLinear(xe, moe.gate_up, offsets, gate_up);
  Tensor act = Activation({num_rows, ops::ExpertInFeatures(moe.down)});
  ops::GeluTanhGate(gate_up, act);
  Tensor ye = Activation({num_rows, hidden});
  ops::GroupedLinear(act, moe.down, offsets, ye);

  // Weighted combine; each rank holds a subset of the experts, so the all-reduce adds the rest.
  Tensor out = Activation({num_tokens, hidden});
  ops::MoeCombine(ye, expert_ids, weights, dispatched_rows, out);
  comm_.AllReduceSum(out);
  return out;
}

Tensor Gemma4Model::LmHead(const Tensor& h, const StepMetadata& step) {
  const int64_t rows = step.logits_rows.numel();
  Tensor selected = Activation({rows, config_.hidden_size});
  ops::GatherRows(h, step.logits_rows, selected);
  Tensor normed = Norm(selected, weights_.final_norm);
  // Tied head: the embedding matrix without its sqrt(hidden) scale. Each rank computes the logits
  // of its vocabulary rows; an all-gather assembles full rows.
  Tensor logits = Project(normed, weights_.embed_tokens);
  const int64_t world = comm_.world_size();
  if (world > 1) {
    Tensor gathered = Activation({world * rows, logits.dim(1)});  // [world][rows][shard]
    comm_.AllGather(logits, gathered);
    logits = Activation({rows, world * logits.dim(1)});
    ops::InterleaveShards(gathered, world, logits);
  }
  if (config_.final_logit_softcapping > 0) {
    ops::SoftcapInPlace(logits, static_cast<float>(config_.final_logit_softcapping));
  }
  return logits;
}

// The bytes below mirror, take for take, what the functions above take from the workspace.
// WorkspaceTest.AFullStepFillsTheWorkspaceExactly keeps them in step.

namespace {

int64_t LayerBytes(const Gemma4Config& config, const LayerWeights& layer, int64_t t) {
  auto f32 = [](Shape shape) { return Workspace::BytesFor(DType::kF32, shape); };
  auto i32 = [](Shape shape) { return Workspace::BytesFor(DType::kI32, shape); };
  const LayerGeometry& g = layer.geometry;
  const int64_t hidden = config.hidden_size;
  const int64_t q_width = layer.num_heads_local * g.head_dim;
  const int64_t kv_width = layer.num_kv_heads_local * g.head_dim;
  const int64_t mlp_width = ops::LinearInFeatures(layer.mlp.down);
  // Attention (its input norm is the persistent layer_in): q, k_raw (v_raw), k, v, o, out.
  int64_t bytes = f32({t, q_width}) + f32({t, kv_width}) +
                  (g.has_v_proj ? f32({t, kv_width}) : 0) + 2 * f32({t, kv_width}) +
                  f32({t, q_width}) + f32({t, hidden});
  // Dense MLP: its input norm (ffn_in), gate_up, act, out.
  bytes += f32({t, hidden}) + f32({t, 2 * mlp_width}) + f32({t, mlp_width}) + f32({t, hidden});
  if (layer.has_moe) {
    const int64_t k = config.top_k_experts;
    const int64_t rows = t * k;  // at most: every choice routed to a local expert
    const int64_t width = ops::ExpertInFeatures(layer.moe.down);
    const int64_t num_local = layer.moe.gate_up.dim(0);
    // Post-norm 1, expert input norm; router z and logits, ids, weights; dispatch; xe, gate_up,
    // act, ye, out; post-norm 2.
    bytes += 2 * f32({t, hidden}) + f32({t, hidden}) + f32({t, config.num_experts}) +
             i32({t, k}) + f32({t, k}) + 2 * i32({rows}) + i32({num_local + 1}) +
             f32({rows, hidden}) + f32({rows, 2 * width}) + f32({rows, width}) +
             f32({rows, hidden}) + f32({t, hidden}) + f32({t, hidden});
  }
  return bytes;
}

int64_t LmHeadBytes(const Gemma4Config& config, const ModelWeights& weights, int64_t world,
                    int64_t rows) {
  auto f32 = [](Shape shape) { return Workspace::BytesFor(DType::kF32, shape); };
  const int64_t shard = ops::LinearOutFeatures(weights.embed_tokens);
  int64_t bytes = 2 * f32({rows, config.hidden_size}) + f32({rows, shard});
  if (world > 1) bytes += f32({world * rows, shard}) + f32({rows, world * shard});
  return bytes;
}

}  // namespace

int64_t Gemma4Model::WorkspaceBytes(const Gemma4Config& config, const ModelWeights& weights,
                                    int world_size, const StepLimits& limits) {
  int64_t layer_peak = 0;
  for (const LayerWeights& layer : weights.layers) {
    layer_peak = std::max(layer_peak, LayerBytes(config, layer, limits.max_tokens));
  }
  const int64_t rows = std::min(limits.max_logits_rows, limits.max_tokens);
  // h, and layer_in (the next layer's input norm) where there are layers.
  const int64_t residual = Workspace::BytesFor(DType::kF32, {limits.max_tokens, config.hidden_size});
  return residual + (weights.layers.empty() ? 0 : residual) +
         std::max(layer_peak, LmHeadBytes(config, weights, world_size, rows));
}

}  // namespace gemmaserve::model
