#include "text/chat_template.h"

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/status_macros.h"
#include "text/chat_markers.h"
#include "text/prompt_builder.h"

namespace gemmaserve::text {
namespace {

using Json = nlohmann::json;

// Jinja's `| trim` (Python str.strip); ASCII whitespace only.
std::string Trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return std::string();
  return std::string(text.substr(begin, text.find_last_not_of(kSpace) + 1 - begin));
}

// The template's strip_thinking: drops every "<|channel>...<channel|>" block, then trims.
std::string StripThinking(std::string_view text) {
  std::string result;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(marker::kChannelEnd, start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view part = text.substr(start, end - start);
    result.append(part.substr(0, part.find(marker::kChannelStart)));
    start = end + marker::kChannelEnd.size();
  }
  return Trim(result);
}

// The index of the first message after the system/developer one, after checking the roles.
absl::StatusOr<size_t> CheckRoles(absl::Span<const ChatMessage> messages) {
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role == "user" || role == "assistant" || role == "model") continue;
    if ((role == "system" || role == "developer") && i == 0) continue;
    if (role == "system" || role == "developer") {
      return absl::InvalidArgumentError(
          absl::StrCat("messages[", i, "]: a ", role, " message must come first"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "messages[", i, "]: role \"", role,
        "\" is not one of system, developer, user, assistant, model"));
  }
  return !messages.empty() && (messages[0].role == "system" || messages[0].role == "developer")
             ? 1
             : 0;
}

// The renderer walks tool declarations, arguments and responses recursively, one level per
// nesting level; values deeper than kMaxJsonDepth are refused before the walk.
absl::Status CheckJsonDepths(absl::Span<const ChatMessage> messages, const ChatOptions& options) {
  const auto check = [](const Json& value, const auto&... field) {
    if (JsonDepth(value) <= kMaxJsonDepth) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(field..., ": nested deeper than ", kMaxJsonDepth, " levels"));
  };
  for (size_t i = 0; i < options.tools.size(); ++i) {
    RETURN_IF_ERROR(check(options.tools[i], "tools[", i, "]"));
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    for (size_t j = 0; j < messages[i].tool_calls.size(); ++j) {
      RETURN_IF_ERROR(check(messages[i].tool_calls[j].arguments, "messages[", i, "].tool_calls[",
                            j, "].arguments"));
    }
    for (size_t j = 0; j < messages[i].tool_responses.size(); ++j) {
      RETURN_IF_ERROR(check(messages[i].tool_responses[j].response, "messages[", i,
                            "].tool_responses[", j, "].response"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> SpecialTokenId(const Tokenizer& tokenizer, std::string_view name) {
  const std::optional<int32_t> id = tokenizer.TokenToId(name);
  if (!id) {
    return absl::FailedPreconditionError(
        absl::StrCat("the tokenizer has no ", std::string(name),
                     " token; it is not a Gemma 4 tokenizer"));
  }
  if (!tokenizer.IsSpecial(*id)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the tokenizer does not mark ", std::string(name), " (id ", *id,
        ") as a special added token, so user text could forge it"));
  }
  return *id;
}

}  // namespace

ChatVariant ChatVariantForModel(int64_t hidden_size_per_layer_input) {
  return hidden_size_per_layer_input > 0 ? ChatVariant::kEdge : ChatVariant::kLarge;
}

absl::StatusOr<ChatTemplate> ChatTemplate::Create(const Tokenizer* tokenizer,
                                                  ChatVariant variant) {
  Tokens t;
  const std::pair<int32_t*, std::string_view> wanted[] = {
      {&t.bos, marker::kBos},
      {&t.turn_start, marker::kTurnStart},
      {&t.turn_end, marker::kTurnEnd},
      {&t.think, marker::kThink},
      {&t.channel_start, marker::kChannelStart},
      {&t.channel_end, marker::kChannelEnd},
      {&t.tool_start, marker::kToolStart},
      {&t.tool_end, marker::kToolEnd},
      {&t.call_start, marker::kToolCallStart},
      {&t.call_end, marker::kToolCallEnd},
      {&t.response_start, marker::kToolResponseStart},
      {&t.response_end, marker::kToolResponseEnd},
      {&t.quote, marker::kQuote},
  };
  for (const auto& [id, name] : wanted) {
    ASSIGN_OR_RETURN(*id, SpecialTokenId(*tokenizer, name));
  }
  return ChatTemplate(tokenizer, variant, t);
}

absl::StatusOr<RenderedPrompt> ChatTemplate::Render(absl::Span<const ChatMessage> messages,
                                                    const ChatOptions& options) const {
  if (messages.empty()) return absl::InvalidArgumentError("messages: the conversation is empty");
  ASSIGN_OR_RETURN(const size_t first_turn, CheckRoles(messages));
  RETURN_IF_ERROR(CheckJsonDepths(messages, options));
  PromptBuilder prompt(tokenizer_, tokens_.quote);
  prompt.Token(tokens_.bos);
  if (options.enable_thinking || !options.tools.empty() || first_turn == 1) {
    prompt.Token(tokens_.turn_start);
    prompt.Text("system\n");
    if (options.enable_thinking) prompt.Token(tokens_.think);
    if (first_turn == 1) prompt.Text(Trim(messages[0].content));
    for (const Json& tool : options.tools) {
      prompt.Token(tokens_.tool_start);
      prompt.Declaration(tool);
      prompt.Token(tokens_.tool_end);
    }
    prompt.Token(tokens_.turn_end);
    prompt.Text("\n");
  }
  for (size_t i = first_turn; i < messages.size(); ++i) {
    const ChatMessage& message = messages[i];
    const bool is_model = message.role == "assistant" || message.role == "model";
    prompt.Token(tokens_.turn_start);
    prompt.Text(is_model ? "model\n" : message.role + "\n");
    for (const ToolCall& call : message.tool_calls) {
      prompt.Token(tokens_.call_start);
      prompt.ToolCallBody(call);
      prompt.Token(tokens_.call_end);
    }
    for (const ToolResponse& response : message.tool_responses) {
      prompt.Token(tokens_.response_start);
      prompt.ToolResponseBody(response);
      prompt.Token(tokens_.response_end);
    }
    prompt.Text(is_model ? StripThinking(message.content) : Trim(message.content));
    // A turn that only hands back tool results stays open: the model continues in it.
    if (message.tool_responses.empty() || !message.content.empty()) {
      prompt.Token(tokens_.turn_end);
      prompt.Text("\n");
    }
  }
  if (options.add_generation_prompt) {
    if (first_turn == messages.size() || messages.back().tool_responses.empty()) {
      prompt.Token(tokens_.turn_start);
      prompt.Text("model\n");
    }
    if (!options.enable_thinking && variant_ == ChatVariant::kLarge) {
      prompt.Token(tokens_.channel_start);
      prompt.Text(marker::kThought);
      prompt.Token(tokens_.channel_end);
    }
  }
  return prompt.Finish();
}

}  // namespace gemmaserve::text
