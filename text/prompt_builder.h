// PromptBuilder: the output side of ChatTemplate. It collects a prompt as a mix of structure
// tokens (appended as ids) and client text (buffered, then encoded with split_special_tokens so
// it can never become a structure token), and renders the template's tool syntax: declarations
// (format_function_declaration / format_parameters), call arguments and responses
// (format_argument), with <|"|> around strings. Keys are sorted case-insensitively as Jinja's
// dictsort does. The tool syntax recurses once per nesting level of the JSON it renders, which
// Render() has checked against kMaxJsonDepth. One builder per Render() call; not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace gemmaserve::text {

class PromptBuilder {
 public:
  PromptBuilder(const Tokenizer* tokenizer, int32_t quote_token);

  void Token(int32_t id);
  void Text(std::string_view text);

  // "declaration:NAME{description:...,parameters:{...}}" for one OpenAI-style tool.
  void Declaration(const nlohmann::json& tool);
  // "call:NAME{key:value,...}"
  void ToolCallBody(const ToolCall& call);
  // "response:NAME{key:value,...}" or "response:NAME{value:...}"
  void ToolResponseBody(const ToolResponse& response);

  // The prompt, or the first encoding error (text that is not valid UTF-8).
  absl::StatusOr<RenderedPrompt> Finish();

 private:
  void FlushText();
  void Quoted(std::string_view text);
  // format_argument: strings quoted, objects {k:v} with keys quoted when escape_keys.
  void Value(const nlohmann::json& value, bool escape_keys);
  void KeyValues(const nlohmann::json& object);  // k:v,... with bare keys
  void Parameters(const nlohmann::json& properties);
  void Parameter(const std::string& key, const nlohmann::json& value);
  void ArrayItems(const nlohmann::json& items);
  void QuotedList(const nlohmann::json& list);

  const Tokenizer* tokenizer_;
  int32_t quote_token_;
  RenderedPrompt prompt_;
  std::string pending_text_;  // text not yet encoded
  absl::Status status_;
};

}  // namespace gemmaserve::text
