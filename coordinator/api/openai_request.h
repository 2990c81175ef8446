// Parsing OpenAI-compatible request bodies (/v1/completions, /v1/chat/completions) into
// GenerateParams, with the options that shape the HTTP response.
//
// Accepted, besides OpenAI's fields: vLLM's sampling extensions (top_k, min_p,
// repetition_penalty, ignore_eos, stop_token_ids) and chat_template_kwargs.enable_thinking.
// Refused with INVALID_ARGUMENT naming the field: malformed JSON, wrong types, n (or best_of)
// other than 1, a model other than the served one, a batch of several prompts, empty or
// malformed messages, non-text content parts, tool_choice other than "auto"/"none".
// Ranges are checked later, by BuildRequest. Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "coordinator/api/generate_params.h"

namespace gemmaserve::coordinator::api {

enum class OpenAiEndpoint { kCompletions, kChatCompletions };

struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  GenerateParams params;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions: return the prompt before the completion
};

// `model_name` is the served model's name; a request naming another model is refused (an absent
// model means the served one).
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, std::string_view body,
                                                 const std::string& model_name);

}  // namespace gemmaserve::coordinator::api
