#include "coordinator/api/chat_messages.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/api/api_error.h"
#include "coordinator/api/json_fields.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::coordinator::api {
namespace {

using Json = nlohmann::json;

// A tool result that is JSON, as JSON; any other text as a string. JSON beyond the limits is
// refused rather than passed as a string, so that the limits never change how a result renders.
absl::StatusOr<Json> ParseOrString(const std::string& text, const std::string& field) {
  absl::StatusOr<Json> value = ParseEmbeddedJson(text, field);
  if (value.ok() || Json::accept(text)) return value;
  return Json(text);
}

}  // namespace

absl::Status ChatMessagesBuilder::Add(MessageInput message, const std::string& field) {
  if (message.role == "tool") {
    std::string name = message.name;
    if (name.empty()) {
      auto it = tool_name_of_call_id_.find(message.tool_call_id);
      if (it == tool_name_of_call_id_.end()) {
        return InvalidField(absl::StrCat(field, ".tool_call_id"),
                            absl::StrCat("\"", message.tool_call_id,
                                         "\" answers no earlier tool call, and no name is given"));
      }
      name = it->second;
    }
    ASSIGN_OR_RETURN(Json response,
                     ParseOrString(message.content, absl::StrCat(field, ".content")));
    if (!last_is_tool_results_) messages_.push_back(text::ChatMessage{.role = "model"});
    messages_.back().tool_responses.push_back({std::move(name), std::move(response)});
    last_is_tool_results_ = true;
    return absl::OkStatus();
  }
  text::ChatMessage converted{.role = std::move(message.role),
                              .content = std::move(message.content)};
  for (size_t i = 0; i < message.tool_calls.size(); ++i) {
    ToolCallInput& call = message.tool_calls[i];
    const std::string call_field = absl::StrCat(field, ".tool_calls[", i, "]");
    if (converted.role != "assistant" && converted.role != "model") {
      return InvalidField(call_field, "only assistant messages carry tool calls");
    }
    if (call.name.empty()) {
      return InvalidField(absl::StrCat(call_field, ".function.name"), "must not be empty");
    }
    const std::string arguments_field = absl::StrCat(call_field, ".function.arguments");
    Json arguments = Json::object();
    if (!call.arguments_json.empty()) {
      ASSIGN_OR_RETURN(arguments, ParseEmbeddedJson(call.arguments_json, arguments_field));
    }
    if (!arguments.is_object()) {
      return InvalidField(arguments_field, "must be a JSON object as text");
    }
    if (!call.id.empty()) tool_name_of_call_id_[call.id] = call.name;
    converted.tool_calls.push_back({std::move(call.name), std::move(arguments)});
  }
  messages_.push_back(std::move(converted));
  last_is_tool_results_ = false;
  return absl::OkStatus();
}

}  // namespace gemmaserve::coordinator::api
