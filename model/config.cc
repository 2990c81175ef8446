#include "model/config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/mapped_file.h"
#include "common/status_macros.h"

namespace gemmaserve::model {
namespace {

using nlohmann::json;

absl::Status FieldError(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", field, ": ", problem));
}

// Readers for one field of `object`. A missing or null field keeps `*out` (the default) unless the
// field is required.
absl::Status ReadInt(const json& object, const std::string& field, int64_t* out,
                     bool required = false) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) {
    return required ? FieldError(field, "missing") : absl::OkStatus();
  }
  if (!it->is_number_integer()) return FieldError(field, absl::StrCat("expected an integer, got ", it->dump()));
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& object, const std::string& field, double* out) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(field, absl::StrCat("expected a number, got ", it->dump()));
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& object, const std::string& field, bool* out) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(field, absl::StrCat("expected true or false, got ", it->dump()));
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadString(const json& object, const std::string& field, std::string* out) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return FieldError(field, absl::StrCat("expected a string, got ", it->dump()));
  *out = it->get<std::string>();
  return absl::OkStatus();
}

// eos_token_id is an integer or a list of integers; ids are appended without duplicates.
absl::Status ReadEosIds(const json& object, const std::string& where, std::vector<int64_t>* out) {
  auto it = object.find("eos_token_id");
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  std::vector<json> values = it->is_array() ? it->get<std::vector<json>>() : std::vector<json>{*it};
  for (const json& value : values) {
    if (!value.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": eos_token_id: expected an integer or a list of integers, got ",
                       it->dump()));
    }
    const int64_t id = value.get<int64_t>();
    if (std::find(out->begin(), out->end(), id) == out->end()) out->push_back(id);
  }
  return absl::OkStatus();
}

absl::StatusOr<RopeParameters> ReadRope(const json& rope, const std::string& kind) {
  const std::string field = absl::StrCat("rope_parameters.", kind);
  auto it = rope.find(kind);
  if (it == rope.end() || !it->is_object()) return FieldError(field, "missing");
  RopeParameters params;
  RETURN_IF_ERROR(ReadString(*it, "rope_type", &params.rope_type));
  RETURN_IF_ERROR(ReadDouble(*it, "rope_theta", &params.rope_theta));
  RETURN_IF_ERROR(ReadDouble(*it, "partial_rotary_factor", &params.partial_rotary_factor));
  if (params.rope_type != "default" && params.rope_type != "proportional") {
    return absl::UnimplementedError(absl::StrCat("config.json: ", field, ".rope_type \"",
                                                 params.rope_type, "\" is not supported"));
  }
  if (!(params.rope_theta > 0)) return FieldError(field + ".rope_theta", "must be positive");
  if (!(params.partial_rotary_factor > 0 && params.partial_rotary_factor <= 1)) {
    return FieldError(field + ".partial_rotary_factor", "must be in (0, 1]");
  }
  return params;
}

absl::Status ReadLayerTypes(const json& text, Gemma4Config* config) {
  auto it = text.find("layer_types");
  if (it == text.end() || it->is_null()) {
    // The class default: every 6th layer full, and the last layer always full (GEMMA4.md §1.1).
    for (int64_t i = 0; i < config->num_hidden_layers; ++i) {
      const bool full = (i + 1) % 6 == 0 || i == config->num_hidden_layers - 1;
      config->layer_types.push_back(full ? LayerKind::kFull : LayerKind::kSliding);
    }
    return absl::OkStatus();
  }
  if (!it->is_array()) return FieldError("layer_types", "expected a list");
  for (const json& type : *it) {
    if (type == "sliding_attention") {
      config->layer_types.push_back(LayerKind::kSliding);
    } else if (type == "full_attention") {
      config->layer_types.push_back(LayerKind::kFull);
    } else {
      return FieldError("layer_types", absl::StrCat("unknown layer type ", type.dump()));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadTextConfig(const json& text, Gemma4Config* c) {
  RETURN_IF_ERROR(ReadInt(text, "vocab_size", &c->vocab_size, true));
  RETURN_IF_ERROR(ReadInt(text, "hidden_size", &c->hidden_size, true));
  RETURN_IF_ERROR(ReadInt(text, "num_hidden_layers", &c->num_hidden_layers, true));
  RETURN_IF_ERROR(ReadInt(text, "intermediate_size", &c->intermediate_size, true));
  RETURN_IF_ERROR(ReadInt(text, "num_attention_heads", &c->num_attention_heads, true));
  RETURN_IF_ERROR(ReadInt(text, "num_key_value_heads", &c->num_key_value_heads, true));
  c->num_global_key_value_heads = c->num_key_value_heads;
  RETURN_IF_ERROR(ReadInt(text, "num_global_key_value_heads", &c->num_global_key_value_heads));
  RETURN_IF_ERROR(ReadInt(text, "head_dim", &c->head_dim, true));
  c->global_head_dim = c->head_dim;
  RETURN_IF_ERROR(ReadInt(text, "global_head_dim", &c->global_head_dim));
  RETURN_IF_ERROR(ReadBool(text, "attention_k_eq_v", &c->attention_k_eq_v));
  RETURN_IF_ERROR(ReadInt(text, "sliding_window", &c->sliding_window, true));
  RETURN_IF_ERROR(ReadInt(text, "max_position_embeddings", &c->max_position_embeddings, true));
  RETURN_IF_ERROR(ReadInt(text, "hidden_size_per_layer_input", &c->hidden_size_per_layer_input));
  RETURN_IF_ERROR(ReadInt(text, "vocab_size_per_layer_input", &c->vocab_size_per_layer_input));
  RETURN_IF_ERROR(ReadInt(text, "num_kv_shared_layers", &c->num_kv_shared_layers));
  RETURN_IF_ERROR(ReadBool(text, "use_double_wide_mlp", &c->use_double_wide_mlp));
  RETURN_IF_ERROR(ReadBool(text, "enable_moe_block", &c->enable_moe_block));
  RETURN_IF_ERROR(ReadInt(text, "num_experts", &c->num_experts));
  RETURN_IF_ERROR(ReadInt(text, "top_k_experts", &c->top_k_experts));
  RETURN_IF_ERROR(ReadInt(text, "moe_intermediate_size", &c->moe_intermediate_size));
  RETURN_IF_ERROR(ReadString(text, "hidden_activation", &c->hidden_activation));
  RETURN_IF_ERROR(ReadDouble(text, "rms_norm_eps", &c->rms_norm_eps));
  RETURN_IF_ERROR(ReadDouble(text, "final_logit_softcapping", &c->final_logit_softcapping));
  RETURN_IF_ERROR(ReadBool(text, "tie_word_embeddings", &c->tie_word_embeddings));
  RETURN_IF_ERROR(ReadBool(text, "attention_bias", &c->attention_bias));
  RETURN_IF_ERROR(ReadInt(text, "pad_token_id", &c->pad_token_id));
  RETURN_IF_ERROR(ReadInt(text, "bos_token_id", &c->bos_token_id));
  RETURN_IF_ERROR(ReadEosIds(text, "config.json text_config", &c->eos_token_ids));
  RETURN_IF_ERROR(ReadString(text, "dtype", &c->dtype));
  RETURN_IF_ERROR(ReadLayerTypes(text, c));
  auto rope = text.find("rope_parameters");
  if (rope == text.end() || !rope->is_object()) return FieldError("rope_parameters", "missing");
  ASSIGN_OR_RETURN(c->rope_sliding, ReadRope(*rope, "sliding_attention"));
  ASSIGN_OR_RETURN(c->rope_full, ReadRope(*rope, "full_attention"));
  return absl::OkStatus();
}

}  // namespace

const char* LayerKindName(LayerKind kind) {
  return kind == LayerKind::kFull ? "full_attention" : "sliding_attention";
}

absl::StatusOr<Gemma4Config> Gemma4Config::FromJson(const json& root) {
  if (!root.is_object()) return absl::InvalidArgumentError("config.json: not a JSON object");
  std::string model_type;
  RETURN_IF_ERROR(ReadString(root, "model_type", &model_type));
  Gemma4Config config;
  if (model_type == "gemma4") {
    auto text = root.find("text_config");
    if (text == root.end() || !text->is_object()) return FieldError("text_config", "missing");
    RETURN_IF_ERROR(ReadTextConfig(*text, &config));
    // The -it models list their chat stop ids at the top level ([1, 106]).
    RETURN_IF_ERROR(ReadEosIds(root, "config.json", &config.eos_token_ids));
  } else if (model_type == "gemma4_text") {
    RETURN_IF_ERROR(ReadTextConfig(root, &config));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: model_type \"", model_type, "\" is not a Gemma 4 model (expected gemma4 or gemma4_text)"));
  }
  RETURN_IF_ERROR(config.Finalize());
  return config;
}

absl::StatusOr<Gemma4Config> Gemma4Config::FromModelDir(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/config.json");
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": malformed JSON"));
  absl::StatusOr<Gemma4Config> config = FromJson(root);
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat(dir, "/", config.status().message()));
  }
  const std::string generation_path = absl::StrCat(dir, "/generation_config.json");
  absl::StatusOr<std::string> generation_text = ReadFileToString(generation_path);
  if (generation_text.ok()) {
    json generation = json::parse(*generation_text, nullptr, false);
    if (generation.is_discarded() || !generation.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(generation_path, ": malformed JSON"));
    }
    RETURN_IF_ERROR(ReadEosIds(generation, generation_path, &config->eos_token_ids));
  } else if (!absl::IsNotFound(generation_text.status())) {
    return generation_text.status();
  }
  return config;
}

absl::Status Gemma4Config::Finalize() {
  auto positive = [](int64_t value, const char* field) -> absl::Status {
    if (value > 0) return absl::OkStatus();
    return FieldError(field, absl::StrCat("must be positive, got ", value));
  };
  RETURN_IF_ERROR(positive(vocab_size, "vocab_size"));
  RETURN_IF_ERROR(positive(hidden_size, "hidden_size"));
  RETURN_IF_ERROR(positive(num_hidden_layers, "num_hidden_layers"));
  RETURN_IF_ERROR(positive(intermediate_size, "intermediate_size"));
  RETURN_IF_ERROR(positive(num_attention_heads, "num_attention_heads"));
  RETURN_IF_ERROR(positive(num_key_value_heads, "num_key_value_heads"));
  RETURN_IF_ERROR(positive(num_global_key_value_heads, "num_global_key_value_heads"));
  RETURN_IF_ERROR(positive(head_dim, "head_dim"));
  RETURN_IF_ERROR(positive(global_head_dim, "global_head_dim"));
  RETURN_IF_ERROR(positive(sliding_window, "sliding_window"));
  if (head_dim % 2 != 0 || global_head_dim % 2 != 0) {
    return FieldError("head_dim", "head_dim and global_head_dim must be even for RoPE");
  }
  if (num_kv_shared_layers > 0) {
    return absl::UnimplementedError(absl::StrCat(
        "config.json: num_kv_shared_layers = ", num_kv_shared_layers,
        ": KV-shared layers (Gemma 4 E2B/E4B) are not supported by this engine yet"));
  }
  if (hidden_size_per_layer_input > 0) {
    return absl::UnimplementedError(absl::StrCat(
        "config.json: hidden_size_per_layer_input = ", hidden_size_per_layer_input,
        ": per-layer embeddings (Gemma 4 E2B/E4B) are not supported by this engine yet"));
  }
  if (attention_bias) return absl::UnimplementedError("config.json: attention_bias = true is not supported");
  if (hidden_activation != "gelu_pytorch_tanh") {
    return absl::UnimplementedError(absl::StrCat("config.json: hidden_activation \"",
                                                 hidden_activation, "\" is not supported"));
  }
  if (!tie_word_embeddings) {
    return absl::UnimplementedError("config.json: tie_word_embeddings = false is not supported");
  }
  if (static_cast<int64_t>(layer_types.size()) != num_hidden_layers) {
    return FieldError("layer_types", absl::StrCat("has ", layer_types.size(), " entries for ",
                                                  num_hidden_layers, " layers"));
  }
  if (enable_moe_block) {
    RETURN_IF_ERROR(positive(num_experts, "num_experts"));
    RETURN_IF_ERROR(positive(top_k_experts, "top_k_experts"));
    RETURN_IF_ERROR(positive(moe_intermediate_size, "moe_intermediate_size"));
    if (top_k_experts > num_experts) {
      return FieldError("top_k_experts", absl::StrCat(top_k_experts, " exceeds num_experts ", num_experts));
    }
  }
  layers.clear();
  for (int64_t i = 0; i < num_hidden_layers; ++i) {
    const LayerKind kind = layer_types[i];
    const bool full = kind == LayerKind::kFull;
    LayerGeometry g;
    g.kind = kind;
    g.head_dim = full ? global_head_dim : head_dim;
    g.num_kv_heads = (full && attention_k_eq_v) ? num_global_key_value_heads : num_key_value_heads;
    g.has_v_proj = !(full && attention_k_eq_v);
    g.mlp_width = intermediate_size;  // double-wide MLPs exist only on KV-shared layers
    g.sliding_window = full ? 0 : sliding_window;
    const RopeParameters& rope = full ? rope_full : rope_sliding;
    // Proportional RoPE rotates int(factor·head_dim // 2) angles; their frequencies still divide
    // by the full head_dim (GEMMA4.md §2.6).
    g.rope_angles = rope.rope_type == "proportional"
                        ? static_cast<int64_t>(std::floor(rope.partial_rotary_factor *
                                                          static_cast<double>(g.head_dim) / 2.0))
                        : g.head_dim / 2;
    g.rope_theta = rope.rope_theta;
    if (num_attention_heads % g.num_kv_heads != 0) {
      return FieldError("num_attention_heads",
                        absl::StrCat(num_attention_heads, " is not a multiple of layer ", i, "'s ",
                                     g.num_kv_heads, " KV heads"));
    }
    layers.push_back(g);
  }
  return absl::OkStatus();
}

float Gemma4Config::EmbedScale(DType compute_dtype) const {
  const float scale = std::sqrt(static_cast<float>(hidden_size));
  switch (compute_dtype) {
    case DType::kBF16:
      return RoundToBf16(scale);
    case DType::kF16:
      return F16ToF32(F32ToF16(scale));
    default:
      return scale;
  }
}

int64_t Gemma4Config::NumLayersOfKind(LayerKind kind) const {
  int64_t n = 0;
  for (const LayerGeometry& layer : layers) n += layer.kind == kind ? 1 : 0;
  return n;
}

json Gemma4Config::ToHfJson() const {
  json types = json::array();
  for (LayerKind kind : layer_types) types.push_back(LayerKindName(kind));
  json text = {
      {"model_type", "gemma4_text"},
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"num_hidden_layers", num_hidden_layers},
      {"intermediate_size", intermediate_size},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"num_global_key_value_heads", num_global_key_value_heads},
      {"head_dim", head_dim},
      {"global_head_dim", global_head_dim},
      {"attention_k_eq_v", attention_k_eq_v},
      {"sliding_window", sliding_window},
      {"layer_types", types},
      {"max_position_embeddings", max_position_embeddings},
      {"hidden_size_per_layer_input", hidden_size_per_layer_input},
      {"vocab_size_per_layer_input", vocab_size_per_layer_input},
      {"num_kv_shared_layers", num_kv_shared_layers},
      {"use_double_wide_mlp", use_double_wide_mlp},
      {"enable_moe_block", enable_moe_block},
      {"num_experts", enable_moe_block ? json(num_experts) : json(nullptr)},
      {"top_k_experts", enable_moe_block ? json(top_k_experts) : json(nullptr)},
      {"moe_intermediate_size", enable_moe_block ? json(moe_intermediate_size) : json(nullptr)},
      {"hidden_activation", hidden_activation},
      {"rms_norm_eps", rms_norm_eps},
      {"final_logit_softcapping", final_logit_softcapping},
      {"tie_word_embeddings", tie_word_embeddings},
      {"attention_bias", attention_bias},
      {"attention_dropout", 0.0},
      {"pad_token_id", pad_token_id},
      {"bos_token_id", bos_token_id},
      {"eos_token_id", eos_token_ids.empty() ? json(1) : json(eos_token_ids.front())},
      {"dtype", dtype},
      {"use_bidirectional_attention", "vision"},
      {"rope_parameters",
       {{"sliding_attention",
         {{"rope_type", rope_sliding.rope_type}, {"rope_theta", rope_sliding.rope_theta}}},
        {"full_attention",
         {{"rope_type", rope_full.rope_type},
          {"rope_theta", rope_full.rope_theta},
          {"partial_rotary_factor", rope_full.partial_rotary_factor}}}}},
  };
  return json{
      {"architectures", {"Gemma4ForConditionalGeneration"}},
      {"model_type", "gemma4"},
      {"dtype", dtype},
      {"tie_word_embeddings", tie_word_embeddings},
      {"eos_token_id", eos_token_ids.empty() ? json(1) : json(eos_token_ids)},
      {"text_config", text},
  };
}

}  // namespace gemmaserve::model
