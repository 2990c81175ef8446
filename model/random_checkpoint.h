// Random-weight Gemma 4 checkpoints in the exact Hugging Face layout
// (Gemma4ForConditionalGeneration: text weights under `model.language_model.`, bf16, tied LM head
// so no lm_head.weight, fused expert tensors, no v_proj on attention_k_eq_v full layers), for
// benchmarks and GPU checks where the real weights cannot be downloaded, and for tests of the
// loader.
//
// Values are a pure function of (seed, tensor name, element index) through a counter-based hash,
// so generation streams at disk speed, any byte range can be produced independently, and a tensor's
// values do not depend on which other tensors exist. Scales keep a forward pass over many layers
// finite: linear weights uniform with standard deviation 0.02, norm weights, router.scale and
// per_expert_scale uniform in [0.8, 1.2), layer_scalar uniform in [0.55, 0.95), each then rounded
// to bf16.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "model/config.h"
#include "model/safetensors_writer.h"

namespace gemmaserve::model {

// How a tensor's random values are drawn (see the file comment for the ranges).
enum class WeightInit { kLinear, kNearOne, kLayerScalar };

// One text-decoder tensor of GEMMA4.md §3.
struct TextTensorSpec {
  std::string
      name;  // full checkpoint name, e.g. "model.language_model.layers.0.mlp.up_proj.weight"
  Shape shape;
  WeightInit init = WeightInit::kLinear;
};

// Every text-decoder tensor a checkpoint of `config` holds, in the order the generator writes them
// (embedding, layers in order, final norm). `config` must be finalized (config.layers filled).
std::vector<TextTensorSpec> TextTensorSpecs(const Gemma4Config& config);

// The preset names: "31b", "26b-a4b" (the real configs of GEMMA4.md §1.1), "bench-dense",
// "bench-moe" (about 1.5-2.5 GB with the real vocabulary and head dims), "tiny-dense", "tiny-moe"
// (the shapes of tests/data/gemma4-tiny-*), "tiny-moe-full-vocab" (tiny-moe with the real
// 262,144-token vocabulary).
std::vector<std::string> RandomCheckpointPresetNames();

// The finalized config of preset `name`. `num_layers` > 0 replaces num_hidden_layers, keeping the
// preset's layer pattern (one full-attention layer per period, the last layer always full).
// INVALID_ARGUMENT for an unknown preset (the message lists the known ones) or num_layers < 0.
absl::StatusOr<Gemma4Config> RandomCheckpointPreset(const std::string& name,
                                                    int64_t num_layers = 0);

struct RandomCheckpointOptions {
  uint64_t seed = 0;
  // Largest tensor data per shard; smaller checkpoints are one model.safetensors. HF uses ~5 GB.
  size_t max_shard_bytes = size_t{4096} << 20;
};

// Writes DIR/config.json (config.ToHfJson(), dtype bfloat16), DIR/generation_config.json
// (bos 2, eos [1, 106], pad 0, HF sampling defaults) and the weights. Errors name the file.
absl::StatusOr<SafetensorsWriteSummary> WriteRandomCheckpoint(
    const Gemma4Config& config, const std::string& dir, const RandomCheckpointOptions& options);

}  // namespace gemmaserve::model
