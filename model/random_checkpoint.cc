#include "model/random_checkpoint.h"

#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/dtype.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::model {
namespace {

using nlohmann::json;

constexpr char kPrefix[] = "model.language_model.";

// ---- Presets ----------------------------------------------------------------------------------

// A preset: its config and how often a full-attention layer comes (every `full_period`-th layer).
struct Preset {
  Gemma4Config config;
  int64_t full_period = 6;
};

// Fields shared by every Gemma 4 size (GEMMA4.md §1.1).
Gemma4Config CommonConfig() {
  Gemma4Config config;
  config.vocab_size = 262144;
  config.vocab_size_per_layer_input = 262144;
  config.head_dim = 256;
  config.global_head_dim = 512;
  config.attention_k_eq_v = true;
  config.sliding_window = 1024;
  config.max_position_embeddings = 262144;
  config.rms_norm_eps = 1e-6;
  config.final_logit_softcapping = 30.0;
  config.eos_token_ids = {1, 106};
  config.dtype = "bfloat16";
  config.rope_sliding = {"default", 10000.0, 1.0};
  config.rope_full = {"proportional", 1000000.0, 0.25};
  return config;
}

Preset DensePreset(int64_t hidden, int64_t layers, int64_t intermediate, int64_t heads,
                   int64_t kv_heads, int64_t global_kv_heads) {
  Preset preset{CommonConfig(), 6};
  Gemma4Config& c = preset.config;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.intermediate_size = intermediate;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.num_global_key_value_heads = global_kv_heads;
  return preset;
}

Preset MoePreset(Preset preset, int64_t experts, int64_t top_k, int64_t moe_intermediate) {
  preset.config.enable_moe_block = true;
  preset.config.num_experts = experts;
  preset.config.top_k_experts = top_k;
  preset.config.moe_intermediate_size = moe_intermediate;
  return preset;
}

// tests/data/gemma4-tiny-*: vocabulary 512, hidden 128, head dims 32/64, window 16.
Preset TinyPreset(int64_t intermediate, int64_t full_period) {
  Preset preset = DensePreset(128, 6, intermediate, 4, 2, 1);
  preset.full_period = full_period;
  Gemma4Config& c = preset.config;
  c.vocab_size = 512;
  c.vocab_size_per_layer_input = 512;
  c.head_dim = 32;
  c.global_head_dim = 64;
  c.sliding_window = 16;
  return preset;
}

// The tiny MoE's geometry with the real 262,144-token vocabulary (a 64 MiB embedding): for what
// scales with the vocabulary, such as the size of step results with logits.
Preset TinyMoeFullVocabPreset() {
  Preset preset = MoePreset(TinyPreset(96, 6), 8, 2, 32);
  preset.config.vocab_size = 262144;
  preset.config.vocab_size_per_layer_input = 262144;
  return preset;
}

struct NamedPreset {
  const char* name;
  Preset (*make)();
};

// Sizes (bf16, computed by TextTensorSpecs): bench-dense 1.73 GB, bench-moe 1.98 GB, of which the
// 262144-row embedding is 0.81 GB and 0.54 GB.
constexpr NamedPreset kPresets[] = {
    {"31b", [] { return DensePreset(5376, 60, 21504, 32, 16, 4); }},
    {"26b-a4b", [] { return MoePreset(DensePreset(2816, 30, 2112, 16, 8, 2), 128, 8, 704); }},
    {"bench-dense", [] { return DensePreset(1536, 12, 6144, 8, 4, 1); }},
    {"bench-moe", [] { return MoePreset(DensePreset(1024, 12, 1024, 8, 4, 1), 32, 4, 512); }},
    {"tiny-dense", [] { return TinyPreset(512, 3); }},
    {"tiny-moe", [] { return MoePreset(TinyPreset(96, 6), 8, 2, 32); }},
    {"tiny-moe-full-vocab", TinyMoeFullVocabPreset},
};

std::vector<LayerKind> LayerPattern(int64_t num_layers, int64_t full_period) {
  std::vector<LayerKind> types;
  for (int64_t i = 0; i < num_layers; ++i) {
    const bool full = (i + 1) % full_period == 0 || i == num_layers - 1;
    types.push_back(full ? LayerKind::kFull : LayerKind::kSliding);
  }
  return types;
}

// ---- Tensors ----------------------------------------------------------------------------------

void AppendLayerSpecs(const Gemma4Config& config, int64_t layer,
                      std::vector<TextTensorSpec>* specs) {
  const LayerGeometry& g = config.layers[layer];
  const int64_t h = config.hidden_size;
  const int64_t q_width = config.num_attention_heads * g.head_dim;
  const int64_t kv_width = g.num_kv_heads * g.head_dim;
  const std::string p = absl::StrCat(kPrefix, "layers.", layer, ".");
  auto add = [&](const std::string& suffix, Shape shape, WeightInit init) {
    specs->push_back(TextTensorSpec{p + suffix, std::move(shape), init});
  };
  add("input_layernorm.weight", {h}, WeightInit::kNearOne);
  add("self_attn.q_proj.weight", {q_width, h}, WeightInit::kLinear);
  add("self_attn.k_proj.weight", {kv_width, h}, WeightInit::kLinear);
  if (g.has_v_proj) add("self_attn.v_proj.weight", {kv_width, h}, WeightInit::kLinear);
  add("self_attn.o_proj.weight", {h, q_width}, WeightInit::kLinear);
  add("self_attn.q_norm.weight", {g.head_dim}, WeightInit::kNearOne);
  add("self_attn.k_norm.weight", {g.head_dim}, WeightInit::kNearOne);
  add("post_attention_layernorm.weight", {h}, WeightInit::kNearOne);
  add("pre_feedforward_layernorm.weight", {h}, WeightInit::kNearOne);
  add("mlp.gate_proj.weight", {g.mlp_width, h}, WeightInit::kLinear);
  add("mlp.up_proj.weight", {g.mlp_width, h}, WeightInit::kLinear);
  add("mlp.down_proj.weight", {h, g.mlp_width}, WeightInit::kLinear);
  if (config.enable_moe_block) {
    const int64_t e = config.num_experts;
    const int64_t i_moe = config.moe_intermediate_size;
    add("router.proj.weight", {e, h}, WeightInit::kLinear);
    add("router.scale", {h}, WeightInit::kNearOne);
    add("router.per_expert_scale", {e}, WeightInit::kNearOne);
    add("experts.gate_up_proj", {e, 2 * i_moe, h}, WeightInit::kLinear);  // rows: gate, then up
    add("experts.down_proj", {e, h, i_moe}, WeightInit::kLinear);
    add("pre_feedforward_layernorm_2.weight", {h}, WeightInit::kNearOne);
    add("post_feedforward_layernorm_1.weight", {h}, WeightInit::kNearOne);
    add("post_feedforward_layernorm_2.weight", {h}, WeightInit::kNearOne);
  }
  add("post_feedforward_layernorm.weight", {h}, WeightInit::kNearOne);
  add("layer_scalar", {1}, WeightInit::kLayerScalar);
}

// ---- Random values ----------------------------------------------------------------------------

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t NameHash(const std::string& name) {  // FNV-1a
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : name) hash = (hash ^ c) * 0x100000001b3ull;
  return hash;
}

// Element i of a tensor is low + (high - low) · u_i with u_i uniform in [0, 1) from the hash of
// (stream, i); bf16, little-endian.
SafetensorsWriter::FillFn UniformBf16(uint64_t stream, float low, float high) {
  return [stream, low, high](size_t begin_bytes, size_t size_bytes, char* dst) {
    const size_t first = begin_bytes / 2;
    const size_t count = size_bytes / 2;
    const float scale = (high - low) * 0x1p-24f;
    for (size_t i = 0; i < count; ++i) {
      const uint64_t bits = SplitMix64(stream + first + i);
      const uint16_t value = F32ToBf16(low + scale * static_cast<float>(bits >> 40));
      std::memcpy(dst + 2 * i, &value, sizeof(value));
    }
  };
}

SafetensorsWriter::FillFn FillFor(const TextTensorSpec& spec, uint64_t seed) {
  // A random 64-bit counter start per tensor: two tensors share values only if their starts lie
  // within a tensor's length of each other, which is negligible.
  const uint64_t stream = SplitMix64(seed ^ NameHash(spec.name));
  constexpr float kLinearHalfWidth = 0.0346f;  // uniform ±a has std a/√3 = 0.02
  switch (spec.init) {
    case WeightInit::kLinear:
      return UniformBf16(stream, -kLinearHalfWidth, kLinearHalfWidth);
    case WeightInit::kNearOne:
      return UniformBf16(stream, 0.8f, 1.2f);
    case WeightInit::kLayerScalar:
      return UniformBf16(stream, 0.55f, 0.95f);
  }
  return UniformBf16(stream, 0.0f, 0.0f);
}

json GenerationConfigJson(const Gemma4Config& config) {
  return json{{"bos_token_id", config.bos_token_id},
              {"eos_token_id", config.eos_token_ids},
              {"pad_token_id", config.pad_token_id},
              {"do_sample", true},
              {"temperature", 1.0},
              {"top_k", 64},
              {"top_p", 0.95}};
}

}  // namespace

std::vector<TextTensorSpec> TextTensorSpecs(const Gemma4Config& config) {
  CHECK_EQ(static_cast<int64_t>(config.layers.size()), config.num_hidden_layers)
      << "TextTensorSpecs needs a finalized config";
  std::vector<TextTensorSpec> specs;
  specs.push_back(TextTensorSpec{absl::StrCat(kPrefix, "embed_tokens.weight"),
                                 {config.vocab_size, config.hidden_size},
                                 WeightInit::kLinear});
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    AppendLayerSpecs(config, layer, &specs);
  }
  specs.push_back(TextTensorSpec{
      absl::StrCat(kPrefix, "norm.weight"), {config.hidden_size}, WeightInit::kNearOne});
  return specs;
}

std::vector<std::string> RandomCheckpointPresetNames() {
  std::vector<std::string> names;
  for (const NamedPreset& preset : kPresets) names.push_back(preset.name);
  return names;
}

absl::StatusOr<Gemma4Config> RandomCheckpointPreset(const std::string& name, int64_t num_layers) {
  const NamedPreset* found = nullptr;
  for (const NamedPreset& candidate : kPresets) {
    if (name == candidate.name) found = &candidate;
  }
  if (found == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown checkpoint preset \"", name,
                     "\" (known: ", absl::StrJoin(RandomCheckpointPresetNames(), ", "), ")"));
  }
  if (num_layers < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("number of layers must be positive, got ", num_layers));
  }
  Preset preset = found->make();
  Gemma4Config& config = preset.config;
  if (num_layers > 0) config.num_hidden_layers = num_layers;
  config.layer_types = LayerPattern(config.num_hidden_layers, preset.full_period);
  RETURN_IF_ERROR(config.Finalize());
  return config;
}

absl::StatusOr<SafetensorsWriteSummary> WriteRandomCheckpoint(
    const Gemma4Config& config, const std::string& dir, const RandomCheckpointOptions& options) {
  SafetensorsWriter writer(SafetensorsWriterOptions{.max_shard_bytes = options.max_shard_bytes});
  for (const TextTensorSpec& spec : TextTensorSpecs(config)) {
    RETURN_IF_ERROR(writer.Add(spec.name, DType::kBF16, spec.shape, FillFor(spec, options.seed)));
  }
  ASSIGN_OR_RETURN(SafetensorsWriteSummary summary, writer.Write(dir));
  json hf_config = config.ToHfJson();
  hf_config["dtype"] = "bfloat16";
  RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir, "/config.json"), hf_config.dump(2) + "\n"));
  RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir, "/generation_config.json"),
                                      GenerationConfigJson(config).dump(2) + "\n"));
  return summary;
}

}  // namespace gemmaserve::model
