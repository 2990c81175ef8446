// gemmaserve run: generate from a prompt in this process (no server), and gemmaserve logits:
// print the logits of a token sequence. Both load the checkpoint with LocalRunner.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "model/generation_config.h"
#include "model/local_runner.h"
#include "nlohmann/json.hpp"
#include "ops/linear.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "worker/sampler.h"

namespace gemmaserve::tools {
namespace {

struct RunConfig {
  std::string model_dir;
  std::vector<int64_t> prompt_ids;
  int64_t max_tokens = 16;
  double temperature = -1;  // < 0: the model's generation_config default
  int64_t top_k = -1;
  double top_p = -1;
  int64_t seed = -1;        // < 0: random
  bool ignore_eos = false;
  bool json = false;
  int64_t threads = 2;
  std::string log_level = "warn";
};

absl::StatusOr<std::vector<int32_t>> ToTokenIds(const std::vector<int64_t>& ids, int64_t vocab,
                                                const char* flag) {
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is empty"));
  std::vector<int32_t> out;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
    out.push_back(static_cast<int32_t>(id));
  }
  return out;
}

absl::StatusOr<worker::SamplingOptions> ResolveSampling(const RunConfig& config) {
  ASSIGN_OR_RETURN(model::GenerationDefaults defaults,
                   model::GenerationDefaults::FromModelDir(config.model_dir));
  worker::SamplingOptions options;
  options.temperature = config.temperature >= 0 ? static_cast<float>(config.temperature)
                                                : defaults.temperature;
  options.top_k = config.top_k >= 0 ? static_cast<int32_t>(config.top_k) : defaults.top_k;
  options.top_p = config.top_p >= 0 ? static_cast<float>(config.top_p) : defaults.top_p;
  options.min_p = defaults.min_p;
  if (options.top_p <= 0 || options.top_p > 1) {
    return absl::InvalidArgumentError(absl::StrCat("--top-p ", options.top_p, " is not in (0, 1]"));
  }
  options.seed = config.seed >= 0 ? static_cast<uint64_t>(config.seed) : std::random_device{}();
  return options;
}

absl::Status Run(const RunConfig& config) {
  RETURN_IF_ERROR(InitLogging(config.log_level));
  if (config.max_tokens < 0) return absl::InvalidArgumentError("--max-tokens must be ≥ 0");
  ops::SetBlasThreads(static_cast<int>(config.threads));
  const int64_t context = static_cast<int64_t>(config.prompt_ids.size()) + config.max_tokens;
  ASSIGN_OR_RETURN(auto runner, model::LocalRunner::Load(config.model_dir, context));
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                   ToTokenIds(config.prompt_ids, runner->config().vocab_size, "prompt-ids"));
  ASSIGN_OR_RETURN(worker::SamplingOptions options, ResolveSampling(config));
  uint64_t index = 0;
  auto sampler = [&](const float* logits, int64_t vocab) {
    return worker::Sample(logits, vocab, options, index++).token_id;
  };
  const std::vector<int64_t> stop_ids =
      config.ignore_eos ? std::vector<int64_t>{} : runner->config().eos_token_ids;
  ASSIGN_OR_RETURN(auto outputs, runner->Generate({prompt}, config.max_tokens, sampler, stop_ids));
  const std::vector<int32_t>& output = outputs[0];
  const bool stopped = !output.empty() && std::find(stop_ids.begin(), stop_ids.end(),
                                                    output.back()) != stop_ids.end();
  if (config.json) {
    nlohmann::json result = {{"output_ids", output},
                             {"prompt_tokens", prompt.size()},
                             {"finish_reason", stopped ? "stop" : "length"}};
    std::printf("%s\n", result.dump().c_str());
  } else {
    std::printf("%s\n", absl::StrJoin(output, ",").c_str());
  }
  return absl::OkStatus();
}

struct LogitsConfig {
  std::string model_dir;
  std::vector<int64_t> tokens;
  bool all_positions = false;
  int64_t threads = 2;
  std::string log_level = "warn";
};

absl::Status Logits(const LogitsConfig& config) {
  RETURN_IF_ERROR(InitLogging(config.log_level));
  ops::SetBlasThreads(static_cast<int>(config.threads));
  ASSIGN_OR_RETURN(auto runner, model::LocalRunner::Load(
                                    config.model_dir, static_cast<int64_t>(config.tokens.size())));
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens,
                   ToTokenIds(config.tokens, runner->config().vocab_size, "tokens"));
  ASSIGN_OR_RETURN(Tensor logits, runner->Prefill({tokens}, config.all_positions));
  // %.9g round-trips a float exactly, so outputs of different runs compare bit for bit.
  std::string out = "{\"logits\": [";
  for (int64_t r = 0; r < logits.dim(0); ++r) {
    absl::StrAppend(&out, r == 0 ? "[" : ", [");
    for (int64_t i = 0; i < logits.dim(1); ++i) {
      char buffer[32];
      std::snprintf(buffer, sizeof(buffer), "%s%.9g", i == 0 ? "" : ", ",
                    logits.data<float>()[r * logits.dim(1) + i]);
      out += buffer;
    }
    out += "]";
  }
  out += "]}";
  std::printf("%s\n", out.c_str());
  return absl::OkStatus();
}

}  // namespace

int RunMain(int argc, char** argv) {
  RunConfig config;
  FlagSet flags("run", "Generate tokens from a prompt in this process (no server).");
  flags.String("model", &config.model_dir, "checkpoint directory (config.json + safetensors)", true);
  flags.IntList("prompt-ids", &config.prompt_ids, "prompt token ids, e.g. 2,17,40", true);
  flags.Int("max-tokens", &config.max_tokens, "tokens to generate");
  flags.Double("temperature", &config.temperature,
               "sampling temperature; 0 = greedy (default: generation_config.json)");
  flags.Int("top-k", &config.top_k, "sample among the k most likely tokens; 0 = off (default: generation_config.json)");
  flags.Double("top-p", &config.top_p, "nucleus probability mass (default: generation_config.json)");
  flags.Int("seed", &config.seed, "random seed (default: random)");
  flags.Bool("ignore-eos", &config.ignore_eos, "keep generating after an EOS token");
  flags.Bool("json", &config.json, "print one JSON object with output_ids");
  flags.Int("threads", &config.threads, "BLAS threads");
  flags.String("log-level", &config.log_level, "trace, debug, info, warn, error or off");
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return Run(config); });
}

int LogitsMain(int argc, char** argv) {
  LogitsConfig config;
  FlagSet flags("logits", "Print the softcapped logits of a token sequence as JSON.");
  flags.String("model", &config.model_dir, "checkpoint directory", true);
  flags.IntList("tokens", &config.tokens, "token ids, e.g. 2,17,40", true);
  flags.Bool("all-positions", &config.all_positions, "one row per position, not only the last");
  flags.Int("threads", &config.threads, "BLAS threads");
  flags.String("log-level", &config.log_level, "trace, debug, info, warn, error or off");
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return Logits(config); });
}

}  // namespace gemmaserve::tools
