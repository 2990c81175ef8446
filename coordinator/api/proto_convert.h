// Conversions between the public gemmaserve.v1 messages and the API layer's types: a
// GenerateRequest (or TokenizeRequest) into GenerateParams, which BuildRequest then validates
// like any OpenAI request, and the engine's Events and LoadInfo back into messages.
// Errors name the proto field ("chat.messages[1].tool_calls[0].arguments_json: ...").
// Pure functions; thread-safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "coordinator/api/generate_params.h"
#include "coordinator/engine.h"
#include "coordinator/request.h"
#include "gemmaserve/v1/inference.pb.h"
#include "text/tokenizer.h"

namespace gemmaserve::coordinator::api {

absl::StatusOr<GenerateParams> ParamsFromProto(const v1::GenerateRequest& request);
// Only the input (text or chat, thinking, tools) of a TokenizeRequest.
absl::StatusOr<GenerateParams> ParamsFromProto(const v1::TokenizeRequest& request);

v1::FinishReason FinishReasonToProto(FinishReason reason);

// The delta of an event: new text, ids and logprobs (token strings from `tokenizer`).
v1::Delta DeltaFromEvent(const Event& event, const text::Tokenizer& tokenizer);
// The final message of a finished event. `chat_text` is the whole output text of a chat request
// (split into reasoning, content and tool calls), or nullptr for other inputs.
v1::Final FinalFromEvent(const Event& event, const std::string* chat_text,
                         const std::string& request_id);

v1::Load LoadToProto(const LoadInfo& load, bool ready);

}  // namespace gemmaserve::coordinator::api
