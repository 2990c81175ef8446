#include "coordinator/api/generate_params.h"

#include <cmath>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/api/api_error.h"
#include "text/utf8.h"

namespace gemmaserve::coordinator::api {
namespace {

// `value` must be finite and within [low, high]; `low_open` excludes low itself.
absl::Status CheckRange(const std::string& field, const std::optional<double>& value, double low,
                        double high, bool low_open = false) {
  if (!value) return absl::OkStatus();
  const bool ok = std::isfinite(*value) && (low_open ? *value > low : *value >= low) &&
                  *value <= high;
  if (ok) return absl::OkStatus();
  const std::string range =
      std::isinf(high) ? absl::StrCat(low_open ? "> " : ">= ", low)
                       : absl::StrCat("in ", low_open ? "(" : "[", low, ", ", high, "]");
  return InvalidField(field, absl::StrCat("must be ", range, ", got ", *value));
}

absl::Status CheckTokenId(const text::Tokenizer& tokenizer, const std::string& field, int64_t id) {
  if (id >= 0 && id < tokenizer.id_limit() && tokenizer.IsValidId(static_cast<int32_t>(id))) {
    return absl::OkStatus();
  }
  return InvalidField(field, absl::StrCat("token id ", id, " is not in the vocabulary (0 ... ",
                                          tokenizer.id_limit() - 1, ")"));
}

absl::Status CheckStops(const GenerateParams& p, const RequestLimits& limits) {
  if (static_cast<int64_t>(p.stop.size()) > limits.max_stop_strings) {
    return InvalidField("stop", absl::StrCat(p.stop.size(), " stop strings; at most ",
                                             limits.max_stop_strings));
  }
  if (static_cast<int64_t>(p.stop_token_ids.size()) > limits.max_stop_strings) {
    return InvalidField("stop_token_ids", absl::StrCat(p.stop_token_ids.size(),
                                                       " stop token ids; at most ",
                                                       limits.max_stop_strings));
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    if (static_cast<int64_t>(p.stop[i].size()) > limits.max_stop_string_bytes) {
      return InvalidField("stop", absl::StrCat("stop string ", i, " has ", p.stop[i].size(),
                                               " bytes; at most ", limits.max_stop_string_bytes));
    }
    if (!text::IsValidUtf8(p.stop[i])) {
      return InvalidField("stop", absl::StrCat("stop string ", i, " is not valid UTF-8"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSampling(const GenerateParams& p) {
  constexpr double kInf = INFINITY;
  RETURN_IF_ERROR(CheckRange("temperature", p.temperature, 0, kInf));
  if (p.top_k && *p.top_k < -1) {
    return InvalidField("top_k", absl::StrCat("must be >= 0 (or -1 for off), got ", *p.top_k));
  }
  RETURN_IF_ERROR(CheckRange("top_p", p.top_p, 0, 1, /*low_open=*/true));
  RETURN_IF_ERROR(CheckRange("min_p", p.min_p, 0, 1));
  RETURN_IF_ERROR(CheckRange("repetition_penalty", p.repetition_penalty, 0, kInf, true));
  RETURN_IF_ERROR(CheckRange("presence_penalty", p.presence_penalty, -2, 2));
  RETURN_IF_ERROR(CheckRange("frequency_penalty", p.frequency_penalty, -2, 2));
  if (p.max_tokens && *p.max_tokens < 1) {
    return InvalidField(p.max_tokens_param, absl::StrCat("must be >= 1, got ", *p.max_tokens));
  }
  if (p.top_logprobs < 0 || p.top_logprobs > kMaxTopLogprobs) {
    return InvalidField(p.top_logprobs_param, absl::StrCat("must be in [0, ", kMaxTopLogprobs,
                                                           "], got ", p.top_logprobs));
  }
  return absl::OkStatus();
}

internal::v1::SamplingParams ResolveSampling(const GenerateParams& p,
                                             const model::GenerationDefaults& defaults) {
  internal::v1::SamplingParams s;
  s.set_temperature(static_cast<float>(p.temperature.value_or(defaults.temperature)));
  const int64_t top_k = p.top_k.value_or(defaults.top_k);
  s.set_top_k(static_cast<int32_t>(top_k < 0 ? 0 : top_k));
  s.set_top_p(static_cast<float>(p.top_p.value_or(defaults.top_p)));
  s.set_min_p(static_cast<float>(p.min_p.value_or(defaults.min_p)));
  if (p.seed) {
    s.set_seed(*p.seed);
    s.set_has_seed(true);
  }
  s.set_repetition_penalty(static_cast<float>(p.repetition_penalty.value_or(1.0)));
  s.set_presence_penalty(static_cast<float>(p.presence_penalty.value_or(0.0)));
  s.set_frequency_penalty(static_cast<float>(p.frequency_penalty.value_or(0.0)));
  s.set_logprobs(p.logprobs || p.top_logprobs > 0);
  s.set_top_logprobs(static_cast<int32_t>(p.top_logprobs));
  return s;
}

// Errors from the tokenizer or the chat template name no param; attach the input's. The chat
// template's messages already start with "messages[i]: ...", so those are kept as they are.
absl::Status NameInputField(const absl::Status& status, const std::string& field) {
  if (status.code() != absl::StatusCode::kInvalidArgument || !ParamOf(status).empty()) {
    return status;
  }
  if (absl::StartsWith(status.message(), field)) return WithParam(status, field);
  return InvalidField(field, std::string(status.message()));
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> PromptIds(const GenerateParams& params,
                                               const ServedModel& model) {
  const text::Tokenizer& tokenizer = model.tokenizer();
  const std::string& field = params.input_param;
  if (const auto* text = std::get_if<TextInput>(&params.input)) {
    absl::StatusOr<std::vector<int32_t>> ids =
        tokenizer.Encode(text->text, {.add_special_tokens = true});
    if (!ids.ok()) return NameInputField(ids.status(), field);
    return ids;
  }
  if (const auto* tokens = std::get_if<TokenInput>(&params.input)) {
    if (tokens->ids.empty()) return InvalidField(field, "the prompt has no token ids");
    std::vector<int32_t> ids;
    ids.reserve(tokens->ids.size());
    for (size_t i = 0; i < tokens->ids.size(); ++i) {
      RETURN_IF_ERROR(CheckTokenId(tokenizer, absl::StrCat(field, "[", i, "]"), tokens->ids[i]));
      ids.push_back(static_cast<int32_t>(tokens->ids[i]));
    }
    return ids;
  }
  const auto& chat = std::get<ChatInput>(params.input);
  if (chat.messages.empty()) return InvalidField(field, "must not be empty");
  text::ChatOptions options;
  options.enable_thinking = chat.enable_thinking;
  options.tools = chat.tools;
  absl::StatusOr<text::RenderedPrompt> prompt =
      model.chat_template().Render(chat.messages, options);
  if (!prompt.ok()) return NameInputField(prompt.status(), field);
  return std::move(prompt->ids);
}

absl::StatusOr<Request> BuildRequest(GenerateParams params, const ServedModel& model,
                                     int64_t max_model_len, const RequestLimits& limits) {
  if (max_model_len <= 0) return absl::UnavailableError("the model is not loaded yet");
  RETURN_IF_ERROR(CheckSampling(params));
  RETURN_IF_ERROR(CheckStops(params, limits));
  for (size_t i = 0; i < params.stop_token_ids.size(); ++i) {
    RETURN_IF_ERROR(CheckTokenId(model.tokenizer(), "stop_token_ids", params.stop_token_ids[i]));
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt_ids, PromptIds(params, model));
  const int64_t prompt_len = static_cast<int64_t>(prompt_ids.size());
  if (prompt_len >= max_model_len) {
    return InvalidField(params.input_param,
                        absl::StrCat("the prompt has ", prompt_len, " tokens; the context holds ",
                                     max_model_len, " tokens, prompt and output together"));
  }
  const int64_t room = max_model_len - prompt_len;
  if (params.max_tokens && *params.max_tokens > room) {
    return InvalidField(params.max_tokens_param,
                        absl::StrCat(*params.max_tokens, " new tokens after a prompt of ",
                                     prompt_len, " tokens exceed the context of ", max_model_len,
                                     " tokens; at most ", room));
  }

  Request request;
  request.request_id = std::move(params.request_id);
  request.prompt_ids = std::move(prompt_ids);
  request.sampling = ResolveSampling(params, model.defaults());
  request.max_tokens =
      params.max_tokens.value_or(std::min(room, params.default_max_tokens.value_or(room)));
  request.stop_strings = std::move(params.stop);
  for (int64_t id : params.stop_token_ids) {
    request.stop_token_ids.push_back(static_cast<int32_t>(id));
  }
  if (std::holds_alternative<ChatInput>(params.input)) {
    request.stop_token_ids.push_back(model.turn_end_id());
  }
  request.ignore_eos = params.ignore_eos;
  request.prompt_logprobs = params.prompt_logprobs;
  request.deadline = params.deadline;
  return request;
}

}  // namespace gemmaserve::coordinator::api
