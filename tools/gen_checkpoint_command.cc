// `gemmaserve gen-checkpoint`: writes a random-weight Gemma 4 checkpoint of a preset shape
// (model/random_checkpoint.h) and prints what it wrote.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "model/random_checkpoint.h"
#include "tools/commands.h"
#include "tools/flags.h"

namespace gemmaserve::tools {
namespace {

struct GenCheckpointConfig {
  std::string preset;
  std::string out_dir;
  int64_t num_layers = 0;  // 0 = the preset's
  int64_t seed = 0;
  int64_t shard_size_mb = 4096;
};

absl::Status GenCheckpoint(const GenCheckpointConfig& flags) {
  if (flags.shard_size_mb <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shard-size-mb must be positive, got ", flags.shard_size_mb));
  }
  ASSIGN_OR_RETURN(const model::Gemma4Config config,
                   model::RandomCheckpointPreset(flags.preset, flags.num_layers));
  model::RandomCheckpointOptions options;
  options.seed = static_cast<uint64_t>(flags.seed);
  options.max_shard_bytes = static_cast<size_t>(flags.shard_size_mb) << 20;

  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(const model::SafetensorsWriteSummary summary,
                   model::WriteRandomCheckpoint(config, flags.out_dir, options));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::printf("wrote %s (preset %s, %lld layers, seed %lld)\n", flags.out_dir.c_str(),
              flags.preset.c_str(), static_cast<long long>(config.num_hidden_layers),
              static_cast<long long>(flags.seed));
  for (const std::string& file : summary.files) std::printf("  %s\n", file.c_str());
  std::printf("  config.json, generation_config.json\n");
  std::printf("parameters: %lld (%.2f M)\n", static_cast<long long>(summary.num_elements),
              static_cast<double>(summary.num_elements) * 1e-6);
  std::printf("bytes: %zu (%.3f GB) in %.1f s (%.0f MB/s)\n", summary.total_file_bytes,
              static_cast<double>(summary.total_file_bytes) * 1e-9, seconds,
              static_cast<double>(summary.total_file_bytes) * 1e-6 / seconds);
  return absl::OkStatus();
}

}  // namespace

int GenCheckpointMain(int argc, char** argv) {
  GenCheckpointConfig config;
  FlagSet flags("gen-checkpoint",
                "Write a random-weight Gemma 4 checkpoint in the Hugging Face layout.");
  flags.String("preset", &config.preset,
               absl::StrCat("shape: ", absl::StrJoin(model::RandomCheckpointPresetNames(), ", ")),
               /*required=*/true);
  flags.String("out", &config.out_dir, "output directory (created if missing)", /*required=*/true);
  flags.Int("layers", &config.num_layers,
            "number of decoder layers, keeping the preset's layer pattern (0 = the preset's)");
  flags.Int("seed", &config.seed, "seed of the random values");
  flags.Int("shard-size-mb", &config.shard_size_mb,
            "largest shard in MiB; larger checkpoints are sharded with an index");
  const absl::Status parse_status = flags.Parse(argc, argv);
  return RunCommand(flags, parse_status, [&] { return GenCheckpoint(config); });
}

}  // namespace gemmaserve::tools
