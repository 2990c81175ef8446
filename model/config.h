// Gemma4Config: the text-decoder settings of a Gemma 4 checkpoint (GEMMA4.md §1), read from
// config.json, plus the per-layer geometry derived from them once (§1.2). The forward pass and the
// coordinator read geometry from here and never re-derive it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::model {

// The two attention layer kinds. Their values double as KV-group indices: every layer of a kind
// shares one block table per sequence (DESIGN.md, "KV cache groups").
enum class LayerKind { kSliding = 0, kFull = 1 };
inline constexpr int kNumKvGroups = 2;

const char* LayerKindName(LayerKind kind);  // "sliding_attention" / "full_attention"

struct RopeParameters {
  std::string rope_type;               // "default" or "proportional"
  double rope_theta = 10000.0;
  double partial_rotary_factor = 1.0;  // proportional: share of head_dim that rotates
};

// Geometry of one decoder layer, derived from the config (GEMMA4.md §1.2).
struct LayerGeometry {
  LayerKind kind = LayerKind::kSliding;
  int64_t head_dim = 0;      // head_dim or global_head_dim
  int64_t num_kv_heads = 0;  // num_key_value_heads or num_global_key_value_heads
  bool has_v_proj = true;    // false on attention_k_eq_v full layers: V comes from k_proj
  int64_t mlp_width = 0;     // intermediate_size of the dense MLP
  // Keys visible to a query, including itself; 0 = unlimited (full attention).
  int64_t sliding_window = 0;
  // Rotary angles per head: dims [0, rope_angles) pair with [head_dim/2, head_dim/2 + rope_angles);
  // the rest pass through. Equal to head_dim/2 for default RoPE.
  int64_t rope_angles = 0;
  double rope_theta = 10000.0;
};

struct Gemma4Config {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t intermediate_size = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t num_global_key_value_heads = 0;  // null in config.json → num_key_value_heads
  int64_t head_dim = 0;
  int64_t global_head_dim = 0;
  bool attention_k_eq_v = false;
  int64_t sliding_window = 0;
  std::vector<LayerKind> layer_types;
  int64_t max_position_embeddings = 0;
  int64_t hidden_size_per_layer_input = 0;
  int64_t vocab_size_per_layer_input = 0;
  int64_t num_kv_shared_layers = 0;
  bool use_double_wide_mlp = false;
  bool enable_moe_block = false;
  int64_t num_experts = 0;
  int64_t top_k_experts = 0;
  int64_t moe_intermediate_size = 0;
  std::string hidden_activation = "gelu_pytorch_tanh";
  double rms_norm_eps = 1e-6;
  double final_logit_softcapping = 0.0;  // 0 = none
  bool tie_word_embeddings = true;
  bool attention_bias = false;
  int64_t pad_token_id = 0;
  int64_t bos_token_id = 2;
  std::vector<int64_t> eos_token_ids;  // text_config's, then the top level's, then generation_config's
  std::string dtype = "bfloat16";
  RopeParameters rope_sliding;
  RopeParameters rope_full;

  // Derived once by Finalize(); one entry per layer.
  std::vector<LayerGeometry> layers;

  // Parses a `gemma4` config (decoder settings under text_config) or a flat `gemma4_text` one, and
  // validates it: missing or mistyped fields, inconsistent values and features this engine does
  // not support (num_kv_shared_layers > 0, hidden_size_per_layer_input > 0, attention_bias, other
  // activations) are INVALID_ARGUMENT / UNIMPLEMENTED naming the field.
  static absl::StatusOr<Gemma4Config> FromJson(const nlohmann::json& json);
  // Reads DIR/config.json and, when present, DIR/generation_config.json (for eos_token_id).
  static absl::StatusOr<Gemma4Config> FromModelDir(const std::string& dir);

  // The config as Hugging Face writes it for Gemma4ForConditionalGeneration (text_config nested),
  // used by the checkpoint generator.
  nlohmann::json ToHfJson() const;

  // Derives `layers` from the fields above and validates them.
  absl::Status Finalize();

  bool is_moe() const { return enable_moe_block; }
  // The embedding scale sqrt(hidden_size), rounded to the dtype activations are computed in, as
  // the reference casts it to its weights' dtype (GEMMA4.md §2.2): 73.5 for 31B in bf16, the
  // unrounded 73.32 when computing in f32 as the CPU backend does.
  float EmbedScale(DType compute_dtype) const;
  // Number of layers of one kind (each has its own KV cache tensors in the group's pool).
  int64_t NumLayersOfKind(LayerKind kind) const;
};

}  // namespace gemmaserve::model
