// gemmaserve run: generate from a prompt without a server, and gemmaserve logits: print the logits
// of a token sequence. In this process by default; with --tp/--ep N through a coordinator and N
// local worker processes.
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
#include "nlohmann/json.hpp"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/model_session.h"

namespace gemmaserve::tools {
namespace {

struct RunConfig {
  SessionOptions session;
  std::vector<int64_t> prompt_ids;
  std::string prompt;        // raw text, encoded with <bos>
  std::string chat;          // one user message, rendered with the Gemma 4 chat template
  bool thinking = false;
  int64_t max_tokens = 16;
  double temperature = -1;  // < 0: the model's generation_config default
  int64_t top_k = -1;
  double top_p = -1;
  int64_t seed = -1;        // < 0: random
  bool ignore_eos = false;
  bool json = false;
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

absl::StatusOr<internal::v1::SamplingParams> ResolveSampling(const RunConfig& config) {
  ASSIGN_OR_RETURN(model::GenerationDefaults defaults,
                   model::GenerationDefaults::FromModelDir(config.session.model_dir));
  internal::v1::SamplingParams params;
  params.set_temperature(config.temperature >= 0 ? static_cast<float>(config.temperature)
                                                 : defaults.temperature);
  params.set_top_k(config.top_k >= 0 ? static_cast<int32_t>(config.top_k) : defaults.top_k);
  params.set_top_p(config.top_p >= 0 ? static_cast<float>(config.top_p) : defaults.top_p);
  params.set_min_p(defaults.min_p);
  if (params.top_p() <= 0 || params.top_p() > 1) {
    return absl::InvalidArgumentError(absl::StrCat("--top-p ", params.top_p(), " is not in (0, 1]"));
  }
  params.set_has_seed(true);
  params.set_seed(config.seed >= 0 ? static_cast<uint64_t>(config.seed) : std::random_device{}());
  return params;
}

// The prompt of a run as token ids, plus the tokenizer when the prompt was text (to print text
// back) and the extra stop ids of a chat turn.
struct Prompt {
  std::vector<int32_t> ids;
  std::unique_ptr<text::Tokenizer> tokenizer;
  std::vector<int64_t> stop_ids;
};

absl::StatusOr<Prompt> BuildPrompt(const RunConfig& config, const model::Gemma4Config& model) {
  const int given = (config.prompt_ids.empty() ? 0 : 1) + (config.prompt.empty() ? 0 : 1) +
                    (config.chat.empty() ? 0 : 1);
  if (given != 1) {
    return absl::InvalidArgumentError("give exactly one of --prompt-ids, --prompt and --chat");
  }
  Prompt prompt;
  if (!config.prompt_ids.empty()) {
    ASSIGN_OR_RETURN(prompt.ids, ToTokenIds(config.prompt_ids, model.vocab_size, "prompt-ids"));
    return prompt;
  }
  ASSIGN_OR_RETURN(prompt.tokenizer, text::Tokenizer::LoadFromModelDir(config.session.model_dir));
  if (!config.prompt.empty()) {
    ASSIGN_OR_RETURN(prompt.ids, prompt.tokenizer->Encode(config.prompt, {.add_special_tokens = true}));
    // Exactly one <bos> starts a sequence, whatever the tokenizer's post-processor does.
    if (prompt.ids.empty() || prompt.ids.front() != model.bos_token_id) {
      prompt.ids.insert(prompt.ids.begin(), static_cast<int32_t>(model.bos_token_id));
    }
    return prompt;
  }
  ASSIGN_OR_RETURN(
      text::ChatTemplate chat,
      text::ChatTemplate::Create(prompt.tokenizer.get(),
                                 text::ChatVariantForModel(model.hidden_size_per_layer_input)));
  text::ChatOptions options;
  options.enable_thinking = config.thinking;
  const std::vector<text::ChatMessage> messages = {{"user", config.chat}};
  ASSIGN_OR_RETURN(text::RenderedPrompt rendered, chat.Render(messages, options));
  prompt.ids = std::move(rendered.ids);
  // A chat answer ends with the model turn's end token, whatever the checkpoint lists as EOS.
  prompt.stop_ids.push_back(chat.tokens().turn_end);
  return prompt;
}

absl::Status Run(RunConfig config) {
  RETURN_IF_ERROR(InitLogging(config.log_level));
  config.session.log_level = config.log_level;
  if (config.max_tokens < 0) return absl::InvalidArgumentError("--max-tokens must be ≥ 0");
  ASSIGN_OR_RETURN(internal::v1::SamplingParams sampling, ResolveSampling(config));
  ASSIGN_OR_RETURN(model::Gemma4Config model, model::Gemma4Config::FromModelDir(config.session.model_dir));
  ASSIGN_OR_RETURN(Prompt prompt, BuildPrompt(config, model));
  config.session.max_context = static_cast<int64_t>(prompt.ids.size()) + config.max_tokens;
  ASSIGN_OR_RETURN(auto session, ModelSession::Open(config.session));
  std::vector<int64_t> stop_ids = prompt.stop_ids;
  if (!config.ignore_eos) {
    stop_ids.insert(stop_ids.end(), model.eos_token_ids.begin(), model.eos_token_ids.end());
  }
  ASSIGN_OR_RETURN(auto generations,
                   session->driver().Generate({prompt.ids}, config.max_tokens, sampling, stop_ids));
  const coordinator::SequenceDriver::Generation& output = generations[0];
  std::string text;
  if (prompt.tokenizer != nullptr) {
    ASSIGN_OR_RETURN(text, prompt.tokenizer->Decode(output.tokens, /*skip_special_tokens=*/true));
  }
  if (config.json) {
    nlohmann::json result = {{"output_ids", output.tokens},
                             {"prompt_tokens", prompt.ids.size()},
                             {"finish_reason", output.finish_reason}};
    if (prompt.tokenizer != nullptr) result["text"] = text;
    std::printf("%s\n", result.dump().c_str());
  } else if (prompt.tokenizer != nullptr) {
    std::printf("%s\n", text.c_str());
  } else {
    std::printf("%s\n", absl::StrJoin(output.tokens, ",").c_str());
  }
  return absl::OkStatus();
}

struct LogitsConfig {
  SessionOptions session;
  std::vector<int64_t> tokens;
  bool all_positions = false;
  std::string log_level = "warn";
};

absl::Status Logits(LogitsConfig config) {
  RETURN_IF_ERROR(InitLogging(config.log_level));
  config.session.log_level = config.log_level;
  config.session.max_context = static_cast<int64_t>(config.tokens.size());
  ASSIGN_OR_RETURN(auto session, ModelSession::Open(config.session));
  const int64_t vocab = session->config().vocab_size;
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens, ToTokenIds(config.tokens, vocab, "tokens"));
  ASSIGN_OR_RETURN(auto logits, session->driver().Logits({tokens}, config.all_positions));
  // %.9g round-trips a float exactly, so outputs of different runs compare bit for bit.
  std::string out = "{\"logits\": [";
  const std::vector<float>& values = logits[0];
  const int64_t rows = static_cast<int64_t>(values.size()) / vocab;
  for (int64_t r = 0; r < rows; ++r) {
    absl::StrAppend(&out, r == 0 ? "[" : ", [");
    for (int64_t i = 0; i < vocab; ++i) {
      char buffer[32];
      std::snprintf(buffer, sizeof(buffer), "%s%.9g", i == 0 ? "" : ", ", values[r * vocab + i]);
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
  FlagSet flags("run", "Generate tokens from a prompt without a server.");
  config.session.AddFlags(flags);
  flags.IntList("prompt-ids", &config.prompt_ids, "prompt token ids, e.g. 2,17,40");
  flags.String("prompt", &config.prompt, "prompt text (tokenized with the model's tokenizer.json)");
  flags.String("chat", &config.chat, "a user message, rendered with the Gemma 4 chat format");
  flags.Bool("thinking", &config.thinking, "with --chat: let the model think before answering");
  flags.Int("max-tokens", &config.max_tokens, "tokens to generate");
  flags.Double("temperature", &config.temperature,
               "sampling temperature; 0 = greedy (default: generation_config.json)");
  flags.Int("top-k", &config.top_k,
            "sample among the k most likely tokens; 0 = off (default: generation_config.json)");
  flags.Double("top-p", &config.top_p, "nucleus probability mass (default: generation_config.json)");
  flags.Int("seed", &config.seed, "random seed (default: random)");
  flags.Bool("ignore-eos", &config.ignore_eos, "keep generating after an EOS token");
  flags.Bool("json", &config.json, "print one JSON object with output_ids (and text)");
  flags.String("log-level", &config.log_level, "trace, debug, info, warn, error or off");
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return Run(config); });
}

int LogitsMain(int argc, char** argv) {
  LogitsConfig config;
  FlagSet flags("logits", "Print the softcapped logits of a token sequence as JSON.");
  config.session.AddFlags(flags);
  flags.IntList("tokens", &config.tokens, "token ids, e.g. 2,17,40", true);
  flags.Bool("all-positions", &config.all_positions, "one row per position, not only the last");
  flags.String("log-level", &config.log_level, "trace, debug, info, warn, error or off");
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&] { return Logits(config); });
}

}  // namespace gemmaserve::tools
