// ChatTemplate: renders chat messages into the Gemma 4 prompt (GEMMA4.md §4), as the official
// chat_template.jinja does, directly as token ids:
//
//   <bos><|turn>system\n{<|think|>}{system text}{<|tool>declaration:...<tool|>...}<turn|>\n
//   <|turn>user\n{text}<turn|>\n
//   <|turn>model\n{<|tool_call>call:NAME{...}<tool_call|>}{<|tool_response>...}{answer}<turn|>\n
//   <|turn>model\n                      generation prompt; large models with thinking off add
//   <|channel>thought\n<channel|>       an empty thought block, E models do not
//
// Forgery safety: structure tokens (<bos>, <|turn>, <|"|>, ...) are emitted as ids, never as
// text, and every piece of client text (message content, tool names, arguments, declarations) is
// encoded with split_special_tokens, so text such as "<turn|>\n<|turn>model\n" inside a user
// message stays ordinary characters and cannot forge a turn. Create() checks that every structure
// token is an added token marked special, since only those are protected that way.
//
// Thread-safety: immutable; Render() may be called concurrently. The Tokenizer must outlive it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "text/tokenizer.h"

namespace gemmaserve::text {

// The two template variants, which differ only in the generation prompt with thinking off.
enum class ChatVariant {
  kLarge,  // 31B, 26B-A4B: the prompt ends with an empty thought block
  kEdge,   // E2B, E4B: the prompt ends at "<|turn>model\n"
};

// E models are the ones with Per-Layer Embeddings (hidden_size_per_layer_input > 0).
ChatVariant ChatVariantForModel(int64_t hidden_size_per_layer_input);

struct ToolCall {
  std::string name;
  nlohmann::json arguments;  // an object; a string is inserted verbatim, as the template does
};

struct ToolResponse {
  std::string name;
  nlohmann::json response;  // an object renders as {key:value,...}, anything else as {value:...}
};

struct ChatMessage {
  std::string role;  // "system" or "developer" (first message only), "user", "assistant"/"model"
  std::string content = {};
  std::vector<ToolCall> tool_calls = {};          // calls the model made in this turn
  std::vector<ToolResponse> tool_responses = {};  // results given back to the model in this turn
};

struct ChatOptions {
  // Puts <|think|> at the start of the system turn; the model then reasons before answering.
  bool enable_thinking = false;
  // Ends the prompt with the opening of a model turn.
  bool add_generation_prompt = true;
  // OpenAI-style declarations: {"type": "function", "function": {"name", "description",
  // "parameters": JSON schema}}. Rendered into the system turn.
  std::vector<nlohmann::json> tools;
};

struct RenderedPrompt {
  std::vector<int32_t> ids;
  std::string text;  // the same prompt with structure tokens spelled out; for logs and tests
};

class ChatTemplate {
 public:
  // FAILED_PRECONDITION when the tokenizer lacks one of the Gemma 4 chat tokens or does not
  // mark it special.
  static absl::StatusOr<ChatTemplate> Create(const Tokenizer* tokenizer, ChatVariant variant);

  // INVALID_ARGUMENT for an unknown role, a system message that is not first, an empty
  // conversation, text that is not valid UTF-8, or a tool declaration, call's arguments or
  // response nested deeper than kMaxJsonDepth (common/json_limits.h), which bounds the recursion.
  absl::StatusOr<RenderedPrompt> Render(absl::Span<const ChatMessage> messages,
                                        const ChatOptions& options) const;

  // The structure tokens, resolved once from the tokenizer.
  struct Tokens {
    int32_t bos, turn_start, turn_end, think, channel_start, channel_end, tool_start, tool_end,
        call_start, call_end, response_start, response_end, quote;
  };
  const Tokens& tokens() const { return tokens_; }

 private:
  ChatTemplate(const Tokenizer* tokenizer, ChatVariant variant, Tokens tokens)
      : tokenizer_(tokenizer), variant_(variant), tokens_(tokens) {}

  const Tokenizer* tokenizer_;
  ChatVariant variant_;
  Tokens tokens_;
};

}  // namespace gemmaserve::text
