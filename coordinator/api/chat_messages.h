// ChatMessagesBuilder: turns a conversation in OpenAI's shape (roles system, developer, user,
// assistant, tool; tool calls with JSON-text arguments; tool results answering a tool_call_id)
// into the ChatMessages the Gemma 4 template renders. Both client APIs use it, so an OpenAI
// conversation and a gRPC ChatInput render the same prompt.
//
// Tool results: OpenAI sends each as its own "tool" message; Gemma 4 renders them inside a model
// turn. Consecutive tool messages therefore become one model ChatMessage carrying their
// responses; the function name comes from the message's `name` or from the earlier assistant
// tool call with the same id. A result that parses as JSON is passed as JSON, else as a string.
// JSON text (arguments, results) is parsed within kEmbeddedJsonLimits; beyond them the request is
// refused naming the field.
//
// One builder per request; not thread-safe.
#pragma once

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "text/chat_template.h"

namespace gemmaserve::coordinator::api {

struct ToolCallInput {
  std::string id;
  std::string name;
  std::string arguments_json;  // a JSON object as text; empty = {}
};

struct MessageInput {
  std::string role;
  std::string content;
  std::vector<ToolCallInput> tool_calls = {};  // role assistant
  std::string tool_call_id = {};          // role tool
  std::string name = {};                  // role tool
};

class ChatMessagesBuilder {
 public:
  // `field` names the message in errors, e.g. "messages[2]".
  absl::Status Add(MessageInput message, const std::string& field);
  std::vector<text::ChatMessage> Finish() { return std::move(messages_); }

 private:
  std::vector<text::ChatMessage> messages_;
  bool last_is_tool_results_ = false;
  absl::flat_hash_map<std::string, std::string> tool_name_of_call_id_;
};

}  // namespace gemmaserve::coordinator::api
