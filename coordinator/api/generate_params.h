// GenerateParams: one generation request as a client API states it, before validation. The
// OpenAI JSON parser (openai_request.h) and the gRPC GenerateRequest converter (proto_convert.h)
// both fill this struct, so range checks, tokenization and defaults live in one place:
// BuildRequest validates it and turns it into the engine's coordinator::Request.
//
// Field names in errors are the API's names (`param_names`), so an OpenAI client reads
// "max_completion_tokens" when that is the field it sent.
// Plain data and pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/api/served_model.h"
#include "coordinator/request.h"
#include "nlohmann/json.hpp"
#include "text/chat_template.h"

namespace gemmaserve::coordinator::api {

// A raw prompt: encoded with <bos>, special-token text recognised.
struct TextInput {
  std::string text;
};
// Prompt ids used as given.
struct TokenInput {
  std::vector<int64_t> ids;
};
// A conversation for the chat template.
struct ChatInput {
  std::vector<text::ChatMessage> messages;
  std::vector<nlohmann::json> tools;  // OpenAI function declarations
  bool enable_thinking = false;
};

struct GenerateParams {
  std::string request_id;  // empty: BuildRequest's caller must have generated one
  std::variant<TextInput, TokenInput, ChatInput> input;
  // Where the input came from, for error messages: "prompt", "messages", "text", "chat", ...
  std::string input_param = "prompt";

  std::optional<double> temperature;
  std::optional<int64_t> top_k;
  std::optional<double> top_p;
  std::optional<double> min_p;
  std::optional<uint64_t> seed;
  std::optional<double> repetition_penalty;
  std::optional<double> presence_penalty;
  std::optional<double> frequency_penalty;
  std::optional<int64_t> max_tokens;
  std::string max_tokens_param = "max_tokens";  // or "max_completion_tokens"
  // Unset max_tokens: this many, capped by the context; nullopt = fill the context.
  std::optional<int64_t> default_max_tokens;
  std::vector<std::string> stop;
  std::vector<int64_t> stop_token_ids;
  bool ignore_eos = false;
  bool logprobs = false;
  int64_t top_logprobs = 0;
  std::string top_logprobs_param = "top_logprobs";  // or "logprobs" (OpenAI completions)
  bool prompt_logprobs = false;
  absl::Time deadline = absl::InfiniteFuture();
};

inline constexpr int64_t kMaxTopLogprobs = 20;

// Bounds on what one request may ask of the engine beyond the context length (serve's flags).
// Every stop string is searched for in the held-back text after each token, so their number and
// length bound the engine thread's work per token of one request.
struct RequestLimits {
  int64_t max_stop_strings = 64;        // also the most stop_token_ids
  int64_t max_stop_string_bytes = 256;  // UTF-8 bytes of one stop string
};

// Validates `params` and tokenizes its input. INVALID_ARGUMENT (InvalidField) naming the field
// for: a value out of range, more stop strings or stop ids than `limits` allow, a stop string
// longer than they allow or not valid UTF-8, message text that is not valid UTF-8, a token id
// outside the vocabulary, an empty prompt or conversation, or a prompt (plus max_tokens, when
// given) longer than `max_model_len`. Chat input stops on the end-of-turn token as well.
absl::StatusOr<Request> BuildRequest(GenerateParams params, const ServedModel& model,
                                     int64_t max_model_len, const RequestLimits& limits = {});

// The prompt ids of an input, as BuildRequest computes them (for Tokenize).
absl::StatusOr<std::vector<int32_t>> PromptIds(const GenerateParams& params,
                                               const ServedModel& model);

}  // namespace gemmaserve::coordinator::api
